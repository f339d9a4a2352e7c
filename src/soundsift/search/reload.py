"""A server's view of an index that moves on: ``LiveSearcher.current()`` is the searcher of the live
version, switched to a new one when ``CURRENT`` names another version (looked at most every ``interval``
seconds). A request takes ``current()`` once and keeps it to the end, so it never sees two versions;
segments already open are reused (they never change), so a switch costs the new segments only. If the
new version cannot be opened (a build that cleaned it up at that moment, say), the old one keeps serving
and the switch is tried again later.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from soundsift.errors import SoundsiftError
from soundsift.search.index import TextSearcher
from soundsift.search.index_types import POINTER


class LiveSearcher:
    """The searcher of the index's live version (see the module docstring)."""

    def __init__(self, searcher: TextSearcher, backend: str = "auto", interval: float = 0.5) -> None:
        self._searcher, self.backend, self.interval = searcher, backend, interval
        self.path = Path(searcher.index.path)
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._segments = {s.name: s for s in searcher.index.segments if s.name}
        self.reloads = 0

    def _live_name(self) -> str:
        try:
            return (self.path / POINTER).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def current(self) -> TextSearcher:
        """The searcher of the newest version seen (opened here if ``CURRENT`` moved on)."""
        if time.monotonic() - self._checked < self.interval:
            return self._searcher
        with self._lock:
            if time.monotonic() - self._checked < self.interval:
                return self._searcher
            self._checked = time.monotonic()
            name = self._live_name()
            if name and name != self._searcher.index.version_dir.name:
                self._switch()
            return self._searcher

    def _switch(self) -> None:
        from soundsift.search.reader import read_live
        from soundsift.search.sound_index import SoundIndex

        old = self._searcher
        try:
            live = read_live(self.path, segments=self._segments)
            searcher = TextSearcher(SoundIndex(live, self.backend), old.model)
        except (SoundsiftError, OSError, ValueError) as exc:
            print(f"index {self.path}: keeping version {old.index.version_dir.name}: cannot open the new one "
                  f"({exc}); trying again", file=sys.stderr)
            return
        searcher._cache, searcher._lock = old._cache, old._lock  # the same model: its text embeddings stay
        # valid; one lock, as requests still on the old searcher use the same cache
        self._segments = {s.name: s for s in live.segments if s.name}
        self._searcher = searcher
        self.reloads += 1
