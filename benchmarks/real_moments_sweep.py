"""Moment settings scored on the development half of ``real_moments.py`` from YAMNet's patch scores.

The zero-shot model embeds a clip as the square root of its patches' mean AudioSet probabilities
(0.96-s patches every 0.48 s), normalised. So each recording's per-patch probabilities are computed
once, and a window's embedding is approximated by the mean over the patches that lie inside it (an
index build cuts each window out and frames it from its own start: the same up to where the patches
fall). Every setting is then scored with the same merging code search uses (``soundsift.spans``):

- ``W / H, ratio r``: windows of W s every H s, merged by ``merge_moments(ratio=r)``;
- ``refine``: the best moments of 10-s windows, each narrowed to the run of fine windows (W_f s every
  H_f s) inside it that scores within ``1 - r_f`` of the best fine window there (``refine_moments``).

Only the development half is read. Prints R1@0.5, R1@0.7, mAP (percent) and index rows per second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from soundsift.metrics.moments import moment_retrieval_metrics

PATCH, PATCH_HOP = 0.96, 0.48
GRID = ((1.0, 0.5), (2.0, 1.0), (3.0, 1.5), (4.0, 2.0), (5.0, 2.5), (10.0, 5.0), (2.0, 0.5), (4.0, 1.0))
RATIOS = (0.8, 0.9, 0.95, 1.0)
LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85)
REFINE = ((1.0, 0.5), (2.0, 1.0))


def patch_probs(model, wave: np.ndarray) -> np.ndarray:
    """(P, 521) sigmoid class probabilities of the 0.96-s patches of ``wave`` (16 kHz)."""
    y = model.audio.yamnet
    with torch.no_grad():
        patches = y.frontend(torch.from_numpy(wave)[None])[0]
        out = [torch.sigmoid(y.net.classifier(y.net.embed(patches[i: i + 256]))) for i in range(0, len(patches), 256)]
    return torch.cat(out).numpy()


def window_vectors(probs: np.ndarray, spans: np.ndarray, power: float) -> np.ndarray:
    """Unit embeddings of windows (W, 2 seconds) from the patches inside each."""
    starts = np.arange(len(probs)) * PATCH_HOP
    cum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, 0)])
    out = np.zeros((len(spans), probs.shape[1]))
    for i, (a, b) in enumerate(spans):
        lo = int(np.searchsorted(starts, a - 1e-6))
        hi = max(int(np.searchsorted(starts + PATCH, b + 1e-6)), lo + 1)
        hi = min(hi, len(probs))
        lo = min(lo, hi - 1)
        out[i] = (cum[hi] - cum[lo]) / (hi - lo)
    out = np.clip(out, 0, None) ** power
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def spans_of(duration: float, window: float, hop: float) -> np.ndarray:
    from soundsift.spans import window_spans

    rate = 1000
    return window_spans(int(round(duration * rate)), int(round(window * rate)), int(round(hop * rate))) / rate


def load_probs(model, folder: Path, queries: list[dict]) -> dict[str, np.ndarray]:
    """Each recording's patch probabilities, cached beside the recordings."""
    from soundsift.audio import load_audio

    probs = {}
    store = folder.parent / f"patch_probs-{folder.name}"
    store.mkdir(exist_ok=True)
    for vid in sorted({q["vid"] for q in queries}):
        cached = store / f"{vid}.npy"
        if not cached.is_file():
            wave = load_audio(folder / f"{vid}.wav", 16000)
            np.save(cached, patch_probs(model, np.asarray(wave if wave.ndim == 1 else wave.mean(0), np.float32)))
        probs[vid] = np.load(cached)
    return probs


def simulated(folder: Path, queries: list[dict], window: float, hop: float,
              ratio: float | None = None) -> list[np.ndarray]:
    """Per query: the moments of its recording's ``window``/``hop`` windows (from the patch scores),
    merged as search merges them (``ratio``: the ratio rule at that ratio), up to 10."""
    from soundsift.checkpoints import load_model
    from soundsift.spans import merge_moments

    model = load_model("zero-shot", device="cpu")
    probs = load_probs(model, folder, queries)
    texts = model.embed_texts([q["query"] for q in queries]).astype(np.float64)
    out = []
    for q, t in zip(queries, texts):
        spans = spans_of(float(q["duration"]), window, hop)
        moments = merge_moments(spans, window_vectors(probs[q["vid"]], spans, float(model.audio.power)) @ t,
                                ratio=ratio)[:10]
        out.append(np.array([[m.start, m.end, m.score] for m in moments]).reshape(-1, 3))
    return out


def sweep(folder: Path, queries: list[dict]) -> None:
    from real_moments import random_predictions

    from soundsift.checkpoints import load_model
    from soundsift.spans import merge_moments

    model = load_model("zero-shot", device="cpu")
    power = float(model.audio.power)
    texts = model.embed_texts([q["query"] for q in queries]).astype(np.float64)
    probs = load_probs(model, folder, queries)
    truth = [q["relevant_windows"] for q in queries]
    durations = {q["vid"]: float(q["duration"]) for q in queries}
    cache: dict[tuple, tuple] = {}

    def scored(vid: str, window: float, hop: float):
        key = (vid, window, hop)
        if key not in cache:
            spans = spans_of(durations[vid], window, hop)
            cache[key] = (spans, window_vectors(probs[vid], spans, power))
        return cache[key]

    def score(predict) -> dict[str, float]:
        preds = [predict(q, t) for q, t in zip(queries, texts)]
        m = moment_retrieval_metrics(truth, preds)
        return {k: m[k] for k in ("R1@0.5", "R1@0.7", "mAP")}

    def as_array(moments) -> np.ndarray:
        return np.array([[m.start, m.end, m.score] for m in moments[:10]]).reshape(-1, 3)

    total = sum(durations.values())
    print(f"sweep on the development half: {len(queries)} queries, {len(probs)} recordings, {total / 60:.1f} min")
    print(f"  {'setting':<44} {'R1@0.5':>7} {'R1@0.7':>7} {'mAP':>7} {'rows/s':>7}")
    for window, hop in GRID:
        rows = sum(len(scored(v, window, hop)[0]) for v in durations) / total
        rand = [moment_retrieval_metrics(truth, random_predictions(queries, window, seed)) for seed in range(20)]
        print(f"  {f'random {window:g}-s windows (mean of 20 seeds)':<44} "
              + " ".join(f"{np.mean([r[k] for r in rand]):7.2f}" for k in ("R1@0.5", "R1@0.7", "mAP")))
        rules = [(f"ratio {r}", {"ratio": r}) for r in RATIOS] + [(f"peak rule, level {lv}", {"level": lv})
                                                                   for lv in LEVELS]
        for label, rule in rules:
            def predict(q, t, window=window, hop=hop, rule=rule):
                spans, vecs = scored(q["vid"], window, hop)
                return as_array(merge_moments(spans, vecs @ t, **rule))
            m = score(predict)
            print(f"  {f'{window:g} s / {hop:g} s, {label}':<44} {m['R1@0.5']:7.2f} {m['R1@0.7']:7.2f} "
                  f"{m['mAP']:7.2f} {rows:7.3f}", flush=True)
    coarse_rows = sum(len(scored(v, 10.0, 5.0)[0]) for v in durations) / total
    for fw, fh in REFINE:
        rows = coarse_rows + sum(len(scored(v, fw, fh)[0]) for v in durations) / total
        for level in LEVELS:
            def predict(q, t, fw=fw, fh=fh, level=level):
                spans, vecs = scored(q["vid"], 10.0, 5.0)
                fspans, fvecs = scored(q["vid"], fw, fh)
                return as_array(refine(merge_moments(spans, vecs @ t, ratio=0.9), fspans, fvecs @ t, level))
            m = score(predict)
            print(f"  {f'10/5 refined by {fw:g}/{fh:g}, level {level}':<44} {m['R1@0.5']:7.2f} "
                  f"{m['R1@0.7']:7.2f} {m['mAP']:7.2f} {rows:7.3f}", flush=True)


def _run_around(scores: np.ndarray, best: int, threshold: float) -> tuple[int, int]:
    lo = hi = best
    while lo > 0 and scores[lo - 1] >= threshold:
        lo -= 1
    while hi < len(scores) - 1 and scores[hi + 1] >= threshold:
        hi += 1
    return lo, hi


def refine(moments: list, fspans: np.ndarray, fscores: np.ndarray, level: float) -> list:
    """Each moment narrowed to the run of fine windows inside it around its best fine window, keeping
    those scoring at least median + level * (best - median) (median over the file's fine windows)."""
    from soundsift.spans import Moment

    floor = float(np.median(fscores))
    out = []
    for m in moments:
        inside = np.flatnonzero((fspans[:, 0] >= m.start - 1e-6) & (fspans[:, 1] <= m.end + 1e-6))
        if not len(inside):
            out.append(m)
            continue
        sub = fscores[inside]
        b = int(np.argmax(sub))
        lo, hi = _run_around(sub, b, floor + level * (float(sub[b]) - floor))
        out.append(Moment(float(fspans[inside[lo]][0]), float(fspans[inside[hi]][1]), m.score))
    return out
