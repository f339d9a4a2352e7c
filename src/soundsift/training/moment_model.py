"""A light learned moment model over window embeddings (issue 17 item 5, a first version).

Input: the sequence of a recording's window embeddings (``moment_features``: the frozen soundsift
model's, e.g. 2-s windows every 1 s) and a query's text embedding. Each step's input is the window
vector, its product with the query, and their cosine; a linear projection and three 1-D convolutions
(kernel 5, so each step sees its neighbours) give per step a relevance logit and two boundary offsets
(seconds from the window's centre back to the moment's start and on to its end, in hops).

Targets, from the ground-truth windows: relevance 1 for a step whose centre lies inside a true window
(binary cross-entropy), the offsets to that window's start and end for those steps (L1). With
``distill_weight`` > 0 the paper's estimated correspondences are soft targets too (``moment_targets``):
the teachers' query-window similarities softmaxed over the windows at ``tau``, against the model's
softmax over its relevance logits (``losses.window_distillation_loss``). The loss is
``loss_weight * BCE + distill_weight * L_dist + offset_weight * L1`` (the paper's loss_weight and
distill_weight; the boundary offsets always learn from the true windows).

Decoding (as FCOS/AM-DETR-style heads do): every step proposes its span ``[centre - start offset,
centre + end offset]`` with its relevance as score; spans are clipped to the recording, kept in score
order unless they overlap a kept one by ``NMS_IOU`` or more, up to ``MAX_PREDICTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundsift.atomic import atomic_write
from soundsift.errors import SoundsiftError
from soundsift.losses import window_distillation_loss
from soundsift.metrics.moments import MAX_PREDICTIONS
from soundsift.spans import NMS_IOU, temporal_iou
from soundsift.training.moment_features import SplitFeatures
from soundsift.training.moment_options import MomentTrainOptions

FORMAT = "soundsift-moment-model"
FORMAT_VERSION = 1
__all__ = ["MomentHead", "MomentTrainOptions", "load_moment_model", "predict_windows", "save_moment_model",
           "train_moment_model"]


class MomentHead(nn.Module):
    """(B, T, D) window embeddings, (B, D) query embeddings, (B, T) mask -> (B, T, 3): relevance logit,
    start offset, end offset (offsets >= 0, in hops)."""

    def __init__(self, dim: int, hidden: int = 128, kernel: int = 5, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.hidden, self.kernel = dim, hidden, kernel
        self.project = nn.Linear(2 * dim + 1, hidden)
        self.convs = nn.ModuleList([nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(3)])
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(hidden, 3, 1)

    def forward(self, windows: Tensor, query: Tensor, mask: Tensor) -> Tensor:
        q = query[:, None, :].expand_as(windows)
        cosine = (windows * q).sum(-1, keepdim=True)
        x = torch.relu(self.project(torch.cat([windows, windows * q, cosine], -1)))  # (B, T, H)
        x = (x * mask[..., None]).transpose(1, 2)  # (B, H, T)
        for conv in self.convs:
            x = x + torch.relu(conv(self.dropout(x)))
            x = x * mask[:, None, :]
        y = self.out(x).transpose(1, 2)  # (B, T, 3)
        return torch.cat([y[..., :1], F.softplus(y[..., 1:])], -1)


@dataclass(frozen=True)
class Batch:
    """Padded training tensors of all queries of a split."""

    windows: Tensor  # (R, T, D) per recording
    mask: Tensor  # (R, T)
    centres: Tensor  # (R, T) seconds
    hop: float
    queries: Tensor  # (Q, D)
    owner: Tensor  # (Q,)
    relevant: Tensor  # (Q, T) 0/1
    offsets: Tensor  # (Q, T, 2) hops
    soft: Tensor | None = None  # (Q, T) the estimated correspondences' distribution over the windows


def pad(features: SplitFeatures) -> tuple[Tensor, Tensor, Tensor]:
    """(R, T, D) windows, (R, T) mask, (R, T) window centres (seconds) of ``features``, zero-padded."""
    longest = max(len(w) for w in features.windows)
    n = len(features.windows)
    windows = torch.zeros(n, longest, features.dim)
    mask = torch.zeros(n, longest)
    centres = torch.zeros(n, longest)
    for r, (w, s) in enumerate(zip(features.windows, features.spans)):
        windows[r, : len(w)] = torch.from_numpy(np.asarray(w, np.float32))
        mask[r, : len(w)] = 1.0
        centres[r, : len(w)] = torch.from_numpy(np.asarray(s, np.float32).mean(1))
    return windows, mask, centres


def step_hop(features: SplitFeatures) -> float:
    """The hop (seconds) between windows: the median start difference (1 for one-window recordings)."""
    gaps = np.concatenate([np.diff(np.asarray(s)[:, 0]) for s in features.spans if len(s) > 1] or [np.ones(1)])
    return float(np.median(gaps))


def make_batch(features: SplitFeatures, truth: Sequence[Sequence[tuple[float, float]]],
               soft: Tensor | None = None) -> Batch:
    """The training tensors: ``truth[i]`` are query i's true windows (seconds), ``soft`` the soft targets."""
    windows, mask, centres = pad(features)
    hop = step_hop(features)
    owner = torch.from_numpy(np.asarray(features.query_recording, np.int64))
    relevant = torch.zeros(len(owner), windows.shape[1])
    offsets = torch.zeros(len(owner), windows.shape[1], 2)
    for i, spans in enumerate(truth):
        c = centres[owner[i]]
        for start, end in spans:
            inside = (c >= start) & (c <= end) & (mask[owner[i]] > 0)
            relevant[i, inside] = 1.0
            offsets[i, inside, 0] = (c[inside] - start) / hop
            offsets[i, inside, 1] = (end - c[inside]) / hop
    return Batch(windows, mask, centres, hop, torch.from_numpy(np.asarray(features.queries, np.float32)), owner,
                 relevant, offsets, soft)


def moment_loss(head: MomentHead, batch: Batch, idx: Tensor, options: MomentTrainOptions) -> Tensor:
    """``loss_weight`` x binary cross-entropy of relevance over valid steps + ``offset_weight`` x L1 of the
    offsets inside + ``distill_weight`` x the soft targets' cross-entropy (when the batch has them)."""
    r = batch.owner[idx]
    out = head(batch.windows[r], batch.queries[idx], batch.mask[r])
    mask = batch.mask[r]
    bce = F.binary_cross_entropy_with_logits(out[..., 0], batch.relevant[idx], reduction="none")
    bce = (bce * mask).sum() / mask.sum()
    inside = batch.relevant[idx] > 0
    l1 = (out[..., 1:][inside] - batch.offsets[idx][inside]).abs().mean() if inside.any() else out.sum() * 0
    loss = options.loss_weight * bce + options.offset_weight * l1
    if options.distill_weight > 0 and batch.soft is not None:
        loss = loss + options.distill_weight * window_distillation_loss(out[..., 0], batch.soft[idx], mask)
    return loss


def train_moment_model(features: SplitFeatures, truth: Sequence[Sequence[tuple[float, float]]],
                       options: MomentTrainOptions = MomentTrainOptions(), batch_size: int = 64,
                       log: list[float] | None = None, teachers: Sequence[SplitFeatures] = ()) -> MomentHead:
    """Train a ``MomentHead`` on a split's features and true windows; ``log`` collects each step's loss.
    With ``options.distill_weight`` > 0 the soft targets come from ``teachers`` (features of the same
    windows and queries by other models), or from ``features`` itself (self-distillation) when none."""
    torch.manual_seed(options.seed)
    soft = None
    if options.distill_weight > 0:
        from soundsift.training.moment_targets import check_aligned, window_soft_targets

        check_aligned([features, *teachers])
        soft = window_soft_targets(list(teachers) or [features], options.tau)
    batch = make_batch(features, truth, soft)
    head = MomentHead(features.dim, options.hidden, options.kernel, options.dropout)
    optimiser = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    generator = torch.Generator().manual_seed(options.seed)
    n = len(batch.owner)
    head.train()
    for _ in range(options.steps):
        idx = torch.randperm(n, generator=generator)[:batch_size]
        loss = moment_loss(head, batch, idx, options)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if log is not None:
            log.append(float(loss.detach()))
    head.eval()
    return head


def decode(scores: np.ndarray, offsets: np.ndarray, centres: np.ndarray, hop: float, duration: float,
           k: int = MAX_PREDICTIONS, nms_iou: float = NMS_IOU) -> list[list[float]]:
    """Up to ``k`` [start, end, score]: each step's span from its offsets (hops) around its centre, in score
    order, each dropped when it overlaps a kept one by ``nms_iou`` or more."""
    kept: list[tuple[float, float, float]] = []
    for t in np.argsort(-scores, kind="stable").tolist():
        start = max(0.0, float(centres[t] - offsets[t, 0] * hop))
        end = min(duration, float(centres[t] + offsets[t, 1] * hop))
        if end - start < 1e-3:
            continue
        if all(temporal_iou((start, end), (a, b)) < nms_iou for a, b, _ in kept):
            kept.append((start, end, float(scores[t])))
        if len(kept) >= k:
            break
    return [[round(a, 3), round(b, 3), round(s, 6)] for a, b, s in kept]


@torch.no_grad()
def predict_windows(head: MomentHead, features: SplitFeatures, durations: Sequence[float],
                    hop: float | None = None) -> list[list[list[float]]]:
    """Each query's ranked windows (``decode``); ``durations[r]``: recording r's length in seconds."""
    head.eval()
    windows, mask, centres = pad(features)
    hop = step_hop(features) if hop is None else hop
    out: list[list[list[float]]] = []
    for i, r in enumerate(np.asarray(features.query_recording).tolist()):
        n = int(mask[r].sum())
        y = head(windows[r: r + 1, :n], torch.from_numpy(np.asarray(features.queries[i: i + 1], np.float32)),
                 mask[r: r + 1, :n])[0]
        out.append(decode(torch.sigmoid(y[:, 0]).numpy(), y[:, 1:].numpy(), centres[r, :n].numpy(), hop,
                          float(durations[r])))
    return out


def save_moment_model(path: str | Path, head: MomentHead, model_name: str, window: float, hop: float) -> Path:
    """``torch.save`` of the head's state dict with its sizes and the windows it was trained on."""
    path = Path(path)
    saved = {"format": FORMAT, "version": FORMAT_VERSION, "dim": head.dim, "hidden": head.hidden,
             "kernel": head.kernel, "model": str(model_name), "window": float(window), "hop": float(hop),
             "state_dict": head.state_dict()}

    def write(tmp: Path) -> None:
        torch.save(saved, tmp)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path


@dataclass(frozen=True)
class LoadedMomentModel:
    """A saved moment model: the head and the window embeddings it expects (model, window, hop)."""

    head: MomentHead
    model: str
    window: float
    hop: float


def load_moment_model(path: str | Path) -> LoadedMomentModel:
    """The moment model ``save_moment_model`` wrote (``torch.load(weights_only=True)``)."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SoundsiftError(f"{path}: not a soundsift moment model (expected format {FORMAT!r})")
    head = MomentHead(int(saved["dim"]), int(saved["hidden"]), int(saved["kernel"]))
    head.load_state_dict(saved["state_dict"])
    head.eval()
    return LoadedMomentModel(head, str(saved["model"]), float(saved["window"]), float(saved["hop"]))
