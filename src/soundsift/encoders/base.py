"""The encoder contracts: what every audio and text encoder provides, and its optional capabilities
declared with their defaults, so the model, training and search read them instead of probing with
``getattr``/``hasattr``.

Required:
  - ``AudioEncoder``: ``sample_rate: int`` (the rate it expects waveforms at), ``out_dim: int`` (the size of
    its clip embedding), ``forward(waveform: (B, T) float, lengths: (B,) long | None) -> (B, out_dim)``. It
    owns its front end, windowing of long inputs and train-time augmentation (active only in ``training``
    mode), so inference is deterministic.
  - ``TextEncoder``: ``out_dim: int``, ``forward(texts: list[str]) -> (B, out_dim)`` (tokenisation and
    device placement inside).

Capabilities (class attributes or properties; override where they hold):
  - ``batch_invariant`` (audio): in eval mode each clip of a zero-padded batch with ``lengths`` embeds
    exactly as it would alone, so ``DualEncoder.embed_waveforms`` may batch clips of different lengths.
  - ``patch_grid`` (audio): ``(patch, hop)`` samples when the tower embeds a clip by pooling per-patch
    outputs (``patch_outputs``, then ``pool_patch_outputs``), so the windows of a long file can be pooled
    from the file's own patches instead of embedding each window again; None (the default) when not.
  - ``freeze``: the encoder is not trained (no gradients; it stays in eval mode during training).
  - ``can_precompute`` / ``precompute(texts)`` (text): a frozen encoder that caches its outputs embeds a
    whole dataset's captions once before training.
  - ``frozen_pretrained`` (the pretrained source): the module's weights come from its pretrained source
    (a package, a hub checkpoint) and are rebuilt from it when a model file loads, never saved. An
    encoder declares it for itself; parts it wraps (a transformers backbone) carry the same marker.
  - ``upgrade_state_dict(state_dict, prefix)``: renames keys of model files written by older versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from soundsift.errors import ConfigError


def no_published_weights(family: str, pretrained: bool) -> None:
    """Refuse ``pretrained: true`` for a family that trains from scratch (nothing to load)."""
    if pretrained:
        raise ConfigError(f"the {family!r} encoder has no published weights: pretrained must be false")


class Encoder(nn.Module):
    """What audio and text encoders share: their output size and the declared capabilities."""

    out_dim: int
    #: Not trained: no gradients, kept in eval mode while the rest of the model trains.
    freeze: bool = False
    #: Weights rebuilt from the pretrained source on load, never saved in model files.
    frozen_pretrained: bool = False
    #: The frozen dataclass of options the family takes (``model.<tower>.<option>``); None: not declared.
    Options: ClassVar[type | None] = None
    #: The registry name it was built under (set by ``build_audio_encoder``/``build_text_encoder``).
    family: str = ""

    def upgrade_state_dict(self, state_dict: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """``state_dict`` with the keys of older model files (under ``prefix``) renamed; as is by default."""
        return state_dict


class AudioEncoder(Encoder):
    """An audio tower: waveforms at ``sample_rate`` -> (B, ``out_dim``) clip embeddings."""

    sample_rate: int
    #: A clip embeds the same alone or zero-padded in a batch with ``lengths`` (eval mode).
    batch_invariant: bool = False

    #: (patch, hop) samples of the per-patch outputs the tower pools (see the module docstring); None: none.
    patch_grid: tuple[int, int] | None = None

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def patch_outputs(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, T) waveforms -> per-patch outputs ``(B, P, F)`` (zero past each clip's ``counts``), the patch
        counts ``(B,)`` and per-patch side values ``(B, P)`` the pooling may read (or None); only where
        ``patch_grid`` is set. ``pool_patch_outputs(*patch_outputs(w, n))`` equals ``forward(w, n)``."""
        raise NotImplementedError(f"{type(self).__name__} does not pool patches (patch_grid is None)")

    def pool_patch_outputs(self, outputs: torch.Tensor, counts: torch.Tensor, side: torch.Tensor | None
                           ) -> torch.Tensor:
        """Per-patch outputs ``(B, P, F)`` of which the first ``counts`` count -> ``(B, out_dim)``."""
        raise NotImplementedError(f"{type(self).__name__} does not pool patches (patch_grid is None)")

    def export_plan(self) -> Any:
        """How the tower exports to ONNX (``encoders.export_plan.AudioExportPlan``); by default whole,
        which ``soundsift.export`` accepts only when the graph equals torch at every length it checks."""
        from soundsift.encoders.export_plan import AudioExportPlan, Call

        return AudioExportPlan(core=Call(self, "forward"), split="whole")


class TextEncoder(Encoder):
    """A text tower: captions -> (B, ``out_dim``) embeddings."""

    @property
    def can_precompute(self) -> bool:
        """Whether ``precompute`` caches embeddings (a frozen encoder with a cache); False by default."""
        return False

    def precompute(self, texts: Sequence[str], batch_size: int = 256, progress: bool = True) -> None:
        """Embed ``texts`` once into the encoder's cache (only where ``can_precompute``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot precompute (check can_precompute first)")

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def export_plan(self) -> Any:
        """How the tower exports to ONNX (``encoders.export_plan.TextExportPlan``); ExportError saying why
        not (none by default)."""
        from soundsift.errors import ExportError

        raise ExportError("it declares no export plan")
