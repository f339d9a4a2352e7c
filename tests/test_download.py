"""download_file and download_clotho against a local HTTP server on 127.0.0.1 that honours Range."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsift.cli.main import main
from soundsift.data.download import (
    CLOTHO_MD5,
    clotho_url,
    download_clotho,
    extract_7z,
)
from soundsift.data.readers.clotho import read_clotho, read_clotho_metadata
from soundsift.downloader import download_file
from soundsift.errors import DownloadError

py7zr = pytest.importorskip("py7zr", reason="py7zr (the 'download' extra) is needed for 7z archives")


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; can drop a transfer midway, answer 503, ignore Range."""

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv = self.server
        path = self.path.split("?")[0].removeprefix("/files/")
        srv.log.append((path, self.headers.get("Range")))
        body = srv.files.get(path)
        if srv.unavailable.get(path, 0) > 0 and path not in srv.drop_after:
            srv.unavailable[path] -= 1
            self.send_error(503)
            return
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        drop = srv.drop_after.pop(path, None)
        if drop is not None:  # send part of the body, then cut the connection
            self.wfile.write(chunk[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.log, srv.drop_after, srv.unavailable, srv.ignore_range = {}, [], {}, {}, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/files"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def wav_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).uniform(-0.5, 0.5, 4000).astype("float32")
    sf.write(buf, noise, 8000, format="WAV")
    return buf.getvalue()


NAMES = ["a b.wav", 'rain, on "tin" café ü.wav']  # Latin-1 encodable, as the metadata CSV must be


def clotho_files(tmp_path: Path, split: str = "development") -> dict[str, bytes]:
    """The three files of one ClothoV2 split, the 7z built with py7zr in the published layout."""
    archive = tmp_path / "build.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        for i, name in enumerate(NAMES):
            z.writestr(wav_bytes(i), f"{split}/{name}")
    header = "file_name," + ",".join(f"caption_{i}" for i in range(1, 6)) + "\r\n"
    rows = "".join(
        f'"{n.replace(chr(34), chr(34) * 2)}",' + ",".join(f'"cap {i}, {j}"' for j in range(5)) + "\r\n"
        for i, n in enumerate(NAMES)
    )
    meta = "file_name,keywords,sound_id,manufacturer\r\n" + "".join(
        f'"{n.replace(chr(34), chr(34) * 2)}",k,1,Zoë\r\n' for n in NAMES
    )
    return {
        f"clotho_audio_{split}.7z": archive.read_bytes(),
        f"clotho_captions_{split}.csv": ("\ufeff" + header + rows).encode("utf-8"),
        f"clotho_metadata_{split}.csv": meta.encode("iso-8859-1"),
    }


def md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.md5(v).hexdigest() for k, v in files.items()}


def test_download_file_full_and_existing_kept(server, tmp_path: Path) -> None:
    body = bytes(range(256)) * 4000
    server.files["f.bin"] = body
    dest = download_file(
        f"{server.base}/f.bin", tmp_path / "out" / "f.bin", md5=hashlib.md5(body).hexdigest(), progress=False
    )
    assert dest.read_bytes() == body and not (tmp_path / "out" / "f.bin.part").exists()
    n = len(server.log)
    download_file(f"{server.base}/f.bin", dest, md5=hashlib.md5(body).hexdigest(), progress=False)
    assert len(server.log) == n  # verified file on disk: nothing fetched


def test_download_resumes_after_dropped_connection(server, tmp_path: Path) -> None:
    body = np.random.default_rng(0).bytes(3_000_000)
    server.files["big.bin"] = body
    server.drop_after["big.bin"] = 1_234_567
    dest = download_file(
        f"{server.base}/big.bin",
        tmp_path / "big.bin",
        md5=hashlib.md5(body).hexdigest(),
        backoff=0.0,
        progress=False,
    )
    assert dest.read_bytes() == body
    assert [r for p, r in server.log if p == "big.bin"] == [None, "bytes=1234567-"]


def test_interrupted_download_keeps_part_then_resumes(server, tmp_path: Path) -> None:
    body = np.random.default_rng(1).bytes(500_000)
    server.files["x.bin"] = body
    server.drop_after["x.bin"] = 100_000
    server.unavailable["x.bin"] = 3  # after the drop, three 503 answers
    with pytest.raises(DownloadError, match="100000 bytes kept.*run again to resume"):
        download_file(f"{server.base}/x.bin", tmp_path / "x.bin", retries=1, backoff=0.0, progress=False)
    assert (tmp_path / "x.bin.part").stat().st_size == 100_000 and not (tmp_path / "x.bin").exists()
    assert len(server.log) == 3  # the drop (progress), then 503, retry, 503: gives up
    download_file(
        f"{server.base}/x.bin",
        tmp_path / "x.bin",
        md5=hashlib.md5(body).hexdigest(),
        backoff=0.0,
        progress=False,
    )
    assert (tmp_path / "x.bin").read_bytes() == body and server.log[-1][1] == "bytes=100000-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path: Path) -> None:
    body = b"0123456789" * 1000
    server.files["r.bin"] = body
    server.ignore_range = True
    (tmp_path / "r.bin.part").write_bytes(body[:300])
    download_file(
        f"{server.base}/r.bin", tmp_path / "r.bin", md5=hashlib.md5(body).hexdigest(), progress=False
    )
    assert (tmp_path / "r.bin").read_bytes() == body


def test_complete_part_file_answered_416(server, tmp_path: Path) -> None:
    body = b"abc" * 100
    server.files["c.bin"] = body
    (tmp_path / "c.bin.part").write_bytes(body)
    download_file(
        f"{server.base}/c.bin", tmp_path / "c.bin", md5=hashlib.md5(body).hexdigest(), progress=False
    )
    assert (tmp_path / "c.bin").read_bytes() == body


def test_checksum_mismatch_and_http_error(server, tmp_path: Path) -> None:
    server.files["m.bin"] = b"hello"
    with pytest.raises(DownloadError, match=r"checksum mismatch for m\.bin: expected md5 0+, got 5d41"):
        download_file(f"{server.base}/m.bin", tmp_path / "m.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m.bin.part").exists()
    n = len(server.log)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server.base}/absent.bin", tmp_path / "a.bin", progress=False)
    assert len(server.log) == n + 1  # a 404 is not retried


def test_download_clotho_end_to_end(server, tmp_path: Path) -> None:
    files = clotho_files(tmp_path)
    server.files.update(files)
    server.drop_after["clotho_audio_development.7z"] = len(files["clotho_audio_development.7z"]) // 2
    dest = tmp_path / "clotho"
    download_clotho(
        dest,
        splits=["train"],
        base_url=server.base,
        checksums=md5s(files),
        progress=False,
        backoff=0.0,
        log=lambda _msg: None,
    )
    assert not (dest / "clotho_audio_development.7z").exists()  # archive removed after extraction
    data = read_clotho(dest, "development", check_audio=True)
    assert [c.clip_id for c in data.clips] == NAMES and not data.problems
    assert data.clips[1].captions[0] == "cap 1, 0"
    assert read_clotho_metadata(dest, "development")[NAMES[0]]["manufacturer"] == "Zoë"
    ranges = [r for p, r in server.log if p == "clotho_audio_development.7z"]
    assert ranges[0] is None and ranges[1].startswith("bytes=")  # resumed, not restarted

    n = len(server.log)
    download_clotho(
        dest,
        splits=["development"],
        base_url=server.base,
        checksums=md5s(files),
        progress=False,
        backoff=0.0,
        log=lambda _msg: None,
    )
    assert len(server.log) == n  # everything present and verified: no request


def test_download_clotho_checksum_mismatch_with_published_sums(server, tmp_path: Path) -> None:
    server.files.update(clotho_files(tmp_path))
    with pytest.raises(DownloadError, match="clotho_captions_development.csv"):
        download_clotho(
            tmp_path / "c",
            splits=["development"],
            base_url=server.base,
            progress=False,
            log=lambda _msg: None,
        )
    assert set(CLOTHO_MD5) == {
        f"clotho_{k}_{s}.{e}"
        for s in ("development", "validation", "evaluation")
        for k, e in (("audio", "7z"), ("captions", "csv"), ("metadata", "csv"))
    }
    assert clotho_url("https://zenodo.org/records/4783391/files", "x.csv").endswith("/x.csv?download=1")


def test_extract_rejects_escaping_members(tmp_path: Path, monkeypatch) -> None:
    extracted: list[Path] = []

    class Evil:  # py7zr refuses to write such an archive, so stand in for one
        def __init__(self, *args: object, **kw: object) -> None:
            pass

        def __enter__(self) -> Evil:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def getnames(self) -> list[str]:
            return ["development/ok.wav", "../evil.txt"]

        def extractall(self, path: Path) -> None:
            extracted.append(path)

    with monkeypatch.context() as m:
        m.setattr(py7zr, "SevenZipFile", Evil)
        with pytest.raises(DownloadError, match=r"'\.\./evil\.txt' would be written outside"):
            extract_7z(tmp_path / "evil.7z", tmp_path / "out")
    assert extracted == []
    (tmp_path / "junk.7z").write_bytes(b"not an archive")
    with pytest.raises(DownloadError, match="junk.7z"):
        extract_7z(tmp_path / "junk.7z", tmp_path / "out")


def test_download_main(server, tmp_path: Path, capsys) -> None:
    files = clotho_files(tmp_path, "validation")
    server.files.update(files)
    assert main(["-q", "download", "clotho", str(tmp_path / "d"), "--base-url", server.base, "--splits", "val",
                 "--no-verify"]) == 0
    assert len(read_clotho(tmp_path / "d", "val").clips) == 2
    capsys.readouterr()
    assert main(["-q", "download", "clotho", str(tmp_path / "e"), "--base-url", server.base, "--splits", "test"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown dataset
        main(["download", "audiocaps", "x"])
    assert exit_info.value.code == 2


def test_failed_download_names_every_missing_file_and_leaves_no_empty_folder(server, tmp_path: Path) -> None:
    files = clotho_files(tmp_path, "validation")
    server.files.update({k: v for k, v in files.items() if "captions" in k})  # the mirror lacks two files
    dest = tmp_path / "new" / "clotho"
    with pytest.raises(DownloadError) as info:
        download_clotho(dest, splits=["val"], base_url=server.base, checksums=md5s(files), progress=False,
                        log=lambda _msg: None)
    message = str(info.value)
    assert "2 files: clotho_metadata_validation.csv, clotho_audio_validation.7z" in message and "HTTP 404" in message
    assert (dest / "clotho_captions_validation.csv").is_file()  # what could be fetched is kept

    server.files.clear()
    empty = tmp_path / "empty"
    with pytest.raises(DownloadError, match="3 files: clotho_captions_validation.csv, clotho_metadata"):
        download_clotho(empty, splits=["val"], base_url=server.base, progress=False, log=lambda _msg: None)
    assert not empty.exists()  # created for nothing: removed again


def test_unreachable_host_stops_at_once_and_names_all_files(tmp_path: Path, capsys) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}/files"
    existing = tmp_path / "mine"
    existing.mkdir()
    assert main(["-q", "download", "clotho", str(existing), "--base-url", base, "--splits", "val", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "6 files: clotho_captions_validation.csv" in err, err
    assert "clotho_audio_evaluation.7z (cannot reach 127.0.0.1" in err and err.count("cannot reach") == 1
    assert existing.is_dir()  # the user's own folder stays


def test_file_lock_is_exclusive_and_leaves_no_file(tmp_path: Path) -> None:
    """Holders remove the lock file before unlocking; a waiter that locked the removed file locks again."""
    import time

    from soundsift.downloader import file_lock

    path = tmp_path / "x.lock"
    inside, overlaps = [], []

    def work() -> None:
        for _ in range(15):
            with file_lock(path):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(overlaps) == 90 and max(overlaps) == 1
    assert not path.exists()
