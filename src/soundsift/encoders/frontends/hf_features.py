"""The transformers feature extractors of CLAP and AST, re-implemented in torch so they export to ONNX.

``ClapFeatures`` computes what ``ClapFeatureExtractor`` gives a window of at most ``nb_max_samples``
samples: the window padded as the extractor pads it (``repeatpad``: the clip tiled a whole number of
times, then zeros; ``repeat``: tiled and cut; ``pad``: zeros), a centred STFT (reflect padding, periodic
Hann window of ``fft_window_size``, hop ``hop_length``), the power spectrum through the extractor's
own mel filters (Slaney for ``rand_trunc`` checkpoints, HTK for ``fusion`` ones), floored at 1e-10,
in dB (``10 log10``). ``AstFeatures`` computes ``ASTFeatureExtractor``'s numpy path: Kaldi-style
frames of 400 samples every 160 (no centring), each frame's DC offset removed, pre-emphasis 0.97 inside
the frame, a symmetric Hann window, a 512-point power spectrum through its Kaldi mel filters, floored
at float32's epsilon, natural log; frames past the window's real samples are zeros up to
``max_length`` frames, then ``(x - mean) / (2 std)``.

Both take fixed-size pieces ``(N, window)`` (zeros past each piece's real samples) and ``valid (N,)``,
the real samples of each piece, and follow ``_WindowedHFEncoder``'s rule that a piece shorter than
``min_samples`` is zero-padded to it. The spectra are computed in float64 as the extractors do, by a
real DFT as a matrix product while exporting (``spectrum.rfft_power``). The filters and windows are
taken from the extractor object itself, so these modules follow its configuration exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soundsift.encoders.frontends.spectrum import frame_signal, rfft_power

#: ``spectrogram``'s floors: the mel floor and ``power_to_db``'s minimum (CLAP); float32 eps (AST)
CLAP_FLOOR = 1e-10
AST_FLOOR = 1.192092955078125e-07


def _real_samples(valid: torch.Tensor, min_samples: int, window: int) -> torch.Tensor:
    """Samples the extractor sees per piece: its real ones, at least ``min_samples`` (zero-padded)."""
    return valid.long().clamp(min=min_samples, max=window)


class ClapFeatures(nn.Module):
    """``(pieces (N, W), valid (N,))`` -> ``ClapFeatureExtractor``'s ``input_features`` ``(N, 1, frames,
    n_mels)`` float32 (one channel: the one a fusion model reads when no window is "longer")."""

    def __init__(self, extractor: Any, truncation: str, padding: str, min_samples: int) -> None:
        super().__init__()
        if padding not in ("repeatpad", "repeat", "pad"):
            raise ValueError(f"ClapFeatures: unknown padding {padding!r}")
        self.window, self.n_fft = int(extractor.nb_max_samples), int(extractor.fft_window_size)
        self.hop, self.padding, self.min_samples = int(extractor.hop_length), padding, int(min_samples)
        filters = extractor.mel_filters if truncation == "fusion" else extractor.mel_filters_slaney
        from transformers.audio_utils import window_function

        self.register_buffer("hann", torch.from_numpy(window_function(self.n_fft, "hann")).double(), persistent=False)
        self.register_buffer("filters", torch.from_numpy(np.asarray(filters, np.float64)), persistent=False)

    def pad(self, pieces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The extractor's padding of each piece's real samples to the full window."""
        n = _real_samples(valid, self.min_samples, self.window)[:, None]
        j = torch.arange(self.window, device=pieces.device)[None, :]
        if self.padding == "pad":
            return pieces * (j < n)
        source = torch.remainder(j, n)  # tile the real samples...
        tiled = torch.gather(pieces, 1, source)
        if self.padding == "repeat":
            return tiled
        return tiled * (j < torch.div(self.window, n, rounding_mode="floor") * n)  # ...a whole number of times

    def forward(self, pieces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.pad(pieces.double(), valid)
        half = self.n_fft // 2
        x = F.pad(x.unsqueeze(1), (half, half), mode="reflect").squeeze(1)
        power = rfft_power(frame_signal(x, self.n_fft, self.hop) * self.hann, self.n_fft)
        mel = torch.clamp(power @ self.filters, min=CLAP_FLOOR)
        return (10.0 * torch.log10(mel)).float().unsqueeze(1)


class AstFeatures(nn.Module):
    """``(pieces (N, W), valid (N,))`` -> ``ASTFeatureExtractor``'s ``input_values`` ``(N, max_length,
    n_mels)`` float32."""

    FRAME, HOP, N_FFT, PREEMPHASIS = 400, 160, 512, 0.97

    def __init__(self, extractor: Any, window: int, min_samples: int) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank, window_function

        self.window, self.min_samples = int(window), int(min_samples)
        self.max_length, self.normalize = int(extractor.max_length), bool(extractor.do_normalize)
        self.mean, self.std = float(extractor.mean), float(extractor.std)
        filters = getattr(extractor, "mel_filters", None)  # absent when torchaudio is installed
        if filters is None:
            filters = mel_filter_bank(num_frequency_bins=self.N_FFT // 2 + 1, num_mel_filters=extractor.num_mel_bins,
                                      min_frequency=20, max_frequency=extractor.sampling_rate // 2,
                                      sampling_rate=extractor.sampling_rate, norm=None, mel_scale="kaldi",
                                      triangularize_in_mel_space=True)
        hann = window_function(self.FRAME, "hann", periodic=False)
        self.register_buffer("hann", torch.from_numpy(hann).double(), persistent=False)
        self.register_buffer("filters", torch.from_numpy(np.asarray(filters, np.float64)), persistent=False)

    def forward(self, pieces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        frames = frame_signal(pieces.double(), self.FRAME, self.HOP)  # (N, frames, 400)
        frames = frames - frames.mean(-1, keepdim=True)
        frames = torch.cat([frames[..., :1] * (1 - self.PREEMPHASIS),
                            frames[..., 1:] - self.PREEMPHASIS * frames[..., :-1]], dim=-1)
        power = rfft_power(frames * self.hann, self.N_FFT)
        fbank = torch.log(torch.clamp(power @ self.filters, min=AST_FLOOR)).float()
        count = frames.shape[1]
        if count < self.max_length:
            fbank = F.pad(fbank, (0, 0, 0, self.max_length - count))
        fbank = fbank[:, : self.max_length]
        real = 1 + torch.div(_real_samples(valid, self.min_samples, self.window) - self.FRAME, self.HOP,
                             rounding_mode="floor")
        fbank = fbank * (torch.arange(self.max_length, device=fbank.device)[None, :] < real[:, None])[..., None]
        return (fbank - self.mean) / (self.std * 2) if self.normalize else fbank
