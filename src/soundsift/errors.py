"""One error policy: every error that means "bad input" derives from :class:`SoundsiftError`.

The CLI prints a ``SoundsiftError`` (and a missing file) as one line naming the file or value at fault
and exits with status 2; any other exception is a bug and keeps its traceback (``--debug`` always shows
it). Built-in types are mixed in where callers already catch them (``ValueError``, ``KeyError``,
``RuntimeError``). This module imports nothing from soundsift, so every module may import it.
"""

from __future__ import annotations


class SoundsiftError(Exception):
    """Base of every soundsift error: the message names the file, key or value at fault."""


class ConfigError(SoundsiftError, ValueError):
    """A config file, override or option value is malformed; the message names the key."""


class UnknownNameError(ConfigError, KeyError):
    """A name missing from a registry (encoder, reader, backend...); the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CaptionError(SoundsiftError, ValueError):
    """A caption cannot be embedded: empty, or empty once the text encoder has normalised it. ``text``
    and ``problem`` let callers name it as what the user typed (a search query, a label)."""

    def __init__(self, index: int, text: object, problem: str) -> None:
        super().__init__(f"caption {index} {problem}: {text!r}")
        self.index, self.text, self.problem = index, text, problem

    def __reduce__(self):  # picklable despite the three arguments
        return type(self), (self.index, self.text, self.problem)

    def as_input(self, what: str, name: object = None) -> ConfigError:
        """The same problem as a ConfigError naming the caption as the user gave it: ``what`` ("search
        query", "label") and ``name`` (default: the caption itself)."""
        return ConfigError(f"{what} {self.text if name is None else name!r} {self.problem}")


class AudioError(SoundsiftError):
    """An audio file is missing, unreadable or empty; the message names the file."""


class DatasetError(SoundsiftError, ValueError):
    """A dataset file is malformed; the message names the file (and row, where there is one)."""


class ModelFileError(SoundsiftError, ValueError):
    """A model file is missing, not a soundsift model, or from an incompatible version."""


class StateDictError(SoundsiftError, RuntimeError):
    """A state dict does not fit a module; the message lists the missing/unexpected/mismatched keys."""


class DownloadError(SoundsiftError, RuntimeError):
    """A download or extraction failed; the message names the URL or file and what to do instead.

    ``option``: the encoder option that points at a local copy instead (``checkpoint``, ``model``); the
    message then says ``pass OPTION=...``, which DualEncoder turns into the full config key.
    """

    option: str | None = None


class WeightsUnavailableError(DownloadError, OSError):
    """Pretrained weights could not be fetched or read (offline, say); the message names the local option."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the expected one; the message names the file and both digests."""


class TeacherFileError(SoundsiftError, ValueError):
    """A teacher embedding file is missing, malformed or of another format version."""


class AlignmentError(SoundsiftError, ValueError):
    """Teacher embeddings do not line up with the training split (other clips or captions)."""


class SearchIndexError(SoundsiftError, ValueError):
    """A search index is missing, malformed, or does not fit the request."""


class ModelMismatchError(SearchIndexError):
    """The model given for a search is not the one that built the index."""


class BundleError(SoundsiftError, ValueError):
    """A TensorFlow tensor bundle (YAMNet's weights) is unreadable."""


class MissingDependencyError(SoundsiftError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class ComparisonError(SoundsiftError, ValueError):
    """Two results cannot be compared (other queries, no per-query results); the message names them."""


def require(module: str, install: str, purpose: str):
    """Import ``module``, or raise MissingDependencyError saying ``purpose`` needs ``install``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{purpose} needs {install}") from exc


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words: torch's own message also
    suggests turning ``weights_only`` off, which soundsift never advises (it would run the file's code)."""
    import re

    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Check the documentation|$)", text, re.S)
    reason = found.group(1) if found else (text.splitlines()[0] if text.strip() else type(exc).__name__)
    return " ".join(reason.split())


def check_format(doc: object, source: object, tag: str, version: int, error: type[SoundsiftError], what: str,
                 hint: str = "") -> dict:
    """``doc`` when it is a mapping with ``format == tag`` and ``version == version``; otherwise
    ``error`` naming ``source`` and what it is not (``what``: "soundsift model file", ...)."""
    if not isinstance(doc, dict) or doc.get("format") != tag:
        raise error(f"{source}: not a {what} (no '{tag}' format tag)")
    if doc.get("version") != version:
        written = doc.get("soundsift_version")
        by = f"; it was written by soundsift {written}" if written else ""
        raise error(f"{source}: {what} format version {doc.get('version')} is not supported by this soundsift "
                    f"(expects {version}){by}{hint}")
    return doc


class ExportError(SoundsiftError, ValueError):
    """A model that cannot be exported, or an exported folder that cannot be used (``soundsift.export``)."""
