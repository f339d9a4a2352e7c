"""A resumable, verified file download (``download_file``), file digests, and whether a host can be
reached at all (``host_reachable``, ``hub_reachable``), and an inter-process lock that leaves no file
behind (``file_lock``); datasets and encoders use it.

Offline, nothing waits: a failure that means "no network" (the name does not resolve, the connection
is refused, the network is unreachable) ends a download at the first attempt, and callers of the
Hugging Face Hub ask ``hub_reachable`` (one short connection attempt, remembered per process) before
they let transformers retry for a minute. Imports nothing but the standard library, tqdm and
soundsift's errors.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soundsift.digest import CHUNK as _CHUNK
from soundsift.digest import file_digest as file_digest  # re-exported: its callers import it from here
from soundsift.errors import ChecksumError, DownloadError

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_MAX_WAIT = 60.0
logger = logging.getLogger(__name__)


_NO_NETWORK_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}
_TRUE = ("1", "true", "yes", "on")


def no_network(exc: BaseException) -> BaseException | None:
    """The underlying error if ``exc`` means the host cannot be reached at all (retrying won't help)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return reason
    if isinstance(reason, OSError) and reason.errno in _NO_NETWORK_ERRNOS:
        return reason
    return None


def file_specific(exc: BaseException) -> bool:
    """Whether a failed download concerns that file alone (missing there, or wrong content), so that
    other files from the same host may still download; not when the host is unreachable or overloaded."""
    if isinstance(exc, ChecksumError):
        return True
    cause = exc.__cause__
    return isinstance(cause, urllib.error.HTTPError) and 400 <= cause.code < 500 and cause.code not in _RETRY_STATUS


@functools.cache
def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (asked once per process)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether the Hugging Face Hub (``$HF_ENDPOINT``) can be reached; False when HF_HUB_OFFLINE is set."""
    if any(os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return bool(url.hostname) and host_reachable(url.hostname, url.port or (80 if url.scheme == "http" else 443))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on the file ``path`` (created), and remove that file on release.

    Removing a lock file is the classic race: a process blocked on the old file gets its lock once the
    holder lets go, while a newcomer creates a new file at the same path and locks that one too. Here
    the holder removes the file *before* it unlocks, and whoever gets a lock checks that ``path`` still
    names the very file it locked (same inode); if not, the file was removed under it and it locks
    anew. So a download that fails (or succeeds) leaves no empty ``.lock`` file in the cache.
    Without ``fcntl`` (Windows) filelock's lock is used, which removes its file itself where that is safe.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        from filelock import FileLock

        with FileLock(str(path)):
            yield
        return
    path = str(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked a file that is gone: its holder removed it; lock the one at ``path`` now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)  # unlocks


def checksum_mismatch(path: str | Path, md5: str | None = None, sha256: str | None = None) -> str | None:
    """``"expected ALG X, got Y"`` for the first given digest that ``path`` does not match, else None."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected and (got := file_digest(path, algorithm)) != expected.lower():
            return f"expected {algorithm} {expected.lower()}, got {got}"
    return None


def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        leave=False,
    )


def _transfer(url: str, part: Path, timeout: float, progress: bool, reject_html: bool, hint: str) -> None:
    """One attempt: continue ``part`` from its current size (HTTP Range); raises on any interruption."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "soundsift"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range past the end: the part may already be complete
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return
            part.unlink()  # the part is longer than the file: start over
        raise
    with response:
        if reject_html and "text/html" in (response.headers.get("Content-Type") or ""):
            raise DownloadError(
                f"{url} returned an HTML page instead of the file (a login, quota or confirmation page?){hint}"
            )
        if offset and response.status != 206:
            offset = 0  # the server ignored Range: rewrite from the start
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        with (
            open(part, "ab" if offset else "wb") as fh,
            _progress(
                None if expected is None else offset + expected, offset, part.name[:-5], progress
            ) as bar,
        ):
            while block := response.read(_CHUNK):
                fh.write(block)
                received += len(block)
                bar.update(len(block))
        if expected is not None and received < expected:
            raise http.client.IncompleteRead(b"", expected - received)


def download_file(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 2.0,
    progress: bool = True,
    *,
    sha256: str | None = None,
    reject_html: bool = False,
    hint: str = "",
) -> Path:
    """Download ``url`` to ``dest`` safely; returns ``dest``.

    Bytes go to ``dest.part`` and continue from where an earlier try stopped (HTTP Range; a server that
    ignores Range makes it start over). A dropped connection, timeout or 408/429/5xx answer is retried up
    to ``retries`` times in a row without progress, waiting ``backoff * 2**n`` seconds (at most 60). With
    ``md5``/``sha256`` the finished file is verified; on mismatch the partial file is deleted and
    ChecksumError (a DownloadError) raised. Only a complete, verified file is renamed to ``dest``
    (atomic ``os.replace``). An existing ``dest`` is kept when it matches the checksums (or none is
    given). ``reject_html`` fails on an HTML answer (a login or confirmation page); ``hint`` is
    appended to every DownloadError message (what to do instead).
    """
    dest = Path(dest)
    if dest.is_file() and checksum_mismatch(dest, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = attempts = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        attempts += 1
        try:
            _transfer(url, part, timeout, progress, reject_html, hint)
            break
        except urllib.error.HTTPError as exc:
            if exc.code not in _RETRY_STATUS and exc.code != 416:
                raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}{hint}") from exc
            error: Exception = exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS):
                raise DownloadError(f"{url}: cannot write {part}: {exc}") from exc
            error = exc
        after = part.stat().st_size if part.exists() else 0
        if after == 0 and (cause := no_network(error)) is not None:
            host = urllib.parse.urlparse(url).hostname or url
            raise DownloadError(
                f"cannot reach {host} to download {url} (offline, or nothing answers there: {cause}){hint}"
            ) from error
        failures = 0 if after > before else failures + 1
        if failures > retries:
            kept = f"; {after} bytes kept in {part}, run again to resume" if after else ""
            raise DownloadError(
                f"{url}: failed after {attempts} attempts, the last {failures} without progress ({error}){kept}{hint}"
            ) from error
        wait = min(backoff * 2 ** max(failures - 1, 0), _MAX_WAIT)
        logger.info("retrying %s in %.1f s (attempt %d failed: %s)", url, wait, attempts, error)
        time.sleep(wait)
    if bad := checksum_mismatch(part, md5, sha256):
        part.unlink()
        raise ChecksumError(
            f"{url}: checksum mismatch for {dest.name}: {bad}; "
            "the partial file was deleted, run again to download it afresh"
        )
    os.replace(part, dest)
    return dest
