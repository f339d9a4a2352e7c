"""L_sup and L_dist against hand-computed values and a naive loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from soundsift.losses import contrastive_loss, distillation_loss, positives_from_ids


# ------------------------------------------------------------------------------- naive reference
def _log_softmax_list(values: list[float]) -> list[float]:
    m = max(values)
    lse = m + math.log(sum(math.exp(v - m) for v in values))
    return [v - lse for v in values]


def naive_two_way(sim, target_a, target_c, tau) -> float:
    """0.5 * (mean_j H(target_a[:, j], q_a[:, j]) + mean_i H(target_c[i, :], q_c[i, :])), plain Python."""
    n_a, n_c = len(sim), len(sim[0])
    h_a = []
    for j in range(n_c):
        log_q = _log_softmax_list([sim[i][j] / tau for i in range(n_a)])
        h_a.append(-sum(target_a[i][j] * log_q[i] for i in range(n_a)))
    h_c = []
    for i in range(n_a):
        log_q = _log_softmax_list([sim[i][j] / tau for j in range(n_c)])
        h_c.append(-sum(target_c[i][j] * log_q[j] for j in range(n_c)))
    return 0.5 * (sum(h_a) / n_c + sum(h_c) / n_a)


def naive_contrastive(sim, pos, tau) -> float:
    n_a, n_c = len(sim), len(sim[0])
    col = [sum(pos[i][j] for i in range(n_a)) for j in range(n_c)]
    row = [sum(pos[i][j] for j in range(n_c)) for i in range(n_a)]
    target_a = [[pos[i][j] / col[j] for j in range(n_c)] for i in range(n_a)]
    target_c = [[pos[i][j] / row[i] for j in range(n_c)] for i in range(n_a)]
    return naive_two_way(sim, target_a, target_c, tau)


def naive_distillation(sim, teacher, tau) -> float:
    n_a, n_c = len(sim), len(sim[0])
    target_a = [[0.0] * n_c for _ in range(n_a)]
    target_c = [[0.0] * n_c for _ in range(n_a)]
    for j in range(n_c):
        logp = _log_softmax_list([teacher[i][j] / tau for i in range(n_a)])
        for i in range(n_a):
            target_a[i][j] = math.exp(logp[i])
    for i in range(n_a):
        logp = _log_softmax_list([teacher[i][j] / tau for j in range(n_c)])
        for j in range(n_c):
            target_c[i][j] = math.exp(logp[j])
    return naive_two_way(sim, target_a, target_c, tau)


def random_positives(n_a: int, n_c: int, gen: torch.Generator) -> torch.Tensor:
    """Random bool matrix with at least one True in every row and column."""
    pos = torch.rand(n_a, n_c, generator=gen) < 0.2
    pos[torch.arange(n_a), torch.randint(n_c, (n_a,), generator=gen)] = True
    pos[torch.randint(n_a, (n_c,), generator=gen), torch.arange(n_c)] = True
    return pos


SHAPES = [(1, 1), (2, 3), (5, 5), (9, 4), (3, 12)]


# --------------------------------------------------------------------------------- hand-computed
def test_hand_computed_identity_2x2():
    # C = [[1, 0], [0, 1]], tau = 1, positives = identity. Every column and row softmax is
    # softmax([1, 0]) or softmax([0, 1]); the positive has log q = 1 - log(e + 1) = -log(1 + e^-1).
    # So every H is log(1 + e^-1) = 0.31326..., and so is the loss.
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = contrastive_loss(sim, torch.eye(2, dtype=torch.bool), tau=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)


def test_hand_computed_duplicate_audio_2x2():
    # A batch of 2 pairs with the same audio: every entry is positive, targets are [0.5, 0.5].
    # H = -0.5 * (log q(1) + log q(0)) = -0.5 * ((1 - L) + (0 - L)) = L - 0.5 with L = log(e + 1).
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = positives_from_ids(torch.tensor([7, 7]), torch.tensor([7, 7]))
    assert pos.all()
    loss = contrastive_loss(sim, pos, tau=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 0.5, abs=1e-6)


def test_hand_computed_distillation_uniform_teacher():
    # Teacher all equal -> targets uniform (1/2); student C = [[1, 0], [0, 1]], tau = 1: same as above.
    sim = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = distillation_loss(sim, torch.zeros(2, 2), tau=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 0.5, abs=1e-6)


# ------------------------------------------------------------------------------ naive references
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [0.05, 0.7])
def test_contrastive_matches_naive(shape, tau):
    gen = torch.Generator().manual_seed(hash(shape) % 1000)
    sim = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    pos = random_positives(*shape, gen)
    expected = naive_contrastive(sim.tolist(), pos.double().tolist(), tau)
    assert contrastive_loss(sim, pos, tau).item() == pytest.approx(expected, rel=1e-10, abs=1e-10)
    # float32 input: computed in float32, close to the float64 value
    assert contrastive_loss(sim.float(), pos, tau).item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", [0.05, 0.3])
def test_distillation_matches_naive(shape, tau):
    gen = torch.Generator().manual_seed(1 + hash(shape) % 1000)
    sim = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    teacher = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    expected = naive_distillation(sim.tolist(), teacher.tolist(), tau)
    assert distillation_loss(sim, teacher, tau).item() == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_identity_positives_is_cross_entropy_average():
    # With identity positives L_sup is the mean of torch's cross_entropy over columns and rows.
    gen = torch.Generator().manual_seed(3)
    sim = torch.randn(6, 6, generator=gen)
    labels = torch.arange(6)
    ref = 0.5 * (
        torch.nn.functional.cross_entropy(sim.T / 0.05, labels)
        + torch.nn.functional.cross_entropy(sim / 0.05, labels)
    )
    got = contrastive_loss(sim, torch.eye(6, dtype=torch.bool))
    torch.testing.assert_close(got, ref)


def test_peaked_teacher_reduces_to_contrastive():
    gen = torch.Generator().manual_seed(4)
    sim = torch.rand(5, 5, generator=gen) * 2 - 1
    teacher = torch.eye(5) * 20.0  # logits 400 apart at tau = 0.05: targets are one-hot
    torch.testing.assert_close(
        distillation_loss(sim, teacher), contrastive_loss(sim, torch.eye(5, dtype=torch.bool))
    )


# ---------------------------------------------------------------------------------------- gradients
def test_gradcheck_contrastive():
    gen = torch.Generator().manual_seed(5)
    sim = (torch.rand(4, 6, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    pos = random_positives(4, 6, gen)
    assert torch.autograd.gradcheck(lambda s: contrastive_loss(s, pos, tau=0.1), (sim,))


def test_gradcheck_distillation_and_teacher_gets_no_gradient():
    gen = torch.Generator().manual_seed(6)
    sim = (torch.rand(5, 3, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    teacher = (torch.rand(5, 3, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: distillation_loss(s, teacher, tau=0.1), (sim,))
    distillation_loss(sim, teacher).backward()
    assert teacher.grad is None
    assert sim.grad is not None and torch.isfinite(sim.grad).all()


def test_distillation_gradient_vanishes_when_student_equals_teacher():
    # d H(p, softmax(z)) / dz = softmax(z) - p, which is 0 when the student's logits equal the targets'.
    sim = (torch.rand(6, 6, dtype=torch.float64) * 2 - 1).requires_grad_()
    distillation_loss(sim, sim.detach().clone()).backward()
    torch.testing.assert_close(sim.grad, torch.zeros_like(sim), atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------ numerical stability
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_extreme_similarities_large_batch_finite(dtype):
    gen = torch.Generator().manual_seed(7)
    n = 1024
    sim = torch.where(torch.rand(n, n, generator=gen) < 0.5, -1.0, 1.0).to(dtype).requires_grad_()
    pos = torch.eye(n, dtype=torch.bool)
    teacher = torch.where(torch.rand(n, n, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
    for loss in (contrastive_loss(sim, pos), distillation_loss(sim, teacher)):
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, sim)
        assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_close_to_float32(dtype):
    gen = torch.Generator().manual_seed(8)
    sim = torch.rand(64, 64, generator=gen) * 2 - 1
    teacher = torch.rand(64, 64, generator=gen) * 2 - 1
    pos = torch.eye(64, dtype=torch.bool)
    ref_sup, ref_dist = contrastive_loss(sim, pos), distillation_loss(sim, teacher)
    low_sup, low_dist = (
        contrastive_loss(sim.to(dtype), pos),
        distillation_loss(sim.to(dtype), teacher.to(dtype)),
    )
    # the only error is rounding the input (bf16: 2^-8 relative, i.e. up to 0.08 in a logit at tau 0.05)
    tol = 0.02 if dtype == torch.float16 else 0.1
    assert abs(low_sup.item() - ref_sup.item()) < tol * max(1.0, ref_sup.item())
    assert abs(low_dist.item() - ref_dist.item()) < tol * max(1.0, ref_dist.item())
    # and it is exactly the float32 loss of the rounded input
    assert contrastive_loss(sim.to(dtype).float(), pos).item() == low_sup.item()


def test_autocast_bfloat16_cpu():
    gen = torch.Generator().manual_seed(9)
    audio = torch.nn.functional.normalize(torch.randn(32, 16, generator=gen), dim=1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(32, 16, generator=gen), dim=1)
    pos = torch.eye(32, dtype=torch.bool)
    ref = contrastive_loss(audio @ text.T, pos)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sim = audio @ text.T
        assert sim.dtype == torch.bfloat16  # autocast is really active
        loss = contrastive_loss(sim, pos)
        dist = distillation_loss(sim, sim.detach())
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(dist)
    assert loss.item() == pytest.approx(ref.item(), rel=0.05)
    loss.backward()
    assert torch.isfinite(audio.grad).all()


# ------------------------------------------------------------------------------- positives helper
def test_positives_from_ids_tensor_and_strings():
    ids = torch.tensor([3, 1, 3, 2])
    pos = positives_from_ids(ids, ids)
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(pos, expected)
    names = ["a.wav", "b.wav", "a.wav", "c.wav"]
    assert torch.equal(positives_from_ids(names, names), expected)
    rect = positives_from_ids(["x", "y"], ["y", "y", "x"])
    assert rect.tolist() == [[False, False, True], [True, True, False]]


def test_duplicate_audio_batch_matches_naive():
    gen = torch.Generator().manual_seed(10)
    ids = torch.tensor([0, 1, 0, 2, 1, 0])
    pos = positives_from_ids(ids, ids)
    sim = torch.rand(6, 6, generator=gen, dtype=torch.float64) * 2 - 1
    expected = naive_contrastive(sim.tolist(), pos.double().tolist(), 0.05)
    assert contrastive_loss(sim, pos).item() == pytest.approx(expected, rel=1e-10)


# ------------------------------------------------------------------------------------------ errors
def test_missing_positive_raises():
    pos = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match=r"rows without a positive caption: \[1\]"):
        contrastive_loss(torch.zeros(2, 2), pos)
    pos = torch.tensor([[True, False, False], [False, True, False]])
    with pytest.raises(ValueError, match=r"columns without a positive audio: \[2\]"):
        contrastive_loss(torch.zeros(2, 3), pos)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_tau_raises(tau):
    with pytest.raises(ValueError, match="tau"):
        contrastive_loss(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool), tau=tau)
    with pytest.raises(ValueError, match="tau"):
        distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), tau=tau)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="must match"):
        contrastive_loss(torch.zeros(2, 2), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="must match"):
        distillation_loss(torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2-D"):
        contrastive_loss(torch.zeros(4), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        distillation_loss(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(TypeError, match="floating"):
        distillation_loss(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2))
