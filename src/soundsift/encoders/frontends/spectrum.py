"""Power spectra that also export to ONNX.

``torch.fft.rfft`` and complex ``torch.stft`` have no ONNX export (TorchScript exporter, opset 17): while
``torch.onnx.is_in_onnx_export()`` these functions compute the same real DFT as a matrix product with
cosine and sine tables (exact up to float rounding), and the FFT otherwise, so training and torch
inference keep their speed and numerics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dft_tables(n_fft: int, n_in: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_in, 2 * (n_fft // 2 + 1)) cosine and (negated) sine tables of the real DFT of ``n_fft`` points,
    for frames of ``n_in <= n_fft`` samples (zero-padded to ``n_fft``, as ``rfft(x, n=n_fft)`` does)."""
    n_in = n_fft if n_in is None else n_in
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[None, :]
    angle = 2.0 * math.pi * ((n * k) % n_fft) / n_fft
    return torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1).to(dtype)


def frame_signal(x: torch.Tensor, size: int, step: int) -> torch.Tensor:
    """``x.unfold(-1, size, step)``: (..., T) -> (..., frames, size). While exporting, a gather with an
    index computed from the traced length (``unfold`` exports only at a fixed length)."""
    if not torch.onnx.is_in_onnx_export():
        return x.unfold(-1, size, step)
    count = torch.div(x.shape[-1] - size, step, rounding_mode="floor") + 1
    index = torch.arange(count, device=x.device)[:, None] * step + torch.arange(size, device=x.device)[None, :]
    return x[..., index]


def rfft_power(frames: torch.Tensor, n_fft: int | None = None) -> torch.Tensor:
    """``|rfft(frames, n=n_fft)|**2`` over the last axis (frames zero-padded or cut to ``n_fft``)."""
    n_fft = frames.shape[-1] if n_fft is None else n_fft
    if not torch.onnx.is_in_onnx_export():
        spec = torch.fft.rfft(frames, n=n_fft)
        return spec.real.square() + spec.imag.square()
    n_in = min(frames.shape[-1], n_fft)
    # in float64: a float32 sum of n_fft products loses the quiet bins that a log-mel then magnifies
    both = frames[..., :n_in].double() @ dft_tables(n_fft, n_in, torch.float64).to(frames.device)
    half = n_fft // 2 + 1
    return (both[..., :half].square() + both[..., half:].square()).to(frames.dtype)


def stft_power(x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor,
               win_length: int | None = None, center: bool = True) -> torch.Tensor:
    """``|torch.stft(x, n_fft, hop_length, win_length, window, center, pad_mode="reflect")|**2``:
    (B, n_fft // 2 + 1, frames) for (B, T) waveforms, as torch.stft lays it out."""
    if not torch.onnx.is_in_onnx_export():
        spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=win_length, window=window,
                          center=center, normalized=False, return_complex=True)
        return spec.real.square() + spec.imag.square()
    win_length = n_fft if win_length is None else win_length
    if center:
        x = F.pad(x.unsqueeze(1), (n_fft // 2, n_fft // 2), mode="reflect").squeeze(1)
    left = (n_fft - win_length) // 2  # torch.stft centres a shorter window in the frame
    full = F.pad(window, (left, n_fft - win_length - left))
    frames = frame_signal(x, n_fft, hop_length) * full
    return rfft_power(frames, n_fft).transpose(-1, -2)
