"""The server beyond localhost: access token (401 without, 200 with, constant-time comparison, the
session cookie the page's media use), CORS only when asked, the per-client rate limit (429 with
Retry-After), and `serve`'s refusals and warnings; the old protections still hold behind a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fastapi.testclient import TestClient  # noqa: E402

from soundsift.cli.main import main  # noqa: E402
from soundsift.errors import ConfigError  # noqa: E402
from soundsift.search import access  # noqa: E402
from soundsift.search.access import SESSION_COOKIE, AccessPolicy, RateLimiter, is_loopback, serve_policy  # noqa: E402
from soundsift.search.build import build_index  # noqa: E402
from soundsift.search.index import load_searcher  # noqa: E402
from soundsift.search.server import create_app  # noqa: E402
from test_index import make_library, make_model  # noqa: E402
from test_server import SECRET, TRAVERSALS  # noqa: E402

TOKEN = "s3cret-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("access")
    lib = make_library(base / "sounds")
    (base / "secret.txt").write_text(SECRET)
    build_index(lib, base / "idx", make_model(base / "model.pt"), progress=False)
    return base, load_searcher(base / "idx")


def app_with(built, **policy):
    return create_app(built[0] / "idx", searcher=built[1], access=AccessPolicy(**policy))


@pytest.fixture(scope="module")
def locked(built):
    return TestClient(app_with(built, token=TOKEN))


PROTECTED = ["/api/search?q=rain&k=2", "/api/search?like=0", "/api/audio/0", "/api/thumbnail/0", "/api/info",
             "/openapi.json"]


@pytest.mark.parametrize("url", PROTECTED)
def test_401_without_the_token_and_200_with_it(locked, url):
    r = locked.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert "token" in r.json()["detail"] and SECRET not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"  # the security headers reach a 401 too
    assert locked.get(url, headers={"Authorization": "Bearer wrong-token-123456"}).status_code == 401
    assert locked.get(url, headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    assert locked.get(url, headers=BEARER).status_code == 200


def test_the_page_itself_loads_without_the_token(locked):
    for url in ("/", "/static/app.js", "/static/style.css", "/favicon.ico", "/api/health"):
        assert locked.get(url).status_code in (200, 204), url


def test_login_sets_an_httponly_strict_cookie_that_opens_the_media(built, locked):
    assert locked.post("/api/login").status_code == 401
    assert locked.post("/api/login", headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 401
    r = locked.post("/api/login", headers=BEARER)
    assert r.status_code == 200 and r.json() == {"auth": True}
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and TOKEN not in cookie  # an HMAC, never the token
    flags = {f.strip().lower() for f in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags and "secure" not in flags  # plain HTTP here
    value = r.cookies[SESSION_COOKIE]
    fresh = TestClient(app_with(built, token=TOKEN))  # no cookie jar carried over
    assert fresh.get("/api/audio/0", cookies={SESSION_COOKIE: value}).status_code == 200
    assert fresh.get("/api/audio/0", cookies={SESSION_COOKIE: "x" * len(value)}).status_code == 401
    other = TestClient(app_with(built, token="another-token-4567"))  # a new token voids old cookies
    assert other.get("/api/audio/0", cookies={SESSION_COOKIE: value}).status_code == 401
    # Over HTTPS the cookie is Secure.
    https = TestClient(app_with(built, token=TOKEN), base_url="https://testserver")
    assert "secure" in https.post("/api/login", headers=BEARER).headers["set-cookie"].lower()


def test_without_a_token_login_says_so_and_everything_is_open(built):
    client = TestClient(app_with(built))
    assert client.post("/api/login").json() == {"auth": False}
    assert client.get("/api/search?q=rain").status_code == 200


def test_tokens_and_cookies_are_compared_with_compare_digest(built, monkeypatch):
    locked = TestClient(app_with(built, token=TOKEN))  # no session cookie from another test
    calls = []
    real = access.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    assert locked.get("/api/info", headers=BEARER).status_code == 200
    assert (TOKEN.encode(), TOKEN.encode()) in calls
    calls.clear()
    assert locked.get("/api/info", headers={"Authorization": "Bearer guess-guess-guess"}).status_code == 401
    assert (b"guess-guess-guess", TOKEN.encode()) in calls
    calls.clear()
    assert locked.get("/api/info", cookies={SESSION_COOKIE: "abc"}).status_code == 401
    assert calls == [(b"abc", AccessPolicy(token=TOKEN).session_value.encode())]
    calls.clear()
    assert locked.post("/api/login", headers={"Authorization": "Bearer guess-guess-guess"}).status_code == 401
    assert calls == [(b"guess-guess-guess", TOKEN.encode())]


def test_old_protections_hold_behind_the_token(locked):
    for t in TRAVERSALS:
        for url in (f"/api/audio/{t}", f"/api/thumbnail/{t}", f"/static/{t}"):
            r = locked.get(url, headers=BEARER)
            assert 400 <= r.status_code < 500 and SECRET not in r.text, (url, r.status_code)
    for params in ({"q": "a" * 1001}, {"q": "rain", "k": 101}, {"q": "rain", "k": 0}, {"q": ""},
                   {"like": "../../secret.txt"}, {"q": "rain", "rank": "nope"}):
        assert locked.get("/api/search", params=params, headers=BEARER).status_code == 422, params


# ------------------------------------------------------------------------------------------------- CORS


def test_cors_headers_only_with_cors(built, locked):
    origin = {"Origin": "https://sounds.example.org"}
    r = locked.get("/api/search?q=rain", headers={**BEARER, **origin})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    pre = locked.options("/api/search?q=rain", headers={**origin, "Access-Control-Request-Method": "GET"})
    assert not any(h.startswith("access-control-") for h in pre.headers)

    client = TestClient(app_with(built, token=TOKEN, cors_origins=("https://sounds.example.org",)))
    r = client.get("/api/search?q=rain", headers={**BEARER, **origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://sounds.example.org"
    denied = client.get("/api/search?q=rain", headers={**BEARER, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
    # A preflight carries no token: it is answered, and names Authorization as allowed.
    pre = client.options("/api/search?q=rain", headers={**origin, "Access-Control-Request-Method": "GET",
                                                        "Access-Control-Request-Headers": "authorization"})
    assert pre.status_code == 200 and "authorization" in pre.headers["access-control-allow-headers"].lower()
    # A 401 to a cross-origin caller is readable by it (CORS outside the token check).
    r = client.get("/api/info", headers=origin)
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://sounds.example.org"


# ------------------------------------------------------------------------------------------- rate limit


def naive_bucket(times: list[Fraction], per_minute: int) -> list[Fraction]:
    """An independent token bucket in exact arithmetic: for each request, 0 if allowed, else the wait."""
    rate, level, last, out = Fraction(per_minute, 60), Fraction(per_minute), times[0], []
    for t in times:
        level = min(Fraction(per_minute), level + (t - last) * rate)
        last = t
        if level >= 1:
            level -= 1
            out.append(Fraction(0))
        else:
            out.append((1 - level) / rate)
    return out


def test_rate_limiter_matches_a_naive_bucket_and_hand_cases():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # 1 a second, bursts of 60
    assert [limiter.acquire("a") for _ in range(60)] == [0.0] * 60
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0  # per client
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(1.0)

    rng = np.random.default_rng(0)
    for per_minute in (3, 10, 120):
        steps = rng.integers(0, 4000, size=300)  # milliseconds between requests
        times = [Fraction(int(s), 1000) for s in np.cumsum(steps)]
        clock = [0.0]
        limiter = RateLimiter(per_minute, clock=lambda c=clock: c[0])
        got = []
        for t in times:
            clock[0] = float(t)
            got.append(limiter.acquire("c"))
        want = [float(w) for w in naive_bucket(times, per_minute)]
        assert [g > 0 for g in got] == [w > 0 for w in want]
        assert got == pytest.approx(want, abs=1e-6)


def test_429_with_retry_after_past_the_limit(built):
    client = TestClient(app_with(built, rate_per_minute=5))
    assert [client.get("/api/health").status_code for _ in range(5)] == [200] * 5
    r = client.get("/api/search?q=rain")
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 12
    assert "5 a minute" in r.json()["detail"]


# ------------------------------------------------------------------------------------ serve's policy


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
                                        ("localhost", True), ("0.0.0.0", False), ("::", False),
                                        ("192.168.1.5", False), ("example.org", False)])
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_serve_policy_refuses_warns_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv(access.TOKEN_ENV, raising=False)
    assert serve_policy("127.0.0.1", None, False, None, 600) == (AccessPolicy(rate_per_minute=600), [])
    assert serve_policy("127.0.0.1", None, False, None, None)[0].rate_per_minute == 0  # loopback: no limit
    assert serve_policy("0.0.0.0", TOKEN, False, None, None)[0].rate_per_minute == access.DEFAULT_RATE
    assert serve_policy("0.0.0.0", TOKEN, False, None, 0)[0].rate_per_minute == 0
    with pytest.raises(ConfigError, match="--host 0.0.0.0 .*--token.*--no-auth"):
        serve_policy("0.0.0.0", None, False, None, 600)
    policy, warnings = serve_policy("0.0.0.0", None, True, None, 600)
    assert policy.token is None and len(warnings) == 1 and "--no-auth" in warnings[0]
    policy, warnings = serve_policy("0.0.0.0", TOKEN, False, ["https://a.example:8443"], 0)
    assert policy.token == TOKEN and policy.cors_origins == ("https://a.example:8443",)
    assert len(warnings) == 1 and "plain HTTP" in warnings[0]
    assert serve_policy("0.0.0.0", TOKEN, False, None, 0, tls=True)[1] == []
    monkeypatch.setenv(access.TOKEN_ENV, "from-the-environment")
    assert serve_policy("0.0.0.0", None, False, None, 0)[0].token == "from-the-environment"
    assert serve_policy("0.0.0.0", TOKEN, False, None, 0)[0].token == TOKEN  # --token wins
    with pytest.raises(ConfigError, match="contradict"):
        serve_policy("0.0.0.0", None, True, None, 0)
    monkeypatch.setenv(access.TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match=f"{access.TOKEN_ENV}: an access token must be at least 12"):
        serve_policy("127.0.0.1", None, False, None, 0)
    monkeypatch.delenv(access.TOKEN_ENV)
    for bad in ("https://a.example/path", "a.example", "ftp://a.example"):
        with pytest.raises(ConfigError, match="--cors"):
            serve_policy("127.0.0.1", None, False, [bad], 0)


def test_serve_cli_refuses_an_open_non_loopback_bind(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(access.TOKEN_ENV, raising=False)
    assert main(["serve", str(tmp_path / "idx"), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token" in err[0] and "--no-auth" in err[0]
    assert main(["serve", str(tmp_path / "idx"), "--token", "abc"]) == 2
    assert "at least 12" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "idx"), "--tls-cert", "c.pem"]) == 2
    assert "go together" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def _request(port: int, target: str, token: str | None = None, method: str = "GET", tls: bool = False) -> bytes:
    """One raw HTTP/1.1 request to 127.0.0.1:port (over TLS, certificate not checked, with ``tls``)."""
    import ssl

    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s = ssl._create_unverified_context().wrap_socket(raw) if tls else raw
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: 192.0.2.1\r\n{auth}Content-Length: 0\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _get(port: int, target: str, token: str | None = None) -> int:
    return int(_request(port, target, token).split(b" ", 2)[1])


def _serve_cli(index: Path, *options: str, token: str = TOKEN) -> tuple[subprocess.Popen, int]:
    """`soundsift serve INDEX OPTIONS` in a subprocess with SOUNDSIFT_TOKEN set, once it answers."""
    port = _free_port()
    env = {**os.environ, access.TOKEN_ENV: token, "PYTHONPATH": os.pathsep.join(sys.path)}
    cli = "import sys, test_index; from soundsift.cli.main import main; sys.exit(main())"  # the tiny encoders
    proc = subprocess.Popen([sys.executable, "-c", cli, "serve", str(index), "--port", str(port), *options],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tls = "--tls-cert" in options
    deadline = time.monotonic() + 60
    while True:
        try:
            _request(port, "/api/health", tls=tls)
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(proc.communicate()[1]) from None
            time.sleep(0.2)


@pytest.mark.slow
def test_serve_on_all_interfaces_with_a_token_end_to_end(built):
    """`soundsift serve --host 0.0.0.0` with SOUNDSIFT_TOKEN, as a user runs it: it warns about plain HTTP,
    answers 401 without the token and 200 with it, and 429 past its rate limit."""
    proc, port = _serve_cli(built[0] / "idx", "--host", "0.0.0.0", "--rate-limit", "20")
    try:
        assert _get(port, "/api/health") == 200
        assert _get(port, "/api/search?q=rain") == 401 and _get(port, "/api/audio/0") == 401
        assert _get(port, "/api/search?q=rain", "wrong-token-123456") == 401
        assert _get(port, "/api/search?q=rain", TOKEN) == 200 and _get(port, "/api/audio/0", TOKEN) == 200
        answers = [_request(port, "/api/search?q=rain", TOKEN) for _ in range(20)]  # past 20 a minute
        limited = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
        assert limited and b"\r\nretry-after: " in limited[0].lower()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "plain HTTP" in err and "access token required" in out


@pytest.mark.slow
def test_serve_over_tls_sets_a_secure_cookie(built, tmp_path):
    """--tls-cert/--tls-key: HTTPS (a self-signed certificate made with openssl), no plain-HTTP warning,
    and the session cookie is Secure."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    proc, port = _serve_cli(built[0] / "idx", "--host", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert _request(port, "/api/info", tls=True).startswith(b"HTTP/1.1 401")
        answer = _request(port, "/api/login", TOKEN, method="POST", tls=True)
        assert answer.startswith(b"HTTP/1.1 200")
        cookie = next(line for line in answer.decode().split("\r\n") if line.lower().startswith("set-cookie:"))
        assert "; secure" in cookie.lower() and "httponly" in cookie.lower()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert "plain HTTP" not in err and f"https://0.0.0.0:{port}/" in out
