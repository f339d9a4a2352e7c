"""Training losses as pure functions of similarity matrices (paper section 2 and 3).

A similarity matrix is always laid out ``(n_audio, n_caption)``: ``C[i, j]`` is the cosine similarity of
audio ``i`` and caption ``j``. With temperature ``tau``

- ``q_a(a_i | c_j)`` is the softmax of ``C[:, j] / tau`` over audios (a column softmax),
- ``q_c(c_j | a_i)`` is the softmax of ``C[i, :] / tau`` over captions (a row softmax),

and both losses are ``0.5 * (mean over captions of H(p_a, q_a) + mean over audios of H(p_c, q_c))`` with
``H(p, q) = -sum p log q``; they differ only in the targets ``p``. The 0.5 keeps the loss on the scale of a
single cross-entropy (the paper writes the plain sum; the factor only rescales the learning rate).

Everything is computed in (at least) float32 with ``log_softmax``, so float16/bfloat16 inputs and
``torch.autocast`` regions give finite losses even at ``tau = 0.05`` with similarities of +/-1.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["contrastive_loss", "distillation_loss", "positives_from_ids", "window_distillation_loss"]


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not tau > 0 or tau == float("inf"):
        raise ValueError(f"tau must be a finite number > 0, got {tau}")
    return tau


def _as_float(similarity: Tensor, name: str) -> Tensor:
    """Return ``similarity`` as a 2-D floating tensor of at least float32 precision."""
    if not isinstance(similarity, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(similarity).__name__}")
    if similarity.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (n_audio, n_caption) matrix, got shape {tuple(similarity.shape)}"
        )
    if similarity.shape[0] == 0 or similarity.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(similarity.shape)})")
    if not similarity.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {similarity.dtype}")
    return similarity.to(torch.promote_types(similarity.dtype, torch.float32))


def _two_way_cross_entropy(logits: Tensor, target_a: Tensor, target_c: Tensor) -> Tensor:
    """0.5 * (mean_j H(target_a[:, j], q_a[:, j]) + mean_i H(target_c[i], q_c[i]))."""
    log_q_a = torch.log_softmax(logits, dim=0)  # over audios, for each caption (column)
    log_q_c = torch.log_softmax(logits, dim=1)  # over captions, for each audio (row)
    h_a = -(target_a * log_q_a).sum(dim=0)  # (n_caption,)
    h_c = -(target_c * log_q_c).sum(dim=1)  # (n_audio,)
    return 0.5 * (h_a.mean() + h_c.mean())


def contrastive_loss(similarity: Tensor, positives: Tensor, tau: float = 0.05) -> Tensor:
    """Stage-1 loss ``L_sup``: cross-entropy of the softmaxes against the known pairs.

    ``positives[i, j]`` is True when audio ``i`` matches caption ``j``. The target of each column
    (caption) is uniform over its positive audios, the target of each row (audio) uniform over its
    positive captions, so a batch in which the same audio appears twice is handled exactly.
    Every row and every column needs at least one positive (otherwise its target is undefined).
    """
    tau = _check_tau(tau)
    sim = _as_float(similarity, "similarity")
    if not isinstance(positives, Tensor):
        positives = torch.as_tensor(positives)
    if positives.shape != similarity.shape:
        raise ValueError(
            f"positives has shape {tuple(positives.shape)}, similarity has {tuple(similarity.shape)}; "
            "they must match"
        )
    pos = positives.to(device=sim.device, dtype=torch.bool)
    weight = pos.to(sim.dtype)
    per_caption = weight.sum(dim=0)
    per_audio = weight.sum(dim=1)
    if bool((per_caption == 0).any() | (per_audio == 0).any()):  # one host sync, then details
        empty_cols = (per_caption == 0).nonzero().flatten()
        empty_rows = (per_audio == 0).nonzero().flatten()
        parts = []
        if empty_rows.numel():
            parts.append(f"audio rows without a positive caption: {empty_rows[:10].tolist()}")
        if empty_cols.numel():
            parts.append(f"caption columns without a positive audio: {empty_cols[:10].tolist()}")
        raise ValueError("contrastive_loss needs a positive in every row and column; " + "; ".join(parts))
    return _two_way_cross_entropy(sim / tau, weight / per_caption, weight / per_audio[:, None])


def distillation_loss(similarity: Tensor, teacher_similarity: Tensor, tau: float = 0.05) -> Tensor:
    """Stage-2 loss ``L_dist``: cross-entropy against softmaxes of the estimated correspondences.

    ``teacher_similarity`` is ``C_hat`` (the mean of the teachers' similarity matrices for the same
    audios and captions); its column softmax and row softmax at ``tau`` are the targets ``p_hat_a`` and
    ``p_hat_c``. The targets carry no gradient.
    """
    tau = _check_tau(tau)
    sim = _as_float(similarity, "similarity")
    teacher = _as_float(teacher_similarity, "teacher_similarity")
    if teacher.shape != sim.shape:
        raise ValueError(
            f"teacher_similarity has shape {tuple(teacher.shape)}, similarity has {tuple(sim.shape)}; "
            "they must match (same audios as rows, same captions as columns)"
        )
    teacher_logits = teacher.detach().to(device=sim.device, dtype=sim.dtype) / tau
    target_a = torch.softmax(teacher_logits, dim=0)
    target_c = torch.softmax(teacher_logits, dim=1)
    return _two_way_cross_entropy(sim / tau, target_a, target_c)


def positives_from_ids(
    audio_ids_of_rows: Tensor | Sequence[Hashable], audio_ids_of_columns: Tensor | Sequence[Hashable]
) -> Tensor:
    """Bool matrix ``P[i, j] = (audio_ids_of_rows[i] == audio_ids_of_columns[j])``.

    For a batch of B (audio, caption) pairs pass the pairs' audio ids twice: entry (i, j) is positive
    when pair i's audio is pair j's audio. Ids may be integer tensors or any hashable values (e.g. clip
    id strings); the result lives on the device of the row ids when they are a tensor.
    """
    if isinstance(audio_ids_of_rows, Tensor) and isinstance(audio_ids_of_columns, Tensor):
        rows, cols = audio_ids_of_rows, audio_ids_of_columns
        if rows.dim() != 1 or cols.dim() != 1:
            raise ValueError(f"ids must be 1-D, got shapes {tuple(rows.shape)} and {tuple(cols.shape)}")
        return rows[:, None] == cols.to(rows.device)[None, :]
    codes: dict[Hashable, int] = {}
    rows_list = [codes.setdefault(_key(x), len(codes)) for x in audio_ids_of_rows]
    cols_list = [codes.setdefault(_key(x), len(codes)) for x in audio_ids_of_columns]
    device = audio_ids_of_rows.device if isinstance(audio_ids_of_rows, Tensor) else None
    rows_t = torch.tensor(rows_list, dtype=torch.long, device=device)
    cols_t = torch.tensor(cols_list, dtype=torch.long, device=device)
    return rows_t[:, None] == cols_t[None, :]


def _key(x: Hashable) -> Hashable:
    """Hashable key of an id (0-d tensors become Python numbers)."""
    return x.item() if isinstance(x, Tensor) else x


def window_distillation_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """``L_dist`` over a recording's windows (the learned moment model): the mean over rows (queries) of
    ``H(targets[i], softmax(logits[i]))``, the softmax taken over the row's valid steps (``mask`` 1).

    ``logits`` (Q, T) are the model's per-step relevance logits (no temperature: the model learns its
    scale); ``targets`` (Q, T) the estimated correspondences' distribution over the same steps (zero on
    padding; ``training.moment_targets``). The targets carry no gradient.
    """
    if logits.shape != targets.shape or logits.shape != mask.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape")
    valid = mask > 0
    if not bool(valid.any(dim=1).all()):
        raise ValueError("window_distillation_loss: a row has no valid step")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    log_q = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=1).masked_fill(~valid, 0.0)
    return -(targets.detach().to(log_q.dtype) * log_q).sum(dim=1).mean()
