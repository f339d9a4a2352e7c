"""Log-mel front end in plain torch (no torchaudio), plus the pieces the small encoders share.

- ``mel_filterbank``: triangular mel filters (HTK or Slaney mel scale) as an (n_freqs, n_mels) matrix.
- ``LogMel``: (B, T) waveforms -> (B, n_mels, frames) log-mel spectrograms; ``frames_for`` maps sample
  lengths to frame counts.
- ``SpecAugment``: train-time time/frequency masking (identity in eval mode).
- ``AudioFrontEnd``: LogMel + per-utterance/fixed normalisation + SpecAugment, honouring clip lengths.
- ``masked_mean`` / ``time_mask``: pooling over valid frames only; ``size_preset``: an encoder's size preset.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from soundsift.encoders.frontends.spectrum import frame_signal, rfft_power
from soundsift.encoders.layers import time_mask
from soundsift.errors import ConfigError

_MEL_SCALES = ("htk", "slaney")


def size_preset(sizes: dict[str, dict], size: str, owner: str) -> dict:
    """``sizes[size]`` (an encoder's preset), or a ValueError naming ``owner`` and the known sizes."""
    if size not in sizes:
        raise ConfigError(f"{owner}: unknown size {size!r}; use one of {sorted(sizes)}")
    return sizes[size]


def hz_to_mel(hz: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Frequency in Hz -> mel. HTK: 2595 log10(1 + f/700); Slaney: linear below 1 kHz, log above."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    if scale == "slaney":
        f_sp, min_log_hz = 200.0 / 3.0, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        return torch.where(
            hz >= min_log_hz,
            min_log_mel + torch.log(hz.clamp(min=1e-10) / min_log_hz) / logstep,
            hz / f_sp,
        )
    raise ConfigError(f"unknown mel scale {scale!r}; use one of {_MEL_SCALES}")


def mel_to_hz(mel: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Inverse of ``hz_to_mel``."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "slaney":
        f_sp, min_log_hz = 200.0 / 3.0, 1000.0
        min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
        return torch.where(
            mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel
        )
    raise ConfigError(f"unknown mel scale {scale!r}; use one of {_MEL_SCALES}")


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "htk",
    norm: str | None = None,
) -> torch.Tensor:
    """Triangular mel filters as an (n_freqs, n_mels) float32 matrix (``power @ fb`` gives mel energies).

    ``n_freqs`` is the number of STFT bins (n_fft // 2 + 1) spanning 0..sample_rate/2. The filter edges
    are ``n_mels + 2`` points equally spaced on the mel scale between ``f_min`` and ``f_max``; each
    filter rises linearly (in Hz) from its left edge to its centre and falls to its right edge.
    ``norm="slaney"`` scales each filter to unit area (2 / bandwidth), as librosa's default does.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_freqs < 2 or n_mels < 1:
        raise ConfigError(f"mel_filterbank: need n_freqs >= 2 and n_mels >= 1, got {n_freqs}, {n_mels}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ConfigError(
            f"mel_filterbank: need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}"
        )
    if norm not in (None, "slaney"):
        raise ConfigError(f"mel_filterbank: unknown norm {norm!r}; use None or 'slaney'")
    bins_hz = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    with torch.device("cpu"):  # float() needs real scalars, even under a torch.device("meta") context
        lo, hi = (float(hz_to_mel(torch.tensor(f), scale)) for f in (f_min, f_max))
    edges = mel_to_hz(torch.linspace(lo, hi, n_mels + 2, dtype=torch.float64), scale)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_hz[:, None] - left) / (centre - left)
    falling = (right - bins_hz[:, None]) / (right - centre)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (right - left))
    return fb.to(torch.float32)


class LogMel(nn.Module):
    """(B, T) waveforms -> (B, n_mels, frames) log-mel spectrograms; no parameters, deterministic.

    Frames are centred (``center=True``): frame k covers samples around ``k * hop_length``; the signal is
    padded by ``n_fft // 2`` at both ends with ``pad_mode`` ("constant" = zeros, which makes a clip's
    frames identical whether or not it is zero-padded behind its end; "reflect" as torch.stft does).
    ``log="ln"`` gives ``log(mel + eps)``, ``"log10"`` gives ``log10(mel + eps)``; ``power`` 2 uses the
    power spectrum, 1 the magnitude.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int | None = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        window: str = "hann",
        center: bool = True,
        pad_mode: str = "constant",
        power: float = 2.0,
        log: str = "ln",
        eps: float = 1e-6,
        mel_scale: str = "htk",
        mel_norm: str | None = None,
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft:
            raise ConfigError(f"LogMel: win_length must be in 1..n_fft ({n_fft}), got {win_length}")
        if hop_length < 1:
            raise ConfigError(f"LogMel: hop_length must be >= 1, got {hop_length}")
        if window != "hann":
            raise ConfigError(f"LogMel: unknown window {window!r}; only 'hann' is supported")
        if log not in ("ln", "log10"):
            raise ConfigError(f"LogMel: unknown log {log!r}; use 'ln' or 'log10'")
        if pad_mode not in ("constant", "reflect"):
            raise ConfigError(f"LogMel: unknown pad_mode {pad_mode!r}; use 'constant' or 'reflect'")
        self.sample_rate, self.n_fft, self.win_length = sample_rate, n_fft, win_length
        self.hop_length = hop_length
        self.n_mels, self.center, self.pad_mode, self.power = n_mels, center, pad_mode, power
        self.log, self.eps = log, eps
        # A periodic Hann window, centred in the n_fft frame (as torch.stft pads a shorter window).
        win = torch.hann_window(win_length, periodic=True)
        left = (n_fft - win_length) // 2
        win = nn.functional.pad(win, (left, n_fft - win_length - left))
        self.register_buffer("window", win, persistent=False)
        fb = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max, mel_scale, mel_norm)
        self.register_buffer("fb", fb, persistent=False)  # (n_freqs, n_mels)

    def frames_for(self, lengths: torch.Tensor | int) -> torch.Tensor:
        """Number of frames the front end produces for clips of ``lengths`` samples."""
        lengths = torch.as_tensor(lengths)
        if self.center:
            return 1 + torch.div(lengths, self.hop_length, rounding_mode="floor")
        return (1 + torch.div(lengths - self.n_fft, self.hop_length, rounding_mode="floor")).clamp(min=0)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
        x = waveform.float()
        if self.center:
            pad = self.n_fft // 2
            mode = self.pad_mode if x.shape[1] > pad else "constant"  # reflect needs more samples than pad
            x = nn.functional.pad(x.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)
        if x.shape[1] < self.n_fft:
            raise ValueError(f"LogMel: a waveform of {waveform.shape[1]} samples is shorter than n_fft")
        # Frames as a strided view, windowed (one copy), then a real FFT: faster on CPU than torch.stft.
        # Always float32: power spectra overflow float16 under autocast.
        with torch.autocast(x.device.type, enabled=False):
            frames = frame_signal(x, self.n_fft, self.hop_length) * self.window  # (B, frames, n_fft)
            power = rfft_power(frames)  # (B, frames, n_freqs)
            if self.power != 2.0:
                power = power.pow(self.power / 2.0)
            mel = torch.matmul(power, self.fb).transpose(1, 2)  # (B, n_mels, frames)
            return torch.log(mel + self.eps) if self.log == "ln" else torch.log10(mel + self.eps)


class SpecAugment(nn.Module):
    """Train-time masking of random frequency bands and time spans (per example); identity in eval mode.

    Masked cells are set to ``fill`` (0 = the mean after normalisation). Time masks fall inside each
    clip's valid frames when ``frame_lengths`` is given.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 8,
        time_masks: int = 2,
        time_width: int = 40,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.fill = time_masks, time_width, fill

    @staticmethod
    def _band(n: int, count: int, width: int, limit: torch.Tensor) -> torch.Tensor:
        """(B, n) bool: ``count`` random spans of up to ``width`` cells, each starting below ``limit``."""
        batch = limit.shape[0]
        if count <= 0 or width <= 0:
            return torch.zeros(batch, n, dtype=torch.bool, device=limit.device)
        widths = (torch.rand(batch, count, device=limit.device) * (width + 1)).floor()
        starts = (
            torch.rand(batch, count, device=limit.device) * (limit[:, None] - widths).clamp(min=0)
        ).floor()
        pos = torch.arange(n, device=limit.device)[None, None, :]
        return ((pos >= starts[..., None]) & (pos < (starts + widths)[..., None])).any(1)

    def forward(self, mel: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return mel
        batch, n_mels, n_frames = mel.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), n_frames, device=mel.device)
        freq = self._band(
            n_mels, self.freq_masks, self.freq_width, torch.full_like(frame_lengths, n_mels).float()
        )
        time = self._band(n_frames, self.time_masks, self.time_width, frame_lengths.float())
        cells = freq[:, :, None] | time[:, None, :]
        return mel.masked_fill(cells, self.fill)


class AudioFrontEnd(nn.Module):
    """Waveforms (+ lengths) -> normalised log-mel (B, n_mels, frames) and valid frame counts (B,).

    ``norm="utterance"``: subtract each clip's mean and divide by its standard deviation, both over its
    valid frames and all mel bins (removes gain, keeps spectral shape). ``"fixed"``: ``(x - mean) / std``
    with constants. ``"none"``: raw log-mel. Frames past a clip's length are set to 0, so padding
    behind a clip does not change its features. SpecAugment (when enabled) runs in training only.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 64,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        n_fft: int | None = None,
        f_min: float = 50.0,
        f_max: float | None = None,
        norm: str = "utterance",
        mean: float = 0.0,
        std: float = 1.0,
        spec_augment: bool | dict = False,
        **logmel_kwargs,
    ) -> None:
        super().__init__()
        if norm not in ("utterance", "fixed", "none"):
            raise ConfigError(f"AudioFrontEnd: unknown norm {norm!r}; use 'utterance', 'fixed' or 'none'")
        win = round(sample_rate * win_ms / 1000)
        hop = round(sample_rate * hop_ms / 1000)
        n_fft = n_fft or 1 << (win - 1).bit_length()  # next power of two
        self.logmel = LogMel(sample_rate, n_fft, win, hop, n_mels, f_min, f_max, **logmel_kwargs)
        self.norm, self.mean, self.std = norm, mean, std
        if spec_augment is True:
            spec_augment = {}
        self.spec_augment = SpecAugment(**spec_augment) if isinstance(spec_augment, dict) else None

    @property
    def n_mels(self) -> int:
        return self.logmel.n_mels

    @property
    def batch_invariant(self) -> bool:
        """Whether a clip's valid frames are the same zero-padded in a batch as alone (eval mode): true
        unless frames are centred with reflect padding, which reflects the clip's own end."""
        return not (self.logmel.center and self.logmel.pad_mode == "reflect")

    def frames_for(self, lengths: torch.Tensor | int) -> torch.Tensor:
        return self.logmel.frames_for(lengths)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.logmel(waveform)
        batch, _, n_frames = mel.shape
        if lengths is None:
            frames = torch.full((batch,), n_frames, dtype=torch.long, device=mel.device)
        else:
            lengths = torch.as_tensor(lengths, device=mel.device)
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            frames = self.frames_for(lengths.long()).clamp(1, n_frames)
        valid = time_mask(frames, n_frames)[:, None, :]  # (B, 1, F)
        ragged = bool((frames < n_frames).any())
        if self.norm == "utterance":
            if ragged:
                count = frames.to(mel.dtype)[:, None, None] * mel.shape[1]
                mu = (mel * valid).sum((1, 2), keepdim=True) / count
                var = ((mel - mu) * valid).square().sum((1, 2), keepdim=True) / count
            else:
                var, mu = torch.var_mean(mel, dim=(1, 2), keepdim=True, correction=0)
            mel = (mel - mu) * var.clamp(min=1e-10).rsqrt()
        elif self.norm == "fixed":
            mel = (mel - self.mean) / self.std
        if ragged:
            mel = mel.masked_fill(~valid, 0.0)
        if self.spec_augment is not None:
            mel = self.spec_augment(mel, frames)
        return mel, frames
