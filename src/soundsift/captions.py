"""Caption normalisation as the paper's reference code does it (lower-cased, ASCII punctuation removed),
shared by the torch text encoders and the ONNX runtime (this module imports neither)."""

from __future__ import annotations

import string
from collections.abc import Sequence

from soundsift.errors import CaptionError

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise_caption(text: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """Lower-case and remove ASCII punctuation (``string.punctuation``), like the reference code."""
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = text.translate(_PUNCTUATION)
    return text


def normalise_captions(texts: Sequence[str], lowercase: bool = True, strip_punctuation: bool = True) -> list[str]:
    """Normalise captions; raises CaptionError (a ValueError) naming the index of an empty caption (or
    one empty once normalised), TypeError for a single string, ValueError for a non-string."""
    if isinstance(texts, str):
        raise TypeError("expected a list of captions, got a single string")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"caption {i} is not a string: {text!r}")
        if not text.strip():
            raise CaptionError(i, text, "is empty or whitespace only")
        norm = normalise_caption(text, lowercase, strip_punctuation)
        if not norm.strip():
            raise CaptionError(i, text, "is empty after normalisation (punctuation only)")
        out.append(norm)
    return out
