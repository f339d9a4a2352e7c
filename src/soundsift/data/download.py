"""Dataset downloads: the ClothoV2.1 fetcher, built on ``soundsift.downloader.download_file``.

``download_clotho(dest)`` fetches ClothoV2.1 from Zenodo record 4783391 and leaves ``dest`` in the
layout ``soundsift.data.readers.clotho.read_clotho`` reads::

    dest/clotho_captions_{split}.csv, dest/clotho_metadata_{split}.csv, dest/{split}/*.wav

7z extraction needs py7zr (``pip install 'soundsift[download]'``).

``download_dcase2025_relevance(dest)`` fetches the DCASE 2025 task 6 multi-relevance annotations of the
ClothoV2 evaluation split (``query,audio_filenames``, 1037 queries) to ``dest/relevance_evaluation.csv``,
for ``soundsift evaluate --relevance``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

from soundsift.data.readers.clotho import SPLITS as CLOTHO_SPLITS
from soundsift.data.readers.clotho import clotho_audio_dir, clotho_split
from soundsift.downloader import download_file, file_specific
from soundsift.errors import DownloadError

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


# The DCASE 2025 task 6 baseline's annotation file, pinned to the commit that added it (14bd413, 2025-05-09;
# unchanged at c78422f). The sha256 is of that blob, read from a clone of the repository.
DCASE2025_BASE = ("https://raw.githubusercontent.com/CPJKU/dcase2025_task6_baseline/"
                  "14bd413eb214056f90fdbb338842527407fb9985/resources")
DCASE2025_FILE = "metadata_eval.csv"
DCASE2025_SHA256 = "b89605991d1f3018088d5ce8619b7da8fe5e52c9cd576394977f141515f7fc65"
RELEVANCE_FILE = "relevance_evaluation.csv"  # the name soundsift gives it (and `soundsift synth` writes)


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
    downloaded again. The archive is deleted after extraction unless ``keep_archives``. A file that is
    missing on the server or fails its checksum does not stop the others; one DownloadError then names
    every file not downloaded (all that remain once the host itself fails), and a ``dest`` created by
    this call is removed again if it is still empty.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest)
    sums = {**CLOTHO_MD5, **(checksums or {})}
    failed: dict[str, str | None] = {}  # file -> why; None: not tried, the host had failed already
    host_failed = False

    def fetch(name: str) -> Path | None:
        nonlocal host_failed
        if host_failed:
            failed[name] = None
            return None
        say(f"fetching {name}")
        md5 = sums.get(name) if verify else None
        try:
            return download_file(clotho_url(base_url, name), dest / name, md5, timeout, retries, backoff, progress)
        except DownloadError as exc:  # the next files are still tried, unless the host itself failed
            failed[name] = str(exc)
            host_failed = not file_specific(exc)
            return None

    with _remove_if_left_empty(dest):
        for split in [clotho_split(s) for s in splits]:
            for kind in ("captions", "metadata"):
                fetch(f"clotho_{kind}_{split}.csv")
            marker = dest / f".{split}.extracted"
            if marker.is_file() and clotho_audio_dir(dest, split) is not None:
                say(f"{split}: audio already extracted")
                continue
            archive = fetch(f"clotho_audio_{split}.7z")
            if archive is None:
                continue
            say(f"extracting {archive.name}")
            extract_7z(archive, dest)
            if clotho_audio_dir(dest, split) is None:
                raise DownloadError(f"{archive}: extracted, but no audio folder {dest / split}/ appeared")
            marker.write_text("ok\n")
            if not keep_archives:
                archive.unlink()
        if failed:
            raise DownloadError(_not_downloaded(failed, dest))
    return dest


def _not_downloaded(failed: dict[str, str | None], dest: Path) -> str:
    """One line naming every file that is missing from ``dest`` and why."""
    names = list(failed)
    what = names[0] if len(names) == 1 else f"{len(names)} files: {', '.join(names)}"
    why = "; ".join(dict.fromkeys(reason for reason in failed.values() if reason))
    return (f"not downloaded into {dest}: {what} ({why}). To use copies fetched elsewhere (say in a browser), "
            f"put them in {dest} and run again; --base-url points at a mirror")


@contextlib.contextmanager
def _remove_if_left_empty(folder: Path) -> Iterator[None]:
    """Create ``folder``; if what follows fails and leaves it empty, remove it again (if it was new)."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def download_dcase2025_relevance(
    dest: str | Path,
    base_url: str = DCASE2025_BASE,
    sha256: str | None = DCASE2025_SHA256,
    verify: bool = True,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 2.0,
    progress: bool = True,
) -> Path:
    """Fetch the DCASE 2025 annotation file into ``dest/relevance_evaluation.csv``; returns its path.

    Verified against DCASE2025_SHA256 (``sha256=`` for a mirror's copy, ``verify=False`` to skip), then
    read once with :func:`soundsift.data.relevance.read_relevance` so that a page that is not the CSV
    fails here (DatasetError naming the file) and not at evaluation time.
    """
    from soundsift.data.relevance import read_relevance

    dest = Path(dest)
    target = dest / RELEVANCE_FILE
    url = f"{base_url.rstrip('/')}/{DCASE2025_FILE}"
    hint = (f". To use a copy fetched elsewhere, save {DCASE2025_FILE} as {target} and run again; "
            "--base-url points at a mirror")
    with _remove_if_left_empty(dest):
        download_file(url, target, None, timeout, retries, backoff, progress, sha256=sha256 if verify else None,
                      reject_html=True, hint=hint)
    read_relevance(target)
    return target
