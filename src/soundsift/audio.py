"""Audio file loading: any format soundfile reads, mixed to mono, resampled with soxr."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from soundsift.errors import AudioError

#: The audio files soundsift reads (soundfile/libsndfile), with the media type a browser plays them as.
AUDIO_MEDIA_TYPES = {
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".opus": "audio/ogg",
    ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff",
}
AUDIO_EXTENSIONS = tuple(AUDIO_MEDIA_TYPES)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate`` Hz.

    Raises AudioError naming the file when it is missing, unreadable or holds no samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types (LibsndfileError, RuntimeError, TypeError)
        raise AudioError(f"{path}: cannot decode audio ({exc})") from exc
    if data.size == 0:
        raise AudioError(f"{path}: contains no audio samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if sr != sample_rate:
        import soxr

        mono = soxr.resample(mono, sr, sample_rate).astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)
