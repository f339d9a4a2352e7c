"""Searching an index from Python as ``soundsift search`` does (``soundsift.open_index``).

``open_index(path)`` gives an ``Index``: the live version of an index (``search.index.SoundIndex``) and
the model that built it, loaded on the first query. ``Index.search(text=..., like=..., k=...)`` ranks
the indexed files by a text query, an example sound (a file, embedded with the index's model, or the id
of an indexed sound), or both combined, and returns ``Hit`` records (rank, id, path, score, duration).
An indexed example is left out of its own results, as with ``search --like FILE`` and the server's
``like=ID``. Indexes are built with ``search.build.build_index`` (``soundsift.build_index``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from soundsift.errors import ConfigError
from soundsift.search.index import Hit, SoundIndex, TextSearcher, resolve_model_path
from soundsift.search.index import open_index as open_sound_index
from soundsift.search.moments import parse_moment_spec


class Index:
    """An opened index and (once a query needs it) its model; see the module docstring."""

    def __init__(self, index: SoundIndex, model: Any = None, device: str = "cpu", runtime: str | None = None) -> None:
        self.index = index
        self._model, self._device, self._runtime = model, device, runtime
        self._searcher: TextSearcher | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def path(self) -> Path:
        return self.index.path

    @property
    def searcher(self) -> TextSearcher:
        """The index with its model, loaded on first use (refused when it is not the one that built it)."""
        if self._searcher is None:
            model = self._model
            if model is None or isinstance(model, (str, Path, list, tuple)):  # a path, name or list of them
                from soundsift.checkpoints.runtime import load_index_model

                model = load_index_model(resolve_model_path(self.index, model), self.index.manifest,
                                         self._runtime, self._device)
            self._searcher = TextSearcher(self.index, model)
        return self._searcher

    @property
    def model(self) -> Any:
        """The model that built the index (``DualEncoder`` or ``ModelEnsemble``)."""
        return self.searcher.model

    def search(self, text: str | None = None, like: str | Path | int | None = None, k: int = 10,
               rank: str = "moments", moments: int | None = None, where: str | None = None) -> list[Hit]:
        """The ``k`` best files for ``text``, an example sound ``like`` (an audio file, a moment of one as
        ``"FILE@START-END"`` seconds, or the id of an indexed sound), or both; best first, each with its
        best moment (``Hit.start``/``end``). ``rank``: "moments" (files by their best moment) or "files"
        (by whole-file embedding); ``moments``: up to N moments per hit (``Hit.moments``); ``where``: a
        filter every result matches (``search.where``, e.g. ``"duration < 5 and path ~ 'foley/'"``). An
        indexed example's file is never among its own results; of an example moment (``FILE@START-END``)
        only the windows overlapping it are left out, so its recording's other moments may answer."""
        if text is None and like is None:
            raise ConfigError("give a text query, an example sound (like=FILE or an indexed id), or both")
        if where is not None:
            from soundsift.search.where import parse_where

            where = parse_where(where)  # a malformed filter fails before the model loads
        vector = exclude = span = None
        if isinstance(like, int):
            vector, exclude = self.index.vector(like), like
        elif like is not None:
            from soundsift.audio import audio_file_path

            file, start, end = parse_moment_spec(like)
            audio_file_path(file)  # a typo fails before the model loads
            vector, exclude = self.searcher.embed_file(like), self.index.find_file(file)
            if start is not None and end is not None:
                span = (start, end)  # a moment: the rest of its recording may still answer
        return self.searcher.search(text, k, like=vector, exclude=exclude, rank=rank, moments=moments, where=where,
                                    exclude_span=span)


def open_index(path: str | Path, model: Any = None, backend: str = "auto", device: str = "cpu",
               runtime: str | None = None) -> Index:
    """Open the index at ``path`` for searching. ``model``: the one recorded at build (default), a model
    file, a published name, a list of those (an ensemble), or a loaded model; it must be the model
    that built the index. ``backend`` as in ``search.index.open_index``; ``runtime``: ``"torch"`` or
    ``"onnx"`` (default: the one the index was built with)."""
    return Index(open_sound_index(path, backend=backend), model, device, runtime)
