"""Downloads: a resumable, verified ``download_file`` and the ClothoV2.1 fetcher built on it.

``download_clotho(dest)`` fetches ClothoV2.1 from Zenodo record 4783391 and leaves ``dest`` in the
layout ``soundsift.data.clotho.read_clotho`` reads::

    dest/clotho_captions_{split}.csv, dest/clotho_metadata_{split}.csv, dest/{split}/*.wav

7z extraction needs py7zr (``pip install 'soundsift[download]'``).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from soundsift.data.clotho import SPLITS as CLOTHO_SPLITS
from soundsift.data.clotho import clotho_audio_dir, clotho_split

ZENODO = "https://zenodo.org/records/4783391/files"
# MD5 sums of the ClothoV2.1 files (Zenodo record 4783391) as listed, identically, by aac-datasets
# (Labbeti/aac-datasets) and soundata, which both verify their downloads against them. Not re-checked
# against Zenodo from here (offline); pass ``checksums=`` to override one, ``verify=False`` to skip.
CLOTHO_MD5 = {
    "clotho_audio_development.7z": "c8b05bc7acdb13895bb3c6a29608667e",
    "clotho_audio_validation.7z": "7dba730be08bada48bd15dc4e668df59",
    "clotho_audio_evaluation.7z": "4569624ccadf96223f19cb59fe4f849f",
    "clotho_captions_development.csv": "d4090b39ce9f2491908eebf4d5b09bae",
    "clotho_captions_validation.csv": "5879e023032b22a2c930aaa0528bead4",
    "clotho_captions_evaluation.csv": "1b16b9e57cf7bdb7f13a13802aeb57e2",
    "clotho_metadata_development.csv": "170d20935ecfdf161ce1bb154118cda5",
    "clotho_metadata_validation.csv": "2e010427c56b1ce6008b0f03f41048ce",
    "clotho_metadata_evaluation.csv": "13946f054d4e1bf48079813aac61bf77",
}
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_MAX_WAIT = 60.0
logger = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """A download or extraction failed; the message names the URL or file and what went wrong."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the expected one; the message names the file and both digests."""


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = _CHUNK) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def md5sum(path: str | Path, chunk: int = _CHUNK) -> str:
    """Hex MD5 of a file, read in chunks."""
    return file_digest(path, "md5", chunk)


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
        failures = 0 if after > before else failures + 1
        if failures > retries:
            raise DownloadError(
                f"{url}: failed after {attempts} attempts, the last {failures} without progress ({error}); "
                f"{after} bytes kept in {part}, run again to resume{hint}"
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


def extract_7z(archive: str | Path, dest_dir: str | Path) -> list[str]:
    """Extract a 7z archive into ``dest_dir``; returns the member names. Rejects members that escape it."""
    try:
        import py7zr
    except ImportError as exc:
        raise DownloadError(
            f"{archive}: extracting 7z needs py7zr: pip install 'soundsift[download]' (or pip install py7zr)"
        ) from exc
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with py7zr.SevenZipFile(archive, mode="r") as z:
            names = z.getnames()
            for name in names:
                pure = PurePosixPath(name.replace("\\", "/"))
                if pure.is_absolute() or ".." in pure.parts:
                    raise DownloadError(f"{archive}: member {name!r} would be written outside {dest_dir}")
            z.extractall(path=dest_dir)
    except py7zr.exceptions.ArchiveError as exc:
        raise DownloadError(f"{archive}: not a valid 7z archive ({exc})") from exc
    return names


def clotho_url(base_url: str, name: str) -> str:
    """URL of one ClothoV2.1 file under ``base_url`` (Zenodo gets ``?download=1``)."""
    url = f"{base_url.rstrip('/')}/{name}"
    return url + "?download=1" if "zenodo.org" in base_url else url


def download_clotho(
    dest: str | Path,
    splits: Iterable[str] = CLOTHO_SPLITS,
    base_url: str = ZENODO,
    checksums: dict[str, str] | None = None,
    verify: bool = True,
    keep_archives: bool = False,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 2.0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Fetch ClothoV2.1 splits into ``dest`` (captions, metadata, extracted audio); returns ``dest``.

    Checksums are CLOTHO_MD5 updated with ``checksums`` (so a mirror with other files can pass its
    own); ``verify=False`` skips verification. Re-running is cheap: finished files are kept, partial
    ones resumed, and a split whose audio was extracted (marker ``dest/.{split}.extracted``) is not
    downloaded again. The archive is deleted after extraction unless ``keep_archives``.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sums = {**CLOTHO_MD5, **(checksums or {})}

    def fetch(name: str) -> Path:
        say(f"fetching {name}")
        md5 = sums.get(name) if verify else None
        return download_file(clotho_url(base_url, name), dest / name, md5, timeout, retries, backoff, progress)

    for split in [clotho_split(s) for s in splits]:
        for kind in ("captions", "metadata"):
            fetch(f"clotho_{kind}_{split}.csv")
        marker = dest / f".{split}.extracted"
        if marker.is_file() and clotho_audio_dir(dest, split) is not None:
            say(f"{split}: audio already extracted")
            continue
        archive = fetch(f"clotho_audio_{split}.7z")
        say(f"extracting {archive.name}")
        extract_7z(archive, dest)
        if clotho_audio_dir(dest, split) is None:
            raise DownloadError(f"{archive}: extracted, but no audio folder {dest / split}/ appeared")
        marker.write_text("ok\n")
        if not keep_archives:
            archive.unlink()
    return dest


def download_main(args: Any) -> int:
    """CLI ``soundsift download clotho DIR [--base-url URL] [--splits ...] [--keep-archives] [--no-verify]``.

    Reads ``args.dataset`` (only "clotho"), ``args.dir`` (or ``args.dest``), ``args.base_url``; returns 0
    on success, 1 on a download error (printed), 2 for an unknown dataset.
    """
    dataset = getattr(args, "dataset", "clotho")
    if dataset != "clotho":
        print(f"error: unknown dataset {dataset!r}; available: clotho", file=sys.stderr)
        return 2
    dest = getattr(args, "dir", None) or getattr(args, "dest", None)
    if dest is None:
        print("error: no destination folder given", file=sys.stderr)
        return 2
    try:
        download_clotho(
            dest,
            splits=getattr(args, "splits", None) or CLOTHO_SPLITS,
            base_url=getattr(args, "base_url", None) or ZENODO,
            verify=not getattr(args, "no_verify", False),
            keep_archives=getattr(args, "keep_archives", False),
        )
    except (DownloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ClothoV2.1 is in {dest}; check it with: soundsift data info --format clotho {dest}")
    return 0
