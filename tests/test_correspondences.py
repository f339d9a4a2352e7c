"""Teacher embedding store, ensemble similarity C_hat and correspondence AUC."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from soundsift.correspondences import (
    TeacherEmbeddings,
    TeacherEnsemble,
    correspondence_auc,
    ensemble_similarity,
)
from soundsift.errors import AlignmentError, TeacherFileError
from soundsift.losses import distillation_loss

CLIPS = ["dog 1.wav", "rain, heavy.wav", "ünïcode.flac", "x.wav"]
CAPTIONS = [
    'a dog barks, then "stops"',
    "a dog",
    "rain falls",
    "heavy rain",
    "birds chirp",
    "é",
    "",
    "noise",
]
CAPTION_CLIP = [0, 0, 1, 1, 2, 2, 3, 3]


def make_teacher(seed: int, dim: int = 6, **kwargs) -> TeacherEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    return TeacherEmbeddings(
        clip_ids=list(CLIPS),
        audio=torch.randn(len(CLIPS), dim, generator=gen),
        caption_texts=list(CAPTIONS),
        caption_clip=torch.tensor(CAPTION_CLIP),
        captions=torch.randn(len(CAPTIONS), dim, generator=gen),
        meta={"model": f"tiny-{seed}", "checkpoint": f"/ckpt/{seed}.ckpt"},
        **kwargs,
    )


def naive_cosine_mean(audios, captions) -> np.ndarray:
    out = np.zeros((audios[0].shape[0], captions[0].shape[0]))
    for a, c in zip(audios, captions):
        a, c = a.double().numpy(), c.double().numpy()
        for i in range(a.shape[0]):
            for j in range(c.shape[0]):
                out[i, j] += a[i] @ c[j] / (np.linalg.norm(a[i]) * np.linalg.norm(c[j]))
    return out / len(audios)


# ------------------------------------------------------------------------------------ ensemble math
def test_ensemble_similarity_matches_naive_with_different_dims():
    gen = torch.Generator().manual_seed(0)
    audios = [torch.randn(5, 4, generator=gen), torch.randn(5, 9, generator=gen) * 7]
    captions = [torch.randn(3, 4, generator=gen), torch.randn(3, 9, generator=gen)]
    got = ensemble_similarity(audios, captions)
    assert got.shape == (5, 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), naive_cosine_mean(audios, captions), atol=1e-6)
    half = ensemble_similarity([a.half() for a in audios], [c.bfloat16() for c in captions])
    assert half.dtype == torch.float32
    np.testing.assert_allclose(half.numpy(), got.numpy(), atol=2e-2)


def test_ensemble_similarity_errors():
    with pytest.raises(ValueError, match="at least one teacher"):
        ensemble_similarity([], [])
    with pytest.raises(ValueError, match="teacher 1 gives"):
        ensemble_similarity([torch.ones(2, 3), torch.ones(3, 3)], [torch.ones(4, 3), torch.ones(4, 3)])
    with pytest.raises(ValueError, match="teacher 0"):
        ensemble_similarity([torch.ones(2, 3)], [torch.ones(4, 5)])


def test_ensemble_of_one_equals_single_teacher():
    t = make_teacher(1)
    ens = TeacherEnsemble([t])
    np.testing.assert_allclose(
        ens.full_similarity().numpy(), naive_cosine_mean([t.audio], [t.captions]), atol=1e-6
    )
    torch.testing.assert_close(ens.full_similarity(), t.similarity())


def test_ensemble_of_three_is_mean():
    teachers = [make_teacher(s, dim=d) for s, d in ((1, 6), (2, 3), (3, 8))]
    expected = sum(t.similarity() for t in teachers) / 3
    torch.testing.assert_close(TeacherEnsemble(teachers).full_similarity(), expected)


def test_batch_similarity_is_block_of_full():
    ens = TeacherEnsemble([make_teacher(1), make_teacher(2, dim=4)])
    full = ens.full_similarity()
    caption_index = torch.tensor([5, 0, 1, 7, 3])
    clip_index = ens.caption_clip[caption_index]  # a batch of (audio, caption) pairs; clip 0 twice
    batch = ens.batch_similarity(clip_index, caption_index, device="cpu")
    assert batch.shape == (5, 5)
    torch.testing.assert_close(batch, full[clip_index][:, caption_index])
    torch.testing.assert_close(batch[1], batch[2])  # the same audio gives the same row
    # the batch is directly usable as distillation target
    student = torch.rand(5, 5, requires_grad=True)
    distillation_loss(student, batch).backward()
    assert torch.isfinite(student.grad).all()
    with pytest.raises(ValueError, match="clip_index has values outside"):
        ens.batch_similarity(torch.tensor([4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        ens.batch_similarity(torch.tensor([0.0]), torch.tensor([0]))


# ------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    t = make_teacher(3)
    path = t.save(tmp_path / "teachers" / "tiny.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.safetensors"]  # no temp file left
    back = TeacherEmbeddings.load(path)
    assert back.clip_ids == CLIPS and back.caption_texts == CAPTIONS
    assert back.caption_clip.tolist() == CAPTION_CLIP
    assert torch.equal(back.audio, t.audio) and torch.equal(back.captions, t.captions)
    assert back.meta["model"] == "tiny-3" and back.meta["checkpoint"] == "/ckpt/3.ckpt"
    assert "created" in back.meta and back.meta["soundsift_version"]
    assert back.source == str(path)
    torch.testing.assert_close(back.audio.norm(dim=1), torch.ones(len(CLIPS)))


def test_save_float16_halves_size(tmp_path):
    t = make_teacher(4, dim=256)
    full = t.save(tmp_path / "f32.safetensors")
    half = t.save(tmp_path / "f16.safetensors", dtype=torch.float16)
    back = TeacherEmbeddings.load(half)
    assert back.audio.dtype == torch.float16
    assert half.stat().st_size < 0.6 * full.stat().st_size
    sim = back.similarity()
    assert sim.dtype == torch.float32
    torch.testing.assert_close(sim, t.similarity(), atol=2e-3, rtol=0)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TeacherFileError, match="nope.safetensors"):
        TeacherEmbeddings.load(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not safetensors")
    with pytest.raises(TeacherFileError, match="garbage.safetensors.*not a readable"):
        TeacherEmbeddings.load(garbage)

    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(TeacherFileError, match="other.safetensors: not a soundsift"):
        TeacherEmbeddings.load(other)

    path = make_teacher(5).save(tmp_path / "t.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata={**header, "format_version": "99"})
    with pytest.raises(TeacherFileError, match="new.safetensors: format version 99"):
        TeacherEmbeddings.load(tmp_path / "new.safetensors")
    tensors["audio"] = tensors["audio"][:2]
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=header)
    with pytest.raises(TeacherFileError, match=r"short.safetensors: audio must be a float \(4, D\)"):
        TeacherEmbeddings.load(tmp_path / "short.safetensors")
    assert json.loads(header["meta"])["model"] == "tiny-5"


def test_constructor_validation():
    with pytest.raises(TeacherFileError, match="caption_clip\\[1\\] = 9"):
        TeacherEmbeddings(["a"], torch.ones(1, 2), ["x", "y"], torch.tensor([0, 9]), torch.ones(2, 2))
    with pytest.raises(TeacherFileError, match="audio dim 2 != caption dim 3"):
        TeacherEmbeddings(["a"], torch.ones(1, 2), ["x"], torch.tensor([0]), torch.ones(1, 3))
    bad = torch.ones(2, 2)
    bad[1, 0] = math.nan
    with pytest.raises(TeacherFileError, match="captions row 1 contains NaN"):
        TeacherEmbeddings(["a"], torch.ones(1, 2), ["x", "y"], torch.tensor([0, 0]), bad)
    t = TeacherEmbeddings(["a"], torch.tensor([[3.0, 4.0]]), ["x"], [0], torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(t.audio, torch.tensor([[0.6, 0.8]]))  # normalised on construction
    assert t.similarity().item() == pytest.approx(0.8)


# ------------------------------------------------------------------------------------- alignment
def test_check_alignment(tmp_path):
    t = TeacherEmbeddings.load(make_teacher(6).save(tmp_path / "teacher6.safetensors"))
    t.check_alignment(CLIPS, CAPTIONS, CAPTION_CLIP)  # the same split: no error
    shuffled = list(CAPTIONS)
    shuffled[2], shuffled[3] = shuffled[3], shuffled[2]
    with pytest.raises(AlignmentError, match=r"teacher6.safetensors.*caption_texts: index 2 differs"):
        t.check_alignment(CLIPS, shuffled)
    with pytest.raises(AlignmentError, match="clip_ids: the teacher has 4 entries, the split has 5"):
        t.check_alignment(CLIPS + ["extra.wav"], CAPTIONS)
    with pytest.raises(AlignmentError, match="caption_clip: index 7 differs"):
        t.check_alignment(CLIPS, CAPTIONS, CAPTION_CLIP[:7] + [2])


def test_ensemble_rejects_misaligned_teachers():
    a = make_teacher(7)
    b = make_teacher(8)
    b.clip_ids = list(reversed(CLIPS))
    with pytest.raises(AlignmentError, match="clip_ids: index 0 differs"):
        TeacherEnsemble([a, b])
    with pytest.raises(ValueError, match="at least one teacher"):
        TeacherEnsemble([])


# -------------------------------------------------------------------------------------------- AUC
def naive_auc(scores, truth) -> float:
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("decimals", [None, 1])
def test_auc_matches_naive(decimals):
    gen = torch.Generator().manual_seed(9)
    sim = torch.rand(8, 11, generator=gen)
    if decimals is not None:
        sim = torch.round(sim * 10) / 10
    holds = torch.rand(8, 11, generator=gen) < 0.3
    expected = naive_auc(sim.flatten().tolist(), holds.flatten().tolist())
    assert correspondence_auc(sim, holds) == pytest.approx(expected, rel=1e-12)


def test_auc_extremes_and_errors():
    holds = torch.eye(4, dtype=torch.bool)
    assert correspondence_auc(torch.eye(4), holds) == 1.0
    assert correspondence_auc(-torch.eye(4), holds) == 0.0
    assert correspondence_auc(torch.zeros(4, 4), holds) == 0.5
    with pytest.raises(ValueError, match="true and false"):
        correspondence_auc(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        correspondence_auc(torch.full((2, 2), math.nan), holds[:2, :2])
