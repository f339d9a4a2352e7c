"""Checkpoint download (against a local HTTP server with Range support) and checked state-dict loading."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from soundsift.encoders.pretrained import (
    default_cache_dir,
    download_checkpoint,
    load_state_dict_checked,
    map_keys,
    read_checkpoint,
    strip_prefix,
)
from soundsift.errors import ChecksumError, DownloadError, StateDictError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /ckpt.pt with Range support; can drop the first connection part-way."""

    payload = PAYLOAD
    drop_first_after: int | None = None
    requests: list[str | None] = []
    content_type = "application/octet-stream"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        cls = type(self)
        if self.path != "/ckpt.pt":
            self.send_error(404)
            return
        cls.requests.append(self.headers.get("Range"))
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(cls.payload):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}")
        else:
            self.send_response(200)
        body = cls.payload[start:]
        self.send_header("Content-Type", cls.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.drop_first_after is not None:
            cut, cls.drop_first_after = cls.drop_first_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            return  # HTTP/1.0: the connection closes with the body incomplete
        self.wfile.write(body)


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    handler = type("Handler", (_Handler,), {"requests": [], "drop_first_after": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/ckpt.pt"
    yield url, handler, httpd
    httpd.shutdown()
    httpd.server_close()


SHA = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_download_then_cache_hit_without_network(server, tmp_path):
    url, handler, httpd = server
    path = download_checkpoint(url, sha256=SHA, cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "ckpt.pt" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "ckpt.pt.part").exists()
    httpd.shutdown()  # no network from here on
    httpd.server_close()
    again = download_checkpoint(url, sha256=SHA, md5=MD5, cache_dir=tmp_path, progress=False, retries=1)
    assert again == path and len(handler.requests) == 1


def test_resume_after_dropped_connection(server, tmp_path):
    url, handler, _ = server
    handler.drop_first_after = 30000
    path = download_checkpoint(url, md5=MD5, cache_dir=tmp_path, progress=False, backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert handler.requests == [None, "bytes=30000-"]


def test_concurrent_callers_download_once(server, tmp_path):
    url, handler, _ = server
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(download_checkpoint(url, cache_dir=tmp_path, progress=False))
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(p.read_bytes() == PAYLOAD for p in results)
    assert len(handler.requests) == 1


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    url, _, _ = server
    with pytest.raises(ChecksumError, match="sha256"):
        download_checkpoint(url, sha256="0" * 64, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "ckpt.pt").exists() and not (tmp_path / "ckpt.pt.part").exists()


def test_corrupt_cache_is_replaced(server, tmp_path):
    url, handler, _ = server
    (tmp_path / "weights.bin").write_bytes(b"garbage")
    path = download_checkpoint(url, filename="weights.bin", sha256=SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD and len(handler.requests) == 1


def test_http_errors_name_the_url(server, tmp_path):
    url, handler, _ = server
    with pytest.raises(DownloadError, match="HTTP 404.*missing.pt"):
        download_checkpoint(url.replace("ckpt.pt", "missing.pt"), cache_dir=tmp_path, progress=False)
    handler.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match="HTML page"):
        download_checkpoint(url, cache_dir=tmp_path / "html", progress=False)


def test_unreachable_server_fails_at_once_with_the_way_out(tmp_path, monkeypatch):
    """Nothing listens there (or no network): one attempt, then a message naming the local option."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="cannot reach 127.0.0.1") as info:
        download_checkpoint("http://127.0.0.1:9/x.pt", cache_dir=tmp_path, progress=False, retries=5, backoff=10)
    assert time.monotonic() - started < 5
    assert info.value.option == "checkpoint" and "pass checkpoint=PATH" in str(info.value)
    assert ".part" not in str(info.value) and not list(tmp_path.glob("*.part"))


def test_local_path(tmp_path):
    local = tmp_path / "mine.pt"
    local.write_bytes(PAYLOAD)
    assert download_checkpoint("http://unused.invalid/x.pt", local_path=local, sha256=SHA) == local
    with pytest.raises(ChecksumError, match="mine.pt"):
        download_checkpoint("http://unused.invalid/x.pt", local_path=local, md5="f" * 32)
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        download_checkpoint("http://unused.invalid/x.pt", local_path=tmp_path / "nothere.pt")


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SOUNDSIFT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("SOUNDSIFT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "soundsift" / "checkpoints"


# --------------------------------------------------------------------------- state dicts


class _Net(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = nn.Linear(4, 5)
        self.norm = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, classes)


def test_read_checkpoint_unwraps_containers(tmp_path):
    sd = _Net().state_dict()
    torch.save(
        {"epoch": 3, "state_dict": {"model": sd}, "hyper_parameters": {"lr": 0.1}}, tmp_path / "a.ckpt"
    )
    loaded = read_checkpoint(tmp_path / "a.ckpt")
    assert set(loaded) == set(sd) and torch.equal(loaded["body.weight"], sd["body.weight"])
    torch.save({"note": "no tensors"}, tmp_path / "b.pt")
    with pytest.raises(StateDictError, match="b.pt"):
        read_checkpoint(tmp_path / "b.pt")


def test_read_checkpoint_refuses_pickled_objects(tmp_path):
    torch.save({"state_dict": _Net().state_dict(), "obj": _Net}, tmp_path / "c.pt")
    with pytest.raises(StateDictError, match="weights_only"):
        read_checkpoint(tmp_path / "c.pt")


def test_key_helpers():
    sd = {"model.a": torch.zeros(1), "model.b": torch.ones(1), "other": torch.zeros(2)}
    assert set(strip_prefix(sd, "model.")) == {"a", "b", "other"}
    assert set(strip_prefix(sd, "model.", drop_others=True)) == {"a", "b"}
    rules = [(r"^model\.b$", None), (r"^model\.", "net."), (r"^other$", "x")]
    assert set(map_keys(sd, rules)) == {"net.a", "x"}
    assert set(map_keys(sd, rules[:2], drop_unmatched=True)) == {"net.a"}
    with pytest.raises(StateDictError, match="net.a"):
        map_keys({"a.x": torch.zeros(1), "b.x": torch.zeros(1)}, [(r"^[ab]\.x$", "net.a")])


def test_load_checked_reports_and_raises():
    src = _Net(classes=7).state_dict()
    src["extra.weight"] = torch.zeros(2)
    del src["norm.running_mean"]
    net = _Net(classes=3)
    head_before = net.head.weight.detach().clone()
    with pytest.raises(StateDictError) as err:
        load_state_dict_checked(net, src)
    text = str(err.value)
    assert "norm.running_mean" in text and "extra.weight" in text and "head.weight" in text

    report = load_state_dict_checked(
        net, src, ignore_missing=["norm.running_*"], ignore_unexpected=["head.*", re.compile(r"^extra\.")]
    )
    assert report.ok and report.ignored_missing == ["norm.running_mean"]
    assert set(report.ignored_unexpected) == {"extra.weight", "head.weight", "head.bias"}
    assert torch.equal(net.body.weight, src["body.weight"])
    assert torch.equal(net.head.weight, head_before)  # the mismatched head was skipped, not loaded


def test_load_checked_non_strict_loads_what_fits():
    src = _Net().state_dict()
    src["body.weight"] = torch.full((5, 4), 2.0)
    src["norm.weight"] = torch.zeros(6)
    net = _Net()
    report = load_state_dict_checked(net, src, strict=False)
    assert report.shape_mismatch == [("norm.weight", (6,), (5,))]
    assert torch.equal(net.body.weight, torch.full((5, 4), 2.0))
