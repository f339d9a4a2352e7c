"""EfficientAT MobileNetV3 audio encoder (the paper's "MN", checkpoint ``mn40_as_ext``).

Front end: the same 32-kHz, 128-bin Kaldi log-mel as PaSST (EfficientAT ``models/preprocess.py``:
window 800, hop 320, n_fft 1024, fmax 15 kHz, train-time fmin/fmax jitter). Being a CNN, MN takes
clips of any length in one pass. Embedding: the feature map of the last 1x1 conv averaged over
frequency and time (EfficientAT's ``features`` output, which salsa uses; 3840-d for width 4.0),
where the time average covers only the frames of each clip's real samples (``lengths``), so the zero
padding of a batch does not dilute short clips. Frames near a clip's end still see a little padding
through the receptive field; clips of equal length embed exactly as they would alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from soundsift.encoders.frontends.kaldi import KaldiLogMel, n_frames
from soundsift.encoders.mn_model import MobileNetV3
from soundsift.encoders.pretrained import (
    download_checkpoint,
    load_state_dict_checked,
    read_checkpoint,
    resolve_pretrained,
)
from soundsift.errors import ConfigError

_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1"

# name -> (width multiplier, release file), as in EfficientAT ``models/mn/model.py`` ``pretrained_models``.
VARIANTS: dict[str, tuple[float, str]] = {
    "mn40_as_ext": (4.0, "mn40_as_ext_mAP_487.pt"),
    "mn40_as": (4.0, "mn40_as_mAP_484.pt"),
    "mn30_as": (3.0, "mn30_as_mAP_482.pt"),
    "mn20_as": (2.0, "mn20_as_mAP_478.pt"),
    "mn10_as": (1.0, "mn10_as_mAP_471.pt"),
    "mn05_as": (0.5, "mn05_as_mAP_443.pt"),
    "mn04_as": (0.4, "mn04_as_mAP_432.pt"),
    "mn02_as": (0.2, "mn02_as_mAP_378.pt"),
    "mn01_as": (0.1, "mn01_as_mAP_298.pt"),
}
TINY_WIDTH = 0.1


class MobileNetEncoder(nn.Module):
    """MN audio encoder: ``(B, T)`` 32-kHz waveforms (+ lengths) -> ``(B, out_dim)`` clip embeddings.

    ``pretrained`` (default: True for ``size="full"``) downloads the variant's AudioSet checkpoint;
    ``checkpoint=PATH`` loads a local copy. ``size="tiny"`` builds the same network at width 0.1
    (random weights) for tests.
    """

    sample_rate = 32000

    def __init__(
        self,
        variant: str = "mn40_as_ext",
        pretrained: bool | None = None,
        checkpoint: str | Path | None = None,
        size: str = "full",
        freqm: int = 0,
        timem: int = 0,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown MobileNet variant {variant!r}; known: {', '.join(VARIANTS)}")
        pretrained = resolve_pretrained("MobileNet", size, pretrained, checkpoint)
        self.variant = variant
        width, self.filename = VARIANTS[variant]
        self.mel = KaldiLogMel(
            n_mels=128,
            sample_rate=self.sample_rate,
            freqm=freqm,
            timem=timem,
            fmin_aug_range=fmin_aug_range,
            fmax_aug_range=fmax_aug_range,
        )
        self.model = MobileNetV3(width if size == "full" else TINY_WIDTH)
        self.out_dim = self.model.out_dim
        if checkpoint is not None or pretrained:
            self.load_pretrained(checkpoint, cache_dir=cache_dir, progress=progress)

    @property
    def url(self) -> str:
        return f"{_RELEASE}/{self.filename}"

    def load_pretrained(
        self, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
    ) -> None:
        """Load the official weights (from ``checkpoint`` or the download cache), checking every key."""
        path = download_checkpoint(self.url, cache_dir=cache_dir, local_path=checkpoint, progress=progress)
        load_state_dict_checked(
            self.model,
            read_checkpoint(path),
            ignore_missing=("*.num_batches_tracked",),
            ignore_unexpected=("classifier.*",),
            source=str(path),
        )

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(waveform.shape)}")
        b, t = waveform.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=waveform.device).long()
            if lengths.shape != (b,) or bool((lengths < 1).any()) or bool((lengths > t).any()):
                raise ValueError(
                    f"lengths must be a ({b},) tensor of values in 1..{t}, got {lengths.tolist()}"
                )
            waveform = waveform * (torch.arange(t, device=waveform.device)[None, :] < lengths[:, None])
        fmap = self.model(self.mel(waveform).unsqueeze(1))  # (B, C, F', T')
        pooled = fmap.mean(dim=2)  # (B, C, T')
        if lengths is None:
            return pooled.mean(dim=2)
        steps = self.model.output_frames(n_frames(lengths, self.mel.hop_length)).clamp(1, pooled.shape[2])
        mask = (torch.arange(pooled.shape[2], device=pooled.device)[None, :] < steps[:, None]).to(
            pooled.dtype
        )
        return (pooled * mask[:, None, :]).sum(dim=2) / steps[:, None].to(pooled.dtype)
