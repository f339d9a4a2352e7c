"""Zero-shot variants for ``benchmarks/generalise.py``, scored from cached per-patch class scores with the
published model's own functions (``soundsift.encoders.zeroshot``), so a variant's figure is the
figure the model with those options gets (the benchmark's ``--index`` checks the published one)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

THREE = ("{}", "the sound of {}", "a recording of {}")
FIVE = THREE + ("a {} sound", "{} noise")


@dataclass(frozen=True)
class Variant:
    """Options of a zero-shot model; the defaults are the published model (``ZERO_SHOT_CONFIG``)."""

    space: str = "classes"  # "classes", "text", or "both" (the two as a system ensemble: mean cosine)
    pooling: str = "mean"
    score: str = "prob"
    power: float = 0.5
    top_k: int | None = None
    templates: tuple[str, ...] = ("{}",)
    temperature: float = 0.01
    library: float = 0.0  # strength of the library's class weights (``library_weights``), 0: off
    text_power: float = 1.0  # the text-space half: ``TEXT_SPACE_CONFIG``'s options
    text_templates: tuple[str, ...] = ("{}",)
    mix: float = 0.5  # "both": the class space's share of the mean


def label(v: Variant) -> str:
    base = Variant()
    diff = [f"{f.name}={getattr(v, f.name)}" for f in fields(v) if getattr(v, f.name) != getattr(base, f.name)]
    return ", ".join(diff).replace(str(FIVE), "5 prompts").replace(str(THREE), "3 prompts") or "published default"


def _variants() -> dict[str, Variant]:
    base = Variant()
    singles = [replace(base, pooling=p) for p in ("max", "topk", "sound")]
    singles += [replace(base, power=p) for p in (0.3, 1.0)]
    singles += [replace(base, temperature=t) for t in (0.005, 0.02, 0.05)]
    singles += [replace(base, templates=THREE), replace(base, templates=("the sound of {}",)),
                replace(base, top_k=10), replace(base, score="logodds", power=1.0)]
    singles += [replace(base, library=a) for a in (0.25, 0.5, 1.0)]
    singles += [replace(base, space="text"), replace(base, space="text", pooling="sound"),
                replace(base, space="text", text_templates=THREE), replace(base, space="both")]
    grid = [replace(base, pooling=p, library=a, space=s, templates=t)
            for p, a, s, t in itertools.product(("mean", "max", "sound"), (0.0, 0.5, 1.0), ("classes", "both"),
                                                (("{}",), THREE))]
    # second round, after the first table: temperature x prompts x power x pooling, and uneven mixes
    grid += [replace(base, temperature=t, templates=tp, power=p, pooling=pool)
             for t, tp, p, pool in itertools.product((0.01, 0.02, 0.05), (("{}",), ("the sound of {}",), THREE, FIVE),
                                                     (0.3, 0.5), ("mean", "sound"))]
    grid += [replace(base, space="both", mix=m, templates=tp, temperature=t)
             for m, tp, t in itertools.product((0.75, 0.9), (("{}",), THREE), (0.01, 0.05))]
    out = {}
    for v in [base] + singles + grid:
        out.setdefault(label(v), v)
    return out


VARIANTS = _variants()


class Scorer:
    """Per-query AP@10 (DCASE 2025 normalisation) of a variant, each source ranking its own sounds."""

    def __init__(self, feats, sounds, queries):
        from soundsift.encoders.text import MiniLMTextEncoder
        from soundsift.encoders.zeroshot import _clean_name, yamnet_class_names

        self.feats, self.queries = feats, queries
        at = {i: n for n, i in enumerate(feats.ids)}
        self.sources = list(dict.fromkeys(q.source for q in queries))
        self.rows = {s: [at[x.id] for x in sounds if x.source == s] for s in self.sources}
        self.cols = {s: [i for i, q in enumerate(queries) if q.source == s] for s in self.sources}
        self.n_sounds = {s: len(r) for s, r in self.rows.items()}
        self._rel = {s: torch.tensor([[feats.ids[r] in queries[c].relevant for c in self.cols[s]]
                                      for r in self.rows[s]]) for s in self.sources}
        self.names = [_clean_name(n) for n in yamnet_class_names()]
        with torch.no_grad():
            self.sentence = F.normalize(MiniLMTextEncoder(cache=False)([q.text for q in queries]).float(), dim=-1)
        self._pooled: dict[tuple, torch.Tensor] = {}

    def relevance(self, source: str) -> torch.Tensor:
        return self._rel[source]

    def pooled(self, pooling: str, score: str) -> torch.Tensor:
        from soundsift.encoders.zeroshot import pool_patches

        key = (pooling, score)
        if key not in self._pooled:
            rows = []
            for probs, loud in zip(self.feats.probs, self.feats.loudness):
                p = torch.from_numpy(probs)[None]
                if score == "logodds":
                    p = torch.logit(p.double().clamp(1e-12, 1 - 1e-12)).float().clamp(min=0.0)
                rows.append(pool_patches(p, torch.tensor([p.shape[1]]), pooling, 3, torch.from_numpy(loud)[None]))
            self._pooled[key] = torch.cat(rows)
        return self._pooled[key]

    def _class_sims(self, v: Variant) -> dict[str, torch.Tensor]:
        from soundsift.encoders.zeroshot import class_query, class_text_embeddings, library_weights, sharpen

        audio = F.normalize(sharpen(self.pooled(v.pooling, v.score), v.power, v.top_k), dim=-1)
        query = class_query(self.sentence, class_text_embeddings(self.names, v.templates), v.temperature)
        out = {}
        for s in self.sources:
            a, q = audio[self.rows[s]], query[self.cols[s]]
            if v.library:
                q = q * library_weights(a, v.library)
            out[s] = a @ F.normalize(q, dim=-1).T
        return out

    def _text_sims(self, v: Variant) -> dict[str, torch.Tensor]:
        from soundsift.encoders.zeroshot import class_text_embeddings, sharpen

        names = class_text_embeddings(self.names, v.text_templates)
        names = names - names.mean(0, keepdim=True)  # centred, as TEXT_SPACE_CONFIG
        audio = F.normalize(sharpen(self.pooled(v.pooling, v.score), v.text_power) @ names, dim=-1)
        return {s: audio[self.rows[s]] @ self.sentence[self.cols[s]].T for s in self.sources}

    def ap(self, v: Variant) -> np.ndarray:
        from soundsift.metrics.multi import average_precision_at_k

        parts = []
        if v.space in ("classes", "both"):
            parts.append(self._class_sims(v))
        if v.space in ("text", "both"):
            parts.append(self._text_sims(v))
        out = np.zeros(len(self.queries))
        for s in self.sources:
            sim = parts[0][s] if len(parts) == 1 else v.mix * parts[0][s] + (1 - v.mix) * parts[1][s]
            out[self.cols[s]] = average_precision_at_k(sim, self._rel[s], 10, normalise="relevant").numpy()
        return out
