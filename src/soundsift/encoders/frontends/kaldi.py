"""The 128-bin Kaldi-style log-mel front end of PaSST and EfficientAT, in plain torch (no torchaudio).

Same computation as ``AugmentMelSTFT`` in hear21passt / EfficientAT (``models/preprocess.py``):

1. pre-emphasis ``y[n] = x[n+1] - 0.97 x[n]`` (a valid 2-tap convolution: one sample shorter);
2. ``torch.stft`` with ``n_fft=1024``, ``win_length=800`` (symmetric Hann, ``periodic=False``),
   ``hop_length=320``, ``center=True`` (reflect padding), power spectrum ``re^2 + im^2``;
3. Kaldi mel banks (``torchaudio.compliance.kaldi.get_mel_banks`` with no VTLN warping): mel scale
   ``1127 ln(1 + f/700)``, ``n_mels`` triangles evenly spaced in mel between ``fmin`` and ``fmax``,
   evaluated at the FFT bin frequencies ``k * sr / n_fft`` for ``k < n_fft/2``; the Nyquist bin gets a
   zero weight;
4. ``log(mel + 1e-5)``, then ``(x + 4.5) / 5``.

Defaults: 32 kHz, ``fmin=0``, ``fmax = sr/2 - fmax_aug_range/2 = 15000`` Hz. In training mode ``fmin``
is raised by ``randint(fmin_aug_range)`` Hz and ``fmax`` moved by ``fmax_aug_range/2 - randint(fmax_aug_range)``
Hz (one draw per batch, as the original), and optional frequency/time masking is applied to the log-mel
before normalisation; in eval mode the output is deterministic.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from soundsift.encoders.frontends.spectrum import stft_power
from soundsift.errors import ConfigError

LOG_OFFSET = 1e-5
NORM_SHIFT = 4.5
NORM_SCALE = 5.0


def kaldi_mel_scale(freq: torch.Tensor | float) -> torch.Tensor:
    """Kaldi's mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, fmin: float, fmax: float) -> torch.Tensor:
    """Triangular Kaldi mel filters as an ``(n_mels, n_fft // 2 + 1)`` float32 matrix.

    The triangles are linear in mel; the last column (Nyquist bin) is zero, as in the original
    front end which pads Kaldi's ``(n_mels, n_fft // 2)`` banks with a zero column.
    """
    nyquist = sample_rate / 2
    if fmax <= 0:
        fmax += nyquist
    if not (0 <= fmin < fmax <= nyquist):
        raise ConfigError(f"kaldi_mel_banks: need 0 <= fmin < fmax <= {nyquist}, got fmin={fmin}, fmax={fmax}")
    if n_fft % 2:
        raise ConfigError(f"kaldi_mel_banks: n_fft must be even, got {n_fft}")
    lo, hi = 1127.0 * math.log1p(fmin / 700.0), 1127.0 * math.log1p(fmax / 700.0)
    delta = (hi - lo) / (n_mels + 1)
    idx = torch.arange(n_mels, dtype=torch.float64)[:, None]
    left, centre, right = lo + idx * delta, lo + (idx + 1) * delta, lo + (idx + 2) * delta
    mel = kaldi_mel_scale(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[None, :]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return nn.functional.pad(banks, (0, 1)).to(torch.float32)


def n_frames(n_samples: int | torch.Tensor, hop_length: int) -> int | torch.Tensor:
    """Frames the front end yields for ``n_samples`` samples (pre-emphasis drops one, stft is centred)."""
    return 1 + (n_samples - 1) // hop_length


def _iid_mask(x: torch.Tensor, max_width: int, dim: int) -> torch.Tensor:
    """Zero one random band of width ``U[0, max_width)`` per example along ``dim`` (1 = freq, 2 = time)."""
    size = x.shape[dim]
    width = (torch.rand(x.shape[0], device=x.device) * min(max_width, size)).long()
    start = (torch.rand(x.shape[0], device=x.device) * (size - width)).long()
    pos = torch.arange(size, device=x.device)[None, :]
    band = (pos >= start[:, None]) & (pos < (start + width)[:, None])
    band = band[:, :, None] if dim == 1 else band[:, None, :]
    return x.masked_fill(band, 0.0)


class KaldiLogMel(nn.Module):
    """``(B, T)`` waveforms -> ``(B, n_mels, 1 + (T - 1) // hop_length)`` normalised log-mel spectrograms."""

    def __init__(
        self,
        n_mels: int = 128,
        sample_rate: int = 32000,
        win_length: int = 800,
        hop_length: int = 320,
        n_fft: int = 1024,
        fmin: float = 0.0,
        fmax: float | None = None,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
        freqm: int = 0,
        timem: int = 0,
        preemphasis: float = 0.97,
    ) -> None:
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ConfigError("fmin_aug_range and fmax_aug_range must be >= 1 (1 means no augmentation)")
        self.n_mels, self.sample_rate, self.n_fft = n_mels, sample_rate, n_fft
        self.win_length, self.hop_length = win_length, hop_length
        self.fmin = float(fmin)
        self.fmax = float(sample_rate // 2 - fmax_aug_range // 2 if fmax is None else fmax)
        self.fmin_aug_range, self.fmax_aug_range = fmin_aug_range, fmax_aug_range
        self.freqm, self.timem = freqm, timem
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-preemphasis, 1.0]]]), persistent=False)
        banks = kaldi_mel_banks(n_mels, n_fft, sample_rate, self.fmin, self.fmax)
        self.register_buffer("mel_banks", banks, persistent=False)

    def _banks(self, device: torch.device) -> torch.Tensor:
        if not self.training or (self.fmin_aug_range == 1 and self.fmax_aug_range == 1):
            return self.mel_banks
        fmin = self.fmin + int(torch.randint(self.fmin_aug_range, (1,)))
        fmax = self.fmax + self.fmax_aug_range // 2 - int(torch.randint(self.fmax_aug_range, (1,)))
        fmax = min(fmax, self.sample_rate / 2)
        return kaldi_mel_banks(self.n_mels, self.n_fft, self.sample_rate, fmin, fmax).to(device)

    @property
    def min_samples(self) -> int:
        """Shorter inputs are zero-padded to this length first: reflect padding needs more than n_fft // 2."""
        return self.n_fft // 2 + 2

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"KaldiLogMel expects (batch, samples), got shape {tuple(waveform.shape)}")
        x = waveform.float()
        if x.shape[1] < self.min_samples:
            x = nn.functional.pad(x, (0, self.min_samples - x.shape[1]))
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = nn.functional.conv1d(x.unsqueeze(1), self.preemphasis).squeeze(1)
            power = stft_power(x, self.n_fft, self.hop_length, self.window, self.win_length)
            mel = torch.matmul(self._banks(x.device), power)
            mel = torch.log(mel + LOG_OFFSET)
        if self.training and self.freqm:
            mel = _iid_mask(mel, self.freqm, dim=1)
        if self.training and self.timem:
            mel = _iid_mask(mel, self.timem, dim=2)
        return (mel + NORM_SHIFT) / NORM_SCALE

    def extra_repr(self) -> str:
        return (
            f"n_mels={self.n_mels}, sample_rate={self.sample_rate}, n_fft={self.n_fft}, "
            f"win_length={self.win_length}, hop_length={self.hop_length}, fmin={self.fmin}, fmax={self.fmax}"
        )
