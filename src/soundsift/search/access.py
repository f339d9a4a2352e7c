"""Who may use the search server: an access token, a session cookie for the page's media, CORS and a
per-client rate limit. ``install_access(app, policy)`` adds them to a FastAPI app; ``serve`` decides the
policy (``soundsift.cli.search``), the routes know nothing of it.

- Token: with ``AccessPolicy.token`` set, every request but the page itself (``/``, ``/static/*``,
  ``/favicon.ico``, ``/api/health``) and CORS preflights must carry it as ``Authorization: Bearer TOKEN``,
  or the session cookie that ``POST /api/login`` sets after checking it; otherwise 401 with
  ``WWW-Authenticate: Bearer``. Tokens and cookies are compared with ``hmac.compare_digest`` (constant
  time). The cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) holds an HMAC of the token, never the
  token: the page's ``<audio>`` and ``<img>`` elements, which cannot send a header, use it.
- CORS: off (no ``Access-Control-*`` header at all) unless ``cors_origins`` names origins.
- Rate limit: a token bucket per client address (``rate_per_minute`` requests a minute, bursts of as
  many); past it, 429 with ``Retry-After`` (whole seconds). Behind a reverse proxy every client shares the
  proxy's address; ``X-Forwarded-For`` is not trusted (anyone can send it).
"""

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from soundsift.errors import ConfigError

SESSION_COOKIE = "soundsift_session"
TOKEN_ENV = "SOUNDSIFT_TOKEN"
MIN_TOKEN_CHARS = 12
DEFAULT_RATE = 600  # requests a minute per client address when bound beyond loopback
PUBLIC_PATHS = frozenset({"/", "/favicon.ico", "/api/health", "/api/login"})
_MAX_CLIENTS = 65536  # buckets kept; the least recently seen client is forgotten first (a full bucket)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is a loopback address: 127.0.0.0/8, ::1 or "localhost"."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_token(token: str, where: str = "--token") -> str:
    """``token`` if it is usable, else ConfigError naming ``where``: at least ``MIN_TOKEN_CHARS`` printable
    ASCII characters without spaces (it travels in an HTTP header)."""
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(
            f"{where}: an access token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
            "spaces; make one with: python -c \"import secrets; print(secrets.token_urlsafe(24))\""
        )
    return token


def check_origin(origin: str) -> str:
    """A CORS origin as browsers send it (``scheme://host[:port]``, no path), or "*"; else ConfigError."""
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query or parts.fragment:
        raise ConfigError(f"--cors {origin!r}: give an origin as scheme://host[:port] (no path), e.g. "
                          "https://sounds.example.org, or * for any")
    return origin.lower()


@dataclass(frozen=True)
class AccessPolicy:
    """The server's access rules (see the module docstring). ``rate_per_minute`` 0: no rate limit."""

    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    rate_per_minute: int = 0

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        for origin in self.cors_origins:
            check_origin(origin)
        if self.rate_per_minute < 0:
            raise ConfigError(f"--rate-limit {self.rate_per_minute}: give a number of requests a minute (0: none)")

    @property
    def session_value(self) -> str:
        """The session cookie's value: an HMAC of the token (the cookie never holds the token)."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"soundsift session v1", hashlib.sha256).hexdigest()


@dataclass
class RateLimiter:
    """A token bucket per client: ``per_minute`` requests a minute, bursts of up to ``per_minute``."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, client: str) -> float:
        """Take one request from ``client``'s bucket: 0.0 when allowed, else the seconds until it would be."""
        rate, capacity = self.per_minute / 60.0, float(self.per_minute)
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate
            self._buckets[client] = (tokens - 1.0 if wait == 0.0 else tokens, now)
            while len(self._buckets) > _MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authorized(policy: AccessPolicy, authorization: str | None, cookie: str | None) -> bool:
    """Whether a request with these headers may pass: always without a token; else the bearer token or
    the session cookie must match, compared in constant time."""
    if policy.token is None:
        return True
    given = bearer_token(authorization)
    if given is not None and hmac.compare_digest(given.encode(), policy.token.encode()):
        return True
    return cookie is not None and hmac.compare_digest(cookie.encode(), policy.session_value.encode())


def install_access(app, policy: AccessPolicy) -> None:
    """Add the policy's token check, login route, CORS and rate limit to ``app`` (call before the app's
    other middleware, so that these run inside them: security headers still reach a 401 or 429)."""
    from fastapi import Request
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse

    unauthorized = {"detail": "this server needs an access token: send Authorization: Bearer TOKEN "
                              "(the page asks for it)"}
    challenge = {"WWW-Authenticate": 'Bearer realm="soundsift"'}

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        path = request.url.path
        if policy.token is None or path in PUBLIC_PATHS or path.startswith("/static/"):
            return await call_next(request)
        if not authorized(policy, request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE)):
            return JSONResponse(unauthorized, status_code=401, headers=challenge)
        return await call_next(request)

    @app.post("/api/login", response_model=None, summary="Check an access token; sets the session cookie the page's media use")
    def login(request: Request):
        if policy.token is None:
            return JSONResponse({"auth": False})
        given = bearer_token(request.headers.get("authorization"))
        if given is None or not hmac.compare_digest(given.encode(), policy.token.encode()):
            return JSONResponse({"detail": "wrong or missing access token"}, status_code=401, headers=challenge)
        response = JSONResponse({"auth": True})
        response.set_cookie(SESSION_COOKIE, policy.session_value, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    if policy.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(policy.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "HEAD", "POST"], allow_headers=["Authorization", "Range"],
                           expose_headers=["Content-Range", "Accept-Ranges", "Retry-After"], max_age=600)

    if policy.rate_per_minute:
        limiter = RateLimiter(policy.rate_per_minute)

        @app.middleware("http")
        async def rate_limit(request: Request, call_next):
            wait = limiter.acquire(request.client.host if request.client else "unknown")
            if wait > 0:
                return JSONResponse(
                    {"detail": f"too many requests from this address (limit {policy.rate_per_minute} a minute)"},
                    status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
            return await call_next(request)


def serve_policy(host: str, token: str | None, no_auth: bool, cors: list[str] | None,
                 rate_per_minute: int | None, tls: bool = False) -> tuple[AccessPolicy, list[str]]:
    """The policy ``serve`` runs with, and the warnings to print. A token comes from ``--token`` or else
    the ``SOUNDSIFT_TOKEN`` environment variable; a bind beyond loopback without one is refused unless
    ``no_auth`` says so explicitly (then warned about), and a token sent over plain HTTP beyond loopback
    is warned about. ``rate_per_minute`` None: ``DEFAULT_RATE`` beyond loopback, no limit on a loopback
    bind (its only clients are this machine's, trusted as the bind trusts them)."""
    import os

    where = "--token"
    if token is None and os.environ.get(TOKEN_ENV):
        token, where = os.environ[TOKEN_ENV], TOKEN_ENV
    if token is not None and no_auth:
        raise ConfigError(f"--no-auth and an access token ({where}) contradict each other; drop one")
    if token is not None:
        check_token(token, where)
    warnings = []
    if not is_loopback(host):
        if token is None and not no_auth:
            raise ConfigError(
                f"--host {host} is reachable beyond this machine: give an access token (--token TOKEN or the "
                f"{TOKEN_ENV} environment variable), or say --no-auth to serve the library to anyone who can "
                "reach it"
            )
        if no_auth:
            warnings.append(f"warning: --no-auth: anyone who can reach {host} can search and download the "
                            "indexed files")
        elif not tls:
            warnings.append(f"warning: serving on {host} over plain HTTP: the token and the sounds cross the "
                            "network unencrypted; give --tls-cert/--tls-key or serve behind an HTTPS proxy")
    if rate_per_minute is None:
        rate_per_minute = 0 if is_loopback(host) else DEFAULT_RATE
    policy = AccessPolicy(token=token, cors_origins=tuple(check_origin(o) for o in cors or ()),
                          rate_per_minute=rate_per_minute)
    return policy, warnings
