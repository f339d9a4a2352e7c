"""EfficientAT MobileNetV3 audio encoder (the paper's "MN", checkpoint ``mn40_as_ext``).

Front end: the same 32-kHz, 128-bin Kaldi log-mel as PaSST (EfficientAT ``models/preprocess.py``:
window 800, hop 320, n_fft 1024, fmax 15 kHz, train-time fmin/fmax jitter). Being a CNN, MN takes
clips of any length in one pass. Embedding: the feature map of the last 1x1 conv averaged over
frequency and time (EfficientAT's ``features`` output, which salsa uses; 3840-d for width 4.0),
where the time average covers only the frames of each clip's real samples (``lengths``), so the zero
padding of a batch does not dilute short clips. In eval mode a batch of clips of different lengths
runs the front end clip by clip and the network masked (every layer's output zeroed past each clip's
end, squeeze-excitation means over valid steps only), so each clip embeds as it would alone.

The network: EfficientAT's MobileNetV3 ("MN", Schmid et al., 2023) with the official state-dict layout.

Written from the public facts of ``fschmid56/EfficientAT`` (``models/mn/model.py``, ``block_types.py``):
torchvision's MobileNetV3-Large block table scaled by ``width_mult`` (channels rounded with
``make_divisible(c * width, 8)``), 1 input channel, BatchNorm ``eps=0.001, momentum=0.01``, conv-BN-act
triples stored as ``nn.Sequential`` (keys ``.0`` conv, ``.1`` BN), and channel squeeze-excitation with two
``nn.Linear`` layers at ``block.K.conc_se_layers.0.{fc1,fc2}`` (ReLU, then sigmoid). Key names therefore
match the released checkpoints: ``features.0`` (stem), ``features.1``-``features.15`` (inverted
residual blocks, ``features.N.block.K``), ``features.16`` (1x1 conv to ``6 x`` the last block width).
The classifier (``classifier.*``) is not built: the encoder uses the pooled features before it.
Only channel SE (EfficientAT's default ``se_dims="c"``, used by all released ``mn*_as`` models) is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from soundsift.encoders.base import AudioEncoder
from soundsift.encoders.frontends.kaldi import KaldiLogMel, n_frames
from soundsift.encoders.layers import average_by_owner, split_snippets
from soundsift.encoders.options import MnCfg
from soundsift.encoders.pretrained import PretrainedWeights, load_pretrained_weights, resolve_pretrained
from soundsift.errors import ConfigError


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10% below it (TF MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class BlockConfig:
    """One inverted residual block, channels already scaled by the width multiplier."""

    in_ch: int
    kernel: int
    expanded: int
    out_ch: int
    use_se: bool
    hardswish: bool
    stride: int


# MobileNetV3-Large: input, kernel, expanded, output, SE, activation, stride (EfficientAT strides (2,2,2,2)).
_LARGE = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)


def block_configs(width_mult: float) -> list[BlockConfig]:
    """The 15 block configurations of MobileNetV3-Large at ``width_mult``."""
    w = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    return [BlockConfig(w(i), k, w(e), w(o), se, act == "HS", s) for i, k, e, o, se, act, s in _LARGE]


def _conv_bn_act(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = None
) -> nn.Sequential:
    """torchvision's ``ConvNormActivation`` layout: bias-free conv ``.0``, BatchNorm ``.1``, activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=0.001, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def _ceil_steps(steps: torch.Tensor, stride: int | tuple[int, ...]) -> torch.Tensor:
    s = stride[-1] if isinstance(stride, tuple) else stride
    return (steps + s - 1) // s


def _zero_past(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Zero the time steps (last axis) of ``(B, C, F, T)`` past each clip's ``steps``."""
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < steps[:, None]
    return x * keep[:, None, None, :].to(x.dtype)


def _masked_conv_bn_act(layer: nn.Sequential, x: torch.Tensor, steps: torch.Tensor):
    """A conv-BN-act triple on a ragged batch: as if each clip ran alone, zero-padded by the conv."""
    steps = _ceil_steps(steps, layer[0].stride)
    return _zero_past(layer(x), steps), steps


class SqueezeExcitation(nn.Module):
    """Channel gate: mean over (freq, time) -> fc1 -> ReLU -> fc2 -> sigmoid -> scale."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * scale[:, :, None, None]

    def forward_masked(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``forward`` on a ragged batch whose steps past ``steps`` are zero: the mean covers valid steps only."""
        count = (steps * x.shape[2]).to(x.dtype).clamp(min=1.0)
        scale = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.sum(dim=(2, 3)) / count[:, None]))))
        return x * scale[:, :, None, None]


class ConcurrentSE(nn.Module):
    """EfficientAT's wrapper around its SE layers (one channel SE here; max over one output = itself)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, make_divisible(channels // 4, 8))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """[1x1 expand] -> depthwise kxk (stride) -> [SE] -> 1x1 project (+ identity when shapes allow)."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_ch:
            layers.append(_conv_bn_act(cfg.in_ch, cfg.expanded, 1, act=act))
        layers.append(_conv_bn_act(cfg.expanded, cfg.expanded, cfg.kernel, cfg.stride, cfg.expanded, act))
        if cfg.use_se:
            layers.append(ConcurrentSE(cfg.expanded))
        layers.append(_conv_bn_act(cfg.expanded, cfg.out_ch, 1))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cfg.stride == 1 and cfg.in_ch == cfg.out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out

    def forward_masked(self, x: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on a ragged batch (steps past ``steps`` zero in and out)."""
        out, s = x, steps
        for layer in self.block:
            if isinstance(layer, ConcurrentSE):
                out = layer.conc_se_layers[0].forward_masked(out, s)
            else:
                out, s = _masked_conv_bn_act(layer, out, s)
        return (out + x if self.use_res_connect else out), s


class MobileNetV3(nn.Module):
    """``(N, 1, n_mels, frames)`` log-mels -> ``(N, out_dim, n_mels/32, frames/32)`` feature maps."""

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        configs = block_configs(width_mult)
        last = configs[-1].out_ch
        layers: list[nn.Module] = [_conv_bn_act(1, configs[0].in_ch, 3, stride=2, act=nn.Hardswish)]
        layers += [InvertedResidual(c) for c in configs]
        layers.append(_conv_bn_act(last, 6 * last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.out_dim = 6 * last
        self.strides = [2] + [c.stride for c in configs]
        for m in self.modules():  # EfficientAT's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def output_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Time steps of the feature map for inputs of ``frames`` frames (each stride-2 conv halves, ceil)."""
        for s in self.strides:
            frames = (frames + s - 1) // s
        return frames

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.features(mel)

    def forward_masked(self, mel: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` on a zero-padded batch of clips with ``frames`` valid frames each: every layer's
        output is zeroed past each clip's end (as the next conv's zero padding would be for the clip
        alone) and the SE means cover valid steps only, so each clip's feature map equals its own
        unpadded one (up to float rounding). Returns the feature maps and their valid time steps."""
        x, steps = _zero_past(mel, frames), frames
        for layer in self.features:
            if isinstance(layer, InvertedResidual):
                x, steps = layer.forward_masked(x, steps)
            else:
                x, steps = _masked_conv_bn_act(layer, x, steps)
        return x, steps


_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1"

def _weights(name: str, mAP: int) -> PretrainedWeights:
    return PretrainedWeights(
        name, f"{_RELEASE}/{name}_mAP_{mAP}.pt",
        ignore_missing=("*.num_batches_tracked",), ignore_unexpected=("classifier.*",),  # AudioSet head
        source="pretrained_models of fschmid56/EfficientAT models/mn/model.py",
    )


# name -> (width multiplier, weights)
VARIANTS: dict[str, tuple[float, PretrainedWeights]] = {
    "mn40_as_ext": (4.0, _weights("mn40_as_ext", 487)),
    "mn40_as": (4.0, _weights("mn40_as", 484)),
    "mn30_as": (3.0, _weights("mn30_as", 482)),
    "mn20_as": (2.0, _weights("mn20_as", 478)),
    "mn10_as": (1.0, _weights("mn10_as", 471)),
    "mn05_as": (0.5, _weights("mn05_as", 443)),
    "mn04_as": (0.4, _weights("mn04_as", 432)),
    "mn02_as": (0.2, _weights("mn02_as", 378)),
    "mn01_as": (0.1, _weights("mn01_as", 298)),
}
TINY_WIDTH = 0.1


class MobileNetEncoder(AudioEncoder):
    """MN audio encoder: ``(B, T)`` 32-kHz waveforms (+ lengths) -> ``(B, out_dim)`` clip embeddings.

    ``pretrained`` (default: True for ``size="full"``) downloads the variant's AudioSet checkpoint;
    ``checkpoint=PATH`` loads a local copy. ``size="tiny"`` builds the same network at width 0.1
    (random weights) for tests. ``segment_seconds``: None embeds a clip in one pass (the network takes
    any length); a number cuts it into snippets of that length (the last one zero-padded, dropped when
    shorter than ``min_remainder_seconds`` unless it is the only one) and averages their embeddings, as
    salsa's ``WindowedPrediction`` does with ``segment_length=10``. A clip shorter than one snippet is
    embedded whole, as salsa's ``split_audio`` passes it, not zero-padded to the snippet length (padding
    reaches every frame through the receptive field and the SE means); in a batch such clips are padded
    only to the longest of them.
    ``min_remainder_seconds=segment_seconds`` drops a trailing partial snippet, as salsa's
    ``x.unfold`` does for an unpadded clip (tests/test_upstream_mn.py checks this against EfficientAT).
    """

    Options = MnCfg

    sample_rate = 32000
    #: eval mode: a ragged batch runs masked (``embed_clips``), so a clip embeds as it would alone
    batch_invariant = True

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
        segment_seconds: float | None = None,
        min_remainder_seconds: float = 0.0,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown MobileNet variant {variant!r}; known: {', '.join(VARIANTS)}")
        if segment_seconds is not None and segment_seconds <= 0:
            raise ConfigError(f"MobileNet segment_seconds must be > 0, got {segment_seconds}")
        self.segment = None if segment_seconds is None else int(round(segment_seconds * self.sample_rate))
        self.min_remainder = int(round(min_remainder_seconds * self.sample_rate))
        pretrained = resolve_pretrained("MobileNet", size, pretrained, checkpoint)
        self.variant = variant
        width, self.weights = VARIANTS[variant]
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
        return str(self.weights.url)

    def load_pretrained(
        self, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
    ) -> None:
        """Load the official weights (from ``checkpoint`` or the download cache), checking every key."""
        load_pretrained_weights(self.model, self.weights, checkpoint, cache_dir, progress)

    def export_plan(self):
        from soundsift.encoders.mn_export import mn_export_plan

        return mn_export_plan(self)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.segment is None or waveform.shape[-1] <= self.segment:
            return self.embed_clips(waveform, lengths)
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(waveform.shape)}")
        b, t = waveform.shape
        full = torch.full((b,), t, dtype=torch.long, device=waveform.device)
        lens = full if lengths is None else torch.as_tensor(lengths, device=waveform.device).long()
        if lens.shape != (b,) or bool((lens < 1).any()) or bool((lens > t).any()):
            raise ValueError(f"lengths must be a ({b},) tensor of values in 1..{t}, got {lens.tolist()}")
        short = lens < self.segment  # salsa's split_audio: ``x.shape[1] < segment_length`` -> whole
        if not bool(short.any()):
            snippets, owner, valid = split_snippets(waveform, lengths, self.segment, self.min_remainder)
            return average_by_owner(self.embed_clips(snippets, valid, whole=False), owner, b)
        # clips shorter than a snippet: embedded whole, padded only to the longest of them; the rest cut
        s_idx, l_idx = short.nonzero(as_tuple=True)[0], (~short).nonzero(as_tuple=True)[0]
        parts = [self.embed_clips(waveform[s_idx, : int(lens[s_idx].max())], lens[s_idx])]
        if l_idx.numel():
            cut = split_snippets(waveform[l_idx], lens[l_idx], self.segment, self.min_remainder)
            snippets, owner, valid = cut
            parts.append(average_by_owner(self.embed_clips(snippets, valid, whole=False), owner, l_idx.numel()))
        return torch.cat(parts)[torch.argsort(torch.cat([s_idx, l_idx]))]

    def embed_clips(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None, whole: bool = True
    ) -> torch.Tensor:
        """One pass over clips: the feature map averaged over frequency and the clip's frames.

        ``whole=True``: each clip is ``lengths`` samples long and what follows is batch padding; in eval
        mode a ragged batch then runs the front end per clip and the network masked
        (``MobileNetV3.forward_masked``), so every clip embeds as it would alone (up to float rounding).
        (In training, BatchNorm's batch statistics mix the clips anyway; the padded batch runs as is.)
        ``whole=False``: the inputs are zero-padded snippets, seen as such (salsa's padded last
        snippet); ``lengths`` only limits the time average.
        """
        if waveform.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(waveform.shape)}")
        b, t = waveform.shape
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=waveform.device).long()
            if lengths.shape != (b,) or bool((lengths < 1).any()) or bool((lengths > t).any()):
                raise ValueError(
                    f"lengths must be a ({b},) tensor of values in 1..{t}, got {lengths.tolist()}"
                )
            if whole and not self.training and bool((lengths < t).any()):
                return self._embed_ragged(waveform, lengths)
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

    def _embed_ragged(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Eval-mode ``embed_clips`` of clips of different lengths, each as if alone.

        The Kaldi front end reflect-pads each clip's own end, so it runs clip by clip (the same work as
        one batched call); the log-mels are zero-padded to the longest and the network runs once, masked.
        """
        mels = [self.mel(waveform[i : i + 1, : int(n)]) for i, n in enumerate(lengths.tolist())]
        frames = torch.tensor([m.shape[-1] for m in mels], device=waveform.device)
        longest = int(frames.max())
        mel = torch.cat([nn.functional.pad(m, (0, longest - m.shape[-1])) for m in mels])
        fmap, steps = self.model.forward_masked(mel.unsqueeze(1), frames)
        pooled = fmap.mean(dim=2)  # (B, C, T'), zero past each clip's steps
        # the time average covers the steps of the clip's real samples, as in embed_clips
        real = self.model.output_frames(n_frames(lengths, self.mel.hop_length)).clamp(min=1)
        real = torch.minimum(real, steps)
        mask = (torch.arange(pooled.shape[2], device=pooled.device)[None, :] < real[:, None]).to(pooled.dtype)
        return (pooled * mask[:, None, :]).sum(dim=2) / real[:, None].to(pooled.dtype)
