"""HTTP search API and web page for an index (FastAPI). Holds no search logic: see ``soundsift.search.index``.

Routes: ``GET /api/search?q=&like=&k=&rank=&moments=&where=`` (the objects of ``search --json``, with the
best moment's ``start``/``end``; ``like=ID`` ranks by similarity to an indexed sound, leaving that
sound out; with ``q`` too, both combined),
``GET /api/audio/{id}`` (only indexed files, looked up by id; no path is ever built from request
input), ``GET /api/thumbnail/{id}`` (its spectrogram, PNG), ``GET /api/duplicates/{id}`` (its identical and
near-duplicate files, ``search.dupes``), ``GET /api/info``, ``POST /api/login`` (checks an access token: ``search.access``), ``GET /`` (the page, no
external resources), ``GET /openapi.json``. Bad input gets a 4xx JSON error.
"""

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from soundsift.audio import AUDIO_MEDIA_TYPES
from soundsift.errors import ConfigError, require
from soundsift.search.access import AccessPolicy, install_access

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ID_RE = re.compile(r"[0-9]{1,15}")
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; media-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def check_port(host: str, port: int) -> None:
    """Refuse (ConfigError) an address ``serve`` could not listen on, a port in use say, before the model
    loads: binds a socket to every address of ``host`` the way uvicorn (asyncio's create_server) will."""
    import errno
    import socket

    if not 0 <= port <= 65535:  # getaddrinfo would wrap it round
        raise ConfigError(f"port {port} is not a TCP port number (0 to 65535)")
    try:
        for family, kind, proto, _, address in set(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                      flags=socket.AI_PASSIVE)):
            with socket.socket(family, kind, proto) as sock:
                if os.name == "posix":  # as asyncio: a port left in TIME_WAIT is free
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use; pass --port N (or stop the other "
                              "server)") from None
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None


def _read_static(name: str) -> bytes:
    return resources.files("soundsift.search").joinpath("static", name).read_bytes()


def create_app(
    index_path: str | Path,
    model_path: str | Path | None = None,
    *,
    backend: str = "auto",
    max_query_chars: int = 1000,
    max_k: int = 100,
    allowed_hosts: list[str] | None = None,
    access: AccessPolicy | None = None,
    searcher=None,
):
    """The FastAPI app for the index at ``index_path``, queried with ``model_path`` (default: the model
    recorded in the index; a different model is refused). ``allowed_hosts`` restricts the Host header
    (``serve`` sets it for loopback binds, against DNS rebinding). ``access``: the token, CORS and rate
    limit (``search.access``; default: none, as on a loopback bind). ``searcher`` injects a ready
    ``TextSearcher`` (tests)."""
    require("fastapi", "the optional extra: pip install 'soundsift[serve]'", "soundsift serve")
    from fastapi import FastAPI, HTTPException, Query
    from pydantic import BaseModel, Field

    from soundsift.search.index import describe, load_searcher
    from soundsift.search.reload import LiveSearcher
    from soundsift.version import __version__

    if searcher is None:
        searcher = load_searcher(index_path, model_path, backend=backend)
    live = LiveSearcher(searcher, backend)  # each request uses the newest version (``index update``/``watch``)

    class HitOut(BaseModel):
        rank: int
        id: int
        path: str
        score: float
        duration: float
        start: float = Field(description="start (s) of the best-matching moment")
        end: float = Field(description="end (s) of the best-matching moment")
        moments: list[dict[str, float]] | None = None

    app = FastAPI(
        title="soundsift search", version=__version__, docs_url=None, redoc_url=None,
        openapi_url="/openapi.json",
        description="Text-to-audio search over an indexed sound library.",
    )
    app.state.searcher = searcher
    app.state.live = live

    install_access(app, access or AccessPolicy())
    _guard(app, allowed_hosts)

    @app.get("/api/search", response_model=list[HitOut], response_model_exclude_none=True,
             summary="Search the sounds with a text query, an indexed example sound, or both")
    def search(
        q: str = Query("", max_length=max_query_chars, description="text query"),
        like: str | None = Query(None, max_length=20, description=(
            "id of an indexed sound: rank by similarity to it (it is left out of the results); "
            "with q too, the sum of the two normalised query vectors")),
        k: int = Query(10, ge=1, le=max_k, description=f"number of results, 1 to {max_k}"),
        rank: Literal["moments", "files"] = Query("moments", description="rank files by best moment or whole file"),
        moments: int | None = Query(None, ge=1, le=100, description="up to N moments per result"),
        where: str | None = Query(None, max_length=1000, description=(
            "only files that match this filter, e.g. duration < 5 and path ~ 'foley/' (fields: duration, size, "
            "sample_rate, channels, path, folder, ext, id)")),
    ) -> list[dict[str, Any]]:
        searcher = live.current()  # one version for the whole request
        index = searcher.index
        example = None
        if like is not None:
            if not _ID_RE.fullmatch(like):
                raise HTTPException(422, detail=f"like must be the id of an indexed sound (digits); got {like!r}")
            example = _indexed(index, like, "sound").id
        if not q.strip() and example is None:
            raise HTTPException(422, detail="the query is empty: give q (text), like (a sound id), or both")
        like_vector = None if example is None else index.vector(example)
        try:
            hits = searcher.search(q if q.strip() else None, k, like=like_vector, exclude=example, rank=rank,
                                   moments=moments, where=where or None)
        except ConfigError as exc:  # a query with nothing left once normalised ("!!!")
            raise HTTPException(422, detail=str(exc)) from None
        return [h.to_dict() for h in hits]

    _add_files(app, live)
    _add_duplicates(app, live)

    @app.get("/api/info", summary="Index summary and request limits")
    def info() -> dict[str, Any]:
        return {**describe(live.current().index), "max_k": max_k, "max_query_chars": max_query_chars}

    @app.get("/api/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    _add_page(app)
    return app


def _guard(app, allowed_hosts: list[str] | None) -> None:
    """The app's protections: the Host check against DNS rebinding, security headers on every answer,
    and 422 answers that do not echo the input back."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    allowed = {h.strip("[]").lower() for h in allowed_hosts or ()}

    @app.middleware("http")
    async def check_host(request: Request, call_next):
        # Against DNS rebinding: a page on another site that resolves its name to 127.0.0.1 still
        # sends its own name as Host. (Starlette's TrustedHostMiddleware mis-parses "[::1]:8000".)
        if allowed:
            host = request.headers.get("host", "")
            name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name.lower() not in allowed:
                return JSONResponse({"detail": "invalid Host header"}, status_code=400)
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Content-Security-Policy", _CSP)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Like FastAPI's 422, without echoing the (possibly huge) input back.
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)


def _add_duplicates(app, live) -> None:
    """``GET /api/duplicates/{id}``: the indexed files identical to or near-duplicates of one (by id)."""
    from fastapi import Query

    from soundsift.search.dupes import DEFAULT_MAX_DURATION_CHANGE, DEFAULT_THRESHOLD, DuplicateLookup

    cached: list[DuplicateLookup] = []  # the live version's lookup, built on first use: a pass over the entries

    @app.get("/api/duplicates/{dupe_id}", summary="Files identical to or near-duplicates of an indexed sound")
    def duplicates(
        dupe_id: str,
        threshold: float = Query(DEFAULT_THRESHOLD, ge=0.0, le=1.0, description=(
            "cosine similarity of whole-file embeddings from which two files are near-duplicates")),
        max_duration_change: float = Query(DEFAULT_MAX_DURATION_CHANGE, ge=0.0, le=1.0, description=(
            "near-duplicates' durations differ by at most this fraction of the longer one")),
    ) -> list[dict[str, Any]]:
        index = live.current().index
        entry = _indexed(index, dupe_id, "sound")
        if not cached or cached[0].index is not index:  # first use, or a new version went live
            cached[:] = [DuplicateLookup(index)]
        return [m.to_dict() for m in cached[0].of(entry.id, threshold, max_duration_change=max_duration_change)]


def _add_page(app) -> None:
    """The search page and its static files: a fixed set read at start-up, served by name."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse, Response

    pages = {name: _read_static(name) for name in ("index.html", *_STATIC)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(pages["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC:  # a fixed set of files read at start-up
            raise HTTPException(404, detail="not found")
        return Response(pages[name], media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)


def _indexed(index, raw: str, what: str):
    """The entry named by a request's id (digits only), or 404; no path is built from ``raw``."""
    from fastapi import HTTPException

    entry = index.get(int(raw)) if _ID_RE.fullmatch(raw) else None
    if entry is None:
        raise HTTPException(404, detail=f"no indexed {what} has id {raw[:40]!r}")
    return entry


def _add_files(app, live) -> None:
    """The indexed sounds and their thumbnails, by id: only what the index lists, checked on disk."""
    from stat import S_ISREG

    from fastapi import HTTPException, Request
    from fastapi.responses import FileResponse, Response

    audio_root_real = os.path.realpath(live.current().index.audio_root)

    class WholeFile(FileResponse):
        """A FileResponse that ignores the request's Range header: the whole file, 200."""

        async def __call__(self, scope, receive, send) -> None:
            headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
            await super().__call__({**scope, "headers": headers}, receive, send)

    @app.head("/api/audio/{audio_id}", include_in_schema=False)
    @app.get("/api/audio/{audio_id}", summary="Stream one indexed file (by id; one HTTP byte range, for seeking)",
             response_class=FileResponse, responses={206: {"description": "the requested byte range"},
                                                     416: {"description": "a malformed or unsatisfiable Range"}})
    def audio(audio_id: str, request: Request) -> FileResponse:
        index = live.current().index
        entry = _indexed(index, audio_id, "sound")
        path = index.audio_file(entry.id)  # from the manifest only
        try:
            st = os.stat(path)
        except OSError:
            raise HTTPException(404, detail=f"sound {entry.id} is missing from disk; rebuild the index") from None
        inside = os.path.commonpath([os.path.realpath(path), audio_root_real]) == audio_root_real
        same = st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns
        if not S_ISREG(st.st_mode) or not (inside or same):  # e.g. a link swapped in that points outside
            raise HTTPException(404, detail=f"sound {entry.id} changed since indexing; rebuild the index")
        media = AUDIO_MEDIA_TYPES.get(Path(entry.path).suffix.lower(), "application/octet-stream")
        # One stat for the checks, the headers and the range: the Content-Range total is the size served.
        response = FileResponse if _serve_range(request.headers.get("range"), st.st_size) else WholeFile
        return response(path, media_type=media, filename=Path(entry.path).name, stat_result=st,
                        content_disposition_type="inline", headers={"Cache-Control": "private, max-age=3600"})

    @app.head("/api/thumbnail/{thumb_id}", include_in_schema=False)
    @app.get("/api/thumbnail/{thumb_id}", summary="Spectrogram thumbnail of one indexed sound (PNG, by id)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def thumbnail(thumb_id: str, request: Request) -> Response:
        index = live.current().index
        entry = _indexed(index, thumb_id, "sound")
        png = index.thumbnail_png(entry.id)  # from the index version's thumbnail array only
        if png is None:
            raise HTTPException(404, detail=f"the index has no thumbnails (sound {entry.id}); rebuild it")
        # An id keeps its number when its file changes: the tag names the content and the index version.
        etag = f'"{index.version_dir.name}-{entry.id}-{entry.sha256[:16]}"'
        headers = {"Cache-Control": "private, max-age=86400", "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(png, media_type="image/png", headers=headers)


_BYTE_RANGE = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")


def _serve_range(header: str | None, size: int) -> bool:
    """Whether FileResponse is to answer the Range ``header`` (206): a single satisfiable byte range, so every
    Starlette version with Range support answers it alike. False when there is none or it is ignored (the
    whole file, 200, as RFC 9110 permits): another unit (RFC 9110 says ignore it; Starlette answers 400) or
    several ranges (no media player asks for them; Starlette's multipart refuses a whole set for one range
    beyond the file). A malformed, reversed or out-of-range one gets 416 with ``Content-Range: bytes */size``
    (Starlette answers the first two 400)."""
    from fastapi import HTTPException

    if header is None:
        return False
    unit, equals, spec = header.partition("=")
    if (equals and unit.strip().lower() != "bytes") or "," in spec:
        return False
    spec = spec.strip()
    match = _BYTE_RANGE.fullmatch(spec) if len(spec) <= 80 else None  # int() refuses 4300+ digits
    first, last, suffix = (int(g) if g else None for g in match.groups()) if match else (None, None, None)
    if match is None:
        problem = "malformed Range header: expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT"
    elif last is not None and last < first:
        problem = f"Range bytes={spec} ends before it starts"
    elif (size - min(suffix, size) if first is None else first) >= size:
        problem = f"Range bytes={spec} asks for nothing of the file's {size} bytes"
    else:
        return True
    raise HTTPException(416, detail=problem, headers={"Content-Range": f"bytes */{size}"})


def check_tls(cert: str | None, key: str | None) -> bool:
    """Whether ``serve`` runs HTTPS: both files given and readable (ConfigError naming the one at fault),
    or neither."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both (a certificate and its key) or neither")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{option} {path}: no such file")
    return cert is not None
