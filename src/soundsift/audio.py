"""Audio file loading: any format soundfile reads, mixed to mono, resampled with soxr."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soundsift.errors import AudioError

#: The audio files soundsift reads (soundfile/libsndfile), with the media type a browser plays them as.
AUDIO_MEDIA_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
}
AUDIO_EXTENSIONS = tuple(AUDIO_MEDIA_TYPES)
#: Extra output samples read on each side of a resampled window, past soxr's filter support.
_RESAMPLE_MARGIN = 1024


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate`` Hz.

    Raises AudioError naming the file when it is missing, unreadable or holds no samples.
    """
    mono, rate = read_audio(path)
    return resample_audio(mono, rate, sample_rate)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` to mono float32 at its own rate: (samples, rate); AudioError as ``load_audio``."""
    import soundfile as sf

    path = audio_file_path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    return _mono(data, path), int(sr)


def resample_audio(mono: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """Mono samples at ``rate`` -> contiguous float32 at ``sample_rate`` (soxr)."""
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)


def as_waveforms(audio, sample_rate: int) -> list[np.ndarray]:
    """What ``embed_audio`` takes, as mono float32 waveforms at ``sample_rate``: file paths (loaded with
    ``load_audio``) and/or waveforms already at that rate (NumPy arrays or tensors), mixed freely. One
    path or one 1-D waveform is a list of one; a 2-D array is a batch of rows."""
    if isinstance(audio, (str, Path)) or getattr(audio, "ndim", None) == 1:
        audio = [audio]
    out = []
    for i, item in enumerate(audio):
        if isinstance(item, (str, Path)):
            out.append(load_audio(item, sample_rate))
            continue
        wave = np.asarray(item.detach().cpu() if hasattr(item, "detach") else item, dtype=np.float32)
        if wave.ndim != 1 or not wave.size:
            raise ValueError(f"audio item {i}: expected a file path or a non-empty mono (1-D) waveform, "
                             f"got shape {wave.shape}")
        out.append(wave)
    return out


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: frames and rate as stored, and the channel count."""

    frames: int
    samplerate: int
    channels: int

    def length_at(self, sample_rate: int) -> int:
        """Samples ``load_audio(path, sample_rate)`` returns (soxr's output length: frames x ratio, rounded)."""
        return resampled_length(self.frames, self.samplerate, sample_rate)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    """Length of ``soxr.resample`` output for ``frames`` input samples: floor(frames * out / in + 1/2)."""
    if rate_in == rate_out:
        return frames
    return (2 * frames * rate_out + rate_in) // (2 * rate_in)


def audio_info(path: str | Path) -> AudioInfo:
    """Read only the header of ``path`` (about 100x cheaper than decoding it).

    Raises AudioError naming the file when it is missing, its header is unreadable or it holds no
    frames; a file that passes may still fail to decode (corrupt data after a valid header).
    """
    import soundfile as sf

    path = audio_file_path(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if info.frames <= 0:
        raise AudioError(f"{path}: contains no audio samples")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def audio_file_path(path: str | Path) -> Path:
    """``path`` as a Path; AudioError naming it when it is a directory or does not exist (checked by
    the loaders, and by commands before they load a model)."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, expected an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    return path


def _mono(data: np.ndarray, path: Path) -> np.ndarray:
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return mono


def load_audio_window(path: str | Path, sample_rate: int, start: int, length: int) -> np.ndarray:
    """Samples ``[start, start + length)`` of ``load_audio(path, sample_rate)``, reading only those frames.

    ``start`` and ``length`` count samples at ``sample_rate``. The file is read over a slightly wider
    window aligned to the resampling ratio's period and the result trimmed, so it equals the slice of
    the fully decoded waveform to float rounding (about 1e-6), edges included. Shorter than ``length``
    only where the clip ends first. Raises AudioError naming the file, like ``load_audio``.
    """
    import soundfile as sf

    if start < 0 or length < 0:
        raise ValueError(f"audio window must have start >= 0 and length >= 0, got {start}, {length}")
    path = audio_file_path(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate, total = int(f.samplerate), int(f.frames)
            if rate == sample_rate:
                first, last, offset = start, min(total, start + length), 0
            else:
                g = math.gcd(rate, sample_rate)
                period_in, period_out = rate // g, sample_rate // g
                margin = _RESAMPLE_MARGIN * -(-sample_rate // rate)  # output samples; more when upsampling
                block = max(0, start - margin) // period_out  # whole periods, so the filter phase matches
                first, offset = block * period_in, start - block * period_out
                stop_out = start + length + margin
                last = min(total, -(-stop_out * period_in // period_out) + period_in)
            if last <= first:
                raise AudioError(f"{path}: audio window starts at {start} beyond the clip's end")
            f.seek(first)
            data = f.read(last - first, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    mono = _mono(data, path)
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32, copy=False)[offset : offset + length]
    return np.ascontiguousarray(mono, dtype=np.float32)
