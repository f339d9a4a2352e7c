"""HTTP API: search, audio by id, page, OpenAPI, limits, and security probes (in-process and over a
real socket, so request lines reach the server exactly as written)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastapi.testclient import TestClient  # noqa: E402

from serving import served
from soundsift.errors import ModelMismatchError
from soundsift.search.build import build_index  # noqa: E402
from soundsift.search.index import load_searcher
from soundsift.search.server import create_app  # noqa: E402
from test_index import GOOD, make_library, make_model, write_sound  # noqa: E402

SECRET = "TOP-SECRET-6f1d2c"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("srv")
    lib = make_library(base / "sounds")
    (base / "secret.txt").write_text(SECRET)  # beside the library: must never be served
    (base / "secret.wav").write_text(SECRET)
    model = make_model(base / "model.pt")
    build_index(lib, base / "idx", model, progress=False)
    app = create_app(base / "idx")
    return base, lib, model, app


@pytest.fixture(scope="module")
def client(setup):
    return TestClient(setup[3])


def test_search_returns_the_cli_objects(setup, client):
    base, _, _, _ = setup
    r = client.get("/api/search", params={"q": "rain falling", "k": 4})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    expected = [h.to_dict() for h in load_searcher(base / "idx").search("rain falling", 4)]
    assert r.json() == expected and len(expected) == 4
    assert len(client.get("/api/search", params={"q": "rain", "k": 100}).json()) == len(GOOD)


def test_audio_is_served_by_id_with_media_type(setup, client):
    _, lib, _, app = setup
    index = app.state.searcher.index
    media = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}
    for e in index.entries:
        r = client.get(f"/api/audio/{e.id}")
        assert r.status_code == 200, e.path
        assert r.content == (lib / e.path).read_bytes()
        assert r.headers["content-type"].startswith(media[Path(e.path).suffix.lower()])
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(len(r.content))


@pytest.fixture(scope="module")
def wav(setup) -> tuple[str, bytes]:
    """The URL and bytes of the longest indexed WAV file."""
    _, lib, _, app = setup
    entry = max((e for e in app.state.searcher.index.entries if e.path.endswith(".wav")), key=lambda e: e.size)
    return f"/api/audio/{entry.id}", (lib / entry.path).read_bytes()


@pytest.mark.parametrize("spec, first, last", [
    ("0-9", 0, 9),  # first bytes
    ("100-299", 100, 299),  # middle
    ("5-5", 5, 5),  # one byte
    ("{n_10}-", -10, -1),  # open end
    ("-16", -16, -1),  # suffix
    ("0-", 0, -1),  # the whole file, as a range
    ("-{n_plus}", 0, -1),  # a suffix longer than the file: all of it
    ("10-{n_plus}", 10, -1),  # a last byte beyond the file: up to its end
])
def test_a_byte_range_gets_206_with_those_bytes(client, wav, spec, first, last):
    url, data = wav
    size = len(data)
    header = "bytes=" + spec.format(n_10=size - 10, n_plus=size + 1000)
    first, last = first % size, last % size
    for method in (client.get, client.head):
        r = method(url, headers={"Range": header})
        assert r.status_code == 206, (method, header, r.text)
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert r.headers["content-length"] == str(last - first + 1)
        assert r.headers["accept-ranges"] == "bytes" and r.headers["content-type"].startswith("audio/wav")
        assert r.content == (data[first : last + 1] if method == client.get else b"")


@pytest.mark.parametrize("header", ["items=0-1", "bytes=0-1,4-5", "bytes=0-1,abc"])
def test_another_unit_or_several_ranges_get_the_whole_file(client, wav, header):
    url, data = wav
    r = client.get(url, headers={"Range": header})
    assert r.status_code == 200 and r.content == data and "content-range" not in r.headers
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == str(len(data))
    h = client.head(url, headers={"Range": header})
    assert h.status_code == 200 and h.content == b"" and h.headers["content-length"] == str(len(data))


@pytest.mark.parametrize("spec", ["bytes=abc", "bytes=", "bytes", "0-9", "bytes=5-2", "bytes={n}-", "bytes={n_plus}-",
                                  "bytes=-0", "bytes=1-2-3", "bytes=-5-", "bytes=1_0-20", "bytes=" + "9" * 5000 + "-"])
def test_a_bad_or_unsatisfiable_range_gets_416(client, wav, spec):
    url, data = wav
    header = spec.format(n=len(data), n_plus=len(data) + 7)
    for method in (client.get, client.head):
        r = method(url, headers={"Range": header})
        assert r.status_code == 416, (method, header[:50], r.status_code)
        assert r.headers["content-range"] == f"bytes */{len(data)}"
    assert "Range" in client.get(url, headers={"Range": header}).json()["detail"]


def test_page_static_files_and_openapi(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert 'id="q"' in r.text and "/static/app.js" in r.text and "http" not in r.text.replace("http-equiv", "")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "/api/search" in js.text
    assert client.get("/static/style.css").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/audio/{audio_id}", "/api/thumbnail/{thumb_id}", "/api/info"} <= set(schema["paths"])
    params = {p["name"]: p["schema"] for p in schema["paths"]["/api/search"]["get"]["parameters"]}
    assert params["k"]["maximum"] == 100 and params["q"]["maxLength"] == 1000
    info = client.get("/api/info").json()
    assert info["items"] == len(GOOD) and info["max_k"] == 100


def asgi_get(app, path: str, query: bytes) -> tuple[int, bytes]:
    """Call the ASGI app directly (HTTP clients refuse 100k-character URLs before sending them)."""
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1), "server": ("testserver", 80),
             "root_path": ""}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_100k_character_query_gets_422(setup):
    status, body = asgi_get(setup[3], "/api/search", b"k=5&q=" + b"x" * 100_000)
    assert status == 422 and b"1000" in body and len(body) < 2000


@pytest.mark.parametrize("params", [
    {"q": "x" * 1001}, {"q": ""}, {"q": "   "}, {},
    {"q": "rain", "k": 0}, {"q": "rain", "k": -5}, {"q": "rain", "k": 101}, {"q": "rain", "k": 10**12},
    {"q": "rain", "k": "ten"}, {"q": "rain", "k": "1e3"},
])
def test_bad_search_requests_get_422_json(client, params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 422
    body = r.json()
    assert body["detail"] and len(r.content) < 2000  # a clear message, the input not echoed back


TRAVERSALS = [
    "../../secret.txt", "..%2f..%2fsecret.txt", "%2e%2e%2f%2e%2e%2fsecret.txt", "%2e%2e/%2e%2e/secret.txt",
    "%252e%252e%252fsecret.txt", "..%252f..%252fsecret.txt", "..\\..\\secret.txt", "..%5c..%5csecret.txt",
    "%2fetc%2fpasswd", "/etc/passwd", "%2Fetc%2Fpasswd", "....//....//secret.txt", "..%c0%af..%c0%afsecret.txt",
    "0%00", "%00", "0%2500", "0/../../secret.txt", "0%2f..%2f..%2fsecret.txt", "-1", "99999", "1e3", "0x1",
    "+1", "%20" + "1", "\u0663", "0.0", "secret.wav", "..%2fsecret.wav", "weather%2frain.flac",
]


def test_path_traversal_and_unknown_ids_are_refused(setup, client):
    base, lib, _, _ = setup
    secrets = [SECRET, "root:x:0:0"]
    for t in TRAVERSALS:
        for url in (f"/api/audio/{t}", f"/api/thumbnail/{t}", f"/static/{t}", f"/{t}"):
            r = client.get(url)
            assert 400 <= r.status_code < 500, (url, r.status_code)
            assert not any(s in r.text for s in secrets), url
    r = client.get("/api/audio/" + str(lib / "long.wav"))
    assert r.status_code == 404
    r = client.get("/api/audio/123456")
    assert r.status_code == 404 and "123456" in r.json()["detail"]
    for url in ("/api/thumbnail/123456", "/api/search?like=123456"):
        r = client.get(url)
        assert r.status_code == 404 and "123456" in r.json()["detail"], url
    r = client.get("/api/search", params={"like": "../../secret.txt"})
    assert r.status_code == 422 and "digits" in r.json()["detail"]


# ------------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def live(setup):
    """uvicorn on a free loopback port, with the Host check that `serve` uses for loopback binds."""
    from soundsift.search.server import LOOPBACK_HOSTS

    base = setup[0]
    app = create_app(base / "idx", allowed_hosts=list(LOOPBACK_HOSTS))
    with served(app) as port:
        yield port


def raw_get(port: int, target: bytes, host: bytes = b"127.0.0.1") -> tuple[int, bytes]:
    """Send one request line exactly as given; return (status, whole response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_raw_requests_to_a_running_server(live):
    status, data = raw_get(live, b"/api/search?q=rain&k=2")
    assert status == 200 and b'"rank":1' in data
    status, data = raw_get(live, b"/api/search?like=0&k=2")
    assert status == 200 and b'"rank":1' in data
    status, data = raw_get(live, b"/api/thumbnail/0")
    assert status == 200 and b"content-type: image/png" in data.lower() and b"\x89PNG\r\n" in data
    for t in TRAVERSALS + ["..%2f" * 10 + "etc%2fpasswd", "%2e%2e%5c%2e%2e%5csecret.txt"]:
        for prefix in ("/api/audio/", "/api/thumbnail/", "/static/", "/"):
            target = (prefix + t).encode("utf-8")
            status, data = raw_get(live, target)
            assert 400 <= status < 500, (target, status)
            assert SECRET.encode() not in data and b"root:x:0:0" not in data, target
    for target in (b"/api/audio/0\x00", b"/api/audio/../../secret.txt", b"/../../secret.txt",
                   b"/api/search?q=" + b"a" * 100_000 + b"&k=5", b"/api/search?q=rain&k=1000000"):
        status, data = raw_get(live, target)
        assert 400 <= status < 500, (target[:60], status)
        assert SECRET.encode() not in data
    status, _ = raw_get(live, b"/api/search?q=rain", host=b"evil.example")  # DNS rebinding
    assert status == 400
    assert raw_get(live, b"/api/info", host=b"localhost:8000")[0] == 200
    assert raw_get(live, b"/api/info", host=b"[::1]:8000")[0] == 200
    assert raw_get(live, b"/api/info", host=b"127.0.0.1.evil.example")[0] == 400


def test_app_refuses_a_different_model(setup, tmp_path):
    base = setup[0]
    other = make_model(tmp_path / "other.pt", seed=5)
    with pytest.raises(ModelMismatchError):
        create_app(base / "idx", other)


def test_a_query_with_nothing_left_once_normalised_gets_422(tmp_path):
    """A model with a real (tiny) text tower strips punctuation: "!!!" is then empty, like "  "."""
    lib = tmp_path / "sounds"
    write_sound(lib / "a.wav", 16000, 1, 0.5, "WAV", None, seed=1)
    write_sound(lib / "b.flac", 16000, 1, 0.5, "FLAC", None, seed=2)
    build_index(lib, tmp_path / "idx", make_model(tmp_path / "m.pt", text="tiny-bert"), progress=False)
    client = TestClient(create_app(tmp_path / "idx"))
    for params in ({"q": "!!!"}, {"q": "?!", "like": "0"}):
        r = client.get("/api/search", params=params)
        assert r.status_code == 422, params
        assert r.json() == {"detail": f"search query {params['q']!r} is empty after normalisation (punctuation only)"}
    assert client.get("/api/search", params={"q": "rain!"}).status_code == 200
