"""Ogg audio named ``.oga`` (the extension of freedesktop sound themes: /usr/share/sounds/*/stereo/*.oga)
is read and indexed like ``.ogg``; found by benchmarks/generalise.py, whose desktop themes are .oga."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from soundsift.audio import AUDIO_EXTENSIONS, load_audio
from soundsift.search.scan import scan_audio_files


def test_oga_files_are_scanned_and_decoded(tmp_path):
    t = np.arange(8000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(str(tmp_path / "bell.oga"), tone, 16000, format="OGG", subtype="VORBIS")
    sf.write(str(tmp_path / "bell.ogg"), tone, 16000, format="OGG", subtype="VORBIS")
    assert ".oga" in AUDIO_EXTENSIONS
    found = sorted(rel for rel, stat in scan_audio_files(tmp_path))
    assert found == ["bell.oga", "bell.ogg"]
    np.testing.assert_array_equal(load_audio(tmp_path / "bell.oga", 16000), load_audio(tmp_path / "bell.ogg", 16000))
