"""Pretrained checkpoints: one description per checkpoint, one load path, key-checked loading.

- ``PretrainedWeights``: where one checkpoint lives (URL, cache file name, checksum) and how its keys
  map onto our module (rename rules or a converter, keys to ignore), as timm's pretrained configs.
  Each encoder family declares its own next to its geometry; ``load_pretrained_weights`` loads any.

- ``download_checkpoint``: a local file, a cached file, or a download (``soundsift.downloader.download_file``:
  timeouts, retries, resume via HTTP Range into ``<name>.part``, checksum, atomic rename, progress bar)
  under a file lock. The cache lives in ``$SOUNDSIFT_CACHE`` or ``~/.cache/soundsift/checkpoints``.
- ``read_checkpoint``: ``torch.load(weights_only=True)`` plus unwrapping of common containers.
- ``strip_prefix`` / ``map_keys``: rename checkpoint keys to a module's layout.
- ``load_state_dict_checked``: compare keys and shapes, ignore only what the caller names (classifier
  heads, say), and fail with the offending keys listed instead of loading half a model silently.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from soundsift.downloader import checksum_mismatch, download_file, file_digest, file_lock
from soundsift.errors import ChecksumError, ConfigError, DownloadError, StateDictError, load_failure

log = logging.getLogger(__name__)

CACHE_ENV = "SOUNDSIFT_CACHE"
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights", "params")
Pattern = str | re.Pattern


def default_cache_dir() -> Path:
    """``$SOUNDSIFT_CACHE`` if set, else ``~/.cache/soundsift/checkpoints``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "soundsift" / "checkpoints"


def resolve_pretrained(
    name: str, size: str, pretrained: bool | None, checkpoint: str | Path | None
) -> bool:
    """Whether an encoder with published weights loads them: checks ``size`` ("full" or "tiny") and
    defaults ``pretrained`` to True for a full-size model without a local ``checkpoint``."""
    if size not in ("full", "tiny"):
        raise ConfigError(f"{name} size must be 'full' or 'tiny', got {size!r}")
    pretrained = (size == "full" and checkpoint is None) if pretrained is None else pretrained
    if pretrained and checkpoint is None and size == "tiny":
        raise ConfigError(
            f"{name} size='tiny' has no published weights; use pretrained=False (or checkpoint=PATH)"
        )
    return pretrained


def _verify(path: Path, sha256: str | None, md5: str | None, source: str) -> None:
    if bad := checksum_mismatch(path, md5=md5, sha256=sha256):
        raise ChecksumError(f"{path} (from {source}): {bad}")


def filename_from_url(url: str) -> str:
    """The file name at the end of ``url``'s path (percent-decoded)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise ConfigError(f"cannot derive a file name from URL {url!r}; pass filename=")
    return name


def download_checkpoint(
    url: str,
    filename: str | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    cache_dir: str | Path | None = None,
    local_path: str | Path | None = None,
    progress: bool = True,
    *,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 1.0,
    hint: str | None = None,
) -> Path:
    """Return a verified local copy of the checkpoint at ``url``.

    ``local_path`` wins when given (it must exist; checked against the checksum when one is known).
    Otherwise the file ``cache_dir/filename`` is used when present and valid, else downloaded: into
    ``filename.part`` (resumed with an HTTP Range request after a dropped connection, up to ``retries``
    attempts in a row without progress, with exponential ``backoff`` seconds), checked, then renamed into place atomically. A file
    that fails its checksum is deleted and ``ChecksumError`` raised. Without a known checksum the
    downloaded file's sha256 is logged so that it can be pinned. ``hint`` ends a failed download's message
    (what to do instead); by default it says to pass ``checkpoint=PATH`` (an encoder option).
    """
    if local_path is not None:
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} does not exist (the local copy of {url})")
        _verify(path, sha256, md5, source=str(path))
        return path

    target_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target_dir / (filename or filename_from_url(url))
    if target.is_file():
        try:
            _verify(target, sha256, md5, source=url)
            return target
        except ChecksumError as exc:
            log.warning("cached checkpoint is corrupt, downloading again: %s", exc)
            target.unlink()

    target_dir.mkdir(parents=True, exist_ok=True)
    with _lock(target):  # several processes (e.g. DDP ranks) may ask for the same file at once
        if target.is_file():  # another process finished it while we waited
            _verify(target, sha256, md5, source=url)
            return target
        try:
            download_file(
                url,
                target,
                md5,
                timeout=timeout,
                retries=max(1, retries) - 1,  # here ``retries`` counts attempts in a row without progress
                backoff=backoff,
                progress=progress,
                sha256=sha256,
                reject_html=True,
                hint=(f". Download it elsewhere (a browser may be needed), then pass checkpoint=PATH or put it at {target}"
                      if hint is None else hint),
            )
        except DownloadError as exc:
            if hint is None:
                exc.option = "checkpoint"  # DualEncoder names the config key: model.audio_encoder.checkpoint
            raise
    if not sha256:
        log.info("downloaded %s (sha256 %s)", target, file_digest(target))
    return target


def _lock(target: Path) -> Any:
    """An inter-process lock next to ``target`` (``target.lock``, removed on release)."""
    return file_lock(str(target) + ".lock")


# --------------------------------------------------------------------------- reading and renaming keys


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(torch.is_tensor(v) for v in obj.values())


def read_checkpoint(path: str | Path, safe_globals: Sequence[Any] = ()) -> dict[str, torch.Tensor]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and return its tensor state dict.

    Common containers (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``, Lightning
    checkpoints) are unwrapped; non-tensor entries next to the tensors are dropped. ``safe_globals``
    allow-lists extra plain-data classes (e.g. ``argparse.Namespace`` in saved hyperparameters).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for disallowed globals, RuntimeError for corrupt zips
        raise StateDictError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({load_failure(exc)}). If it holds pickled Python "
            "objects besides tensors and you trust its source, re-save only its state dict."
        ) from exc
    for _ in range(4):
        if _is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise StateDictError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)} if isinstance(obj, Mapping) else {}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else ""
        raise StateDictError(f"{path}: no tensors found (top-level keys: {keys})")
    return tensors


def strip_prefix(
    state_dict: Mapping[str, torch.Tensor], prefix: str, *, drop_others: bool = False
) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from the keys that start with it; keep (or drop) the other keys."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
        elif not drop_others:
            out[key] = value
    return out


def map_keys(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[tuple[str, str | None]],
    *,
    drop_unmatched: bool = False,
) -> dict[str, torch.Tensor]:
    """Rename keys with regex rules ``(pattern, replacement)``; the first rule that matches applies.

    A replacement of ``None`` drops the key. Keys no rule matches are kept unless ``drop_unmatched``.
    Two keys mapping to the same name is an error.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new: str | None = key
        for pattern, replacement in compiled:
            if pattern.search(key):
                new = None if replacement is None else pattern.sub(replacement, key, count=1)
                break
        else:
            if drop_unmatched:
                new = None
        if new is None:
            continue
        if new in out:
            raise StateDictError(f"map_keys: two checkpoint keys map to {new!r} (one of them is {key!r})")
        out[new] = value
    return out


# --------------------------------------------------------------------------- checked loading


@dataclass
class LoadReport:
    """What ``load_state_dict_checked`` found: keys the module has but the checkpoint lacks, and so on."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    ignored_missing: list[str] = field(default_factory=list)
    ignored_unexpected: list[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 20) -> str:
        def show(keys: list[Any]) -> str:
            more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(map(str, keys[:limit])) + more

        parts = [f"loaded {self.loaded} tensors"]
        if self.missing:
            parts.append(f"missing from checkpoint ({len(self.missing)}): {show(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected in checkpoint ({len(self.unexpected)}): {show(self.unexpected)}")
        if self.shape_mismatch:
            items = [f"{k} checkpoint {tuple(a)} vs module {tuple(b)}" for k, a, b in self.shape_mismatch]
            parts.append(f"shape mismatch ({len(items)}): {show(items)}")
        if self.ignored_missing or self.ignored_unexpected:
            parts.append(
                f"ignored: {len(self.ignored_missing)} missing, {len(self.ignored_unexpected)} unexpected"
            )
        return "; ".join(parts)


def _matches(key: str, patterns: Iterable[Pattern]) -> bool:
    """Glob strings (``fnmatch``, e.g. ``"head.*"``) or compiled regexes (``re.search``)."""
    for p in patterns:
        if isinstance(p, re.Pattern):
            if p.search(key):
                return True
        elif fnmatch.fnmatchcase(key, p):
            return True
    return False


def load_state_dict_checked(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    ignore_missing: Iterable[Pattern] = (),
    ignore_unexpected: Iterable[Pattern] = (),
    strict: bool = True,
    source: str = "checkpoint",
) -> LoadReport:
    """Load ``state_dict`` into ``module`` after comparing keys and shapes.

    Keys matching ``ignore_missing`` (module keys absent from the checkpoint) or ``ignore_unexpected``
    (checkpoint keys the module lacks; also checkpoint keys of the wrong shape) are skipped and
    reported. Anything else that does not fit raises ``StateDictError`` listing the keys when ``strict``;
    otherwise the fitting tensors are loaded and the report is logged as a warning.
    """
    ignore_missing, ignore_unexpected = tuple(ignore_missing), tuple(ignore_unexpected)
    own = module.state_dict()
    report = LoadReport()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key not in own:
            (report.ignored_unexpected if _matches(key, ignore_unexpected) else report.unexpected).append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            if _matches(key, ignore_unexpected) or _matches(key, ignore_missing):
                report.ignored_unexpected.append(key)
            else:
                report.shape_mismatch.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            to_load[key] = value
    for key in own:
        if key not in state_dict:
            (report.ignored_missing if _matches(key, ignore_missing) else report.missing).append(key)
    report.loaded = len(to_load)
    if strict and not report.ok:
        raise StateDictError(f"{source} does not fit {type(module).__name__}: {report.summary()}")
    module.load_state_dict(to_load, strict=False)
    if report.ok:
        log.info("%s -> %s: %s", source, type(module).__name__, report.summary())
    else:
        log.warning("%s -> %s (non-strict): %s", source, type(module).__name__, report.summary())
    return report


# --------------------------------------------------------------------------- descriptions, one load path


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint: where it lives and how it maps onto our module.

    ``key_map``: ``map_keys`` rules applied to the checkpoint's keys; ``convert``: a function that does
    the renaming instead (when it depends on the checkpoint's layout). ``ignore_missing`` /
    ``ignore_unexpected``: glob patterns of module / checkpoint keys that may be absent / left over
    (e.g. classifier heads). ``safe_globals``: plain-data classes its pickle may hold.
    """

    name: str
    url: str | None
    filename: str | None = None
    sha256: str | None = None
    md5: str | None = None
    key_map: tuple[tuple[str, str | None], ...] = ()
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    ignore_missing: tuple[str, ...] = ()
    ignore_unexpected: tuple[str, ...] = ()
    safe_globals: tuple[Any, ...] = ()
    source: str = ""  # where the URL and names come from (for readers of the code)


def fetch_weights(
    weights: PretrainedWeights, checkpoint: str | Path | None = None, cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """The local file of ``weights``: ``checkpoint`` when given, else the cached or downloaded copy."""
    if weights.url is None and checkpoint is None:
        raise ConfigError(f"{weights.name} has no published checkpoint; pass checkpoint=PATH")
    return download_checkpoint(
        weights.url or "", filename=weights.filename, sha256=weights.sha256, md5=weights.md5,
        cache_dir=cache_dir, local_path=checkpoint, progress=progress,
    )


def load_pretrained_weights(
    module: torch.nn.Module,
    weights: PretrainedWeights,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> LoadReport:
    """Fetch ``weights`` (or read ``checkpoint``), rename its keys and load it into ``module``, checking
    every key and shape (``StateDictError`` lists what does not fit)."""
    path = fetch_weights(weights, checkpoint, cache_dir, progress)
    state = read_checkpoint(path, safe_globals=weights.safe_globals)
    if weights.convert is not None:
        state = weights.convert(state)
    if weights.key_map:
        state = map_keys(state, weights.key_map)
    return load_state_dict_checked(
        module, state, ignore_missing=weights.ignore_missing, ignore_unexpected=weights.ignore_unexpected,
        source=str(path),
    )
