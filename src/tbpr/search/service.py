"""The HTTP search service: a FastAPI app over a loaded ``Searcher`` and the air-gapped web page.

Routes: ``POST /api/search``, ``POST /api/similar`` (image to image), ``GET /api/images/{id}``,
``GET /api/health``, the page at ``/`` (files in ``static/``) and the OpenAPI schema at
``/openapi.json`` (``/docs`` renders it). Security layers, as pure ASGI middleware so they act before
any parsing: security headers on every response, a ``Host`` check (400 unless the name is one the server
was started for: DNS rebinding cannot reach it), the API key on every ``/api/`` route (constant-time
comparison), a request-body size limit (413), and a catch-all that logs the traceback and answers
``500 {"detail": "internal error"}``. Errors are ``{"detail": str}``. No response is a redirect built
from the request's ``Host`` (trailing-slash redirects are off).

No ``from __future__ import annotations`` here: FastAPI must resolve the request model defined inside
``create_app`` from the endpoint's annotations.
"""

import contextlib
import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from tbpr.errors import ConfigError, DataError, TbprError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# Image ids are opaque tokens, never paths: no dot, slash, backslash or NUL can pass.
IMAGE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
IMAGE_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# FastAPI's Swagger UI loads its script and stylesheet from a CDN: /docs alone may use it (needs internet).
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# The names a browser uses for this machine; ``Host`` must be one of them (or of ``allowed_hosts``).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, for a person to read")


class SearchHit(BaseModel):
    rank: int = Field(ge=1, description="1 for the best match")
    id: str = Field(pattern=IMAGE_ID_PATTERN, description="the gallery image's id")
    score: float = Field(description="cosine similarity between the query and the image")
    image_url: str = Field(description="URL of the image: /api/images/{id}")
    path: str = Field(description="the image's path relative to the gallery folder (display only)")


class SearchResponse(BaseModel):
    query: str
    k: int
    took_ms: float = Field(description="server-side search time in milliseconds (with any queueing)")
    results: list[SearchHit] = Field(description="best first; at most k (fewer if the gallery is smaller)")


class SimilarResponse(BaseModel):
    id: str = Field(description="the gallery image searched with")
    path: str = Field(description="its path relative to the gallery folder (display only)")
    k: int
    took_ms: float = Field(description="server-side search time in milliseconds (with any queueing)")
    results: list[SearchHit] = Field(description="best first, the image itself left out; at most k")


class HealthResponse(BaseModel):
    status: str = Field(description='"ok" once the model and index are loaded')
    gallery_size: int = Field(description="number of images in the index")
    model: str = Field(description="the model's architecture")
    index_kind: str = Field(description="flat (exact), hnsw or ivf (approximate)")


def create_app(
    searcher,
    *,
    api_key: str | None = None,
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
    max_query_chars: int = 1000,
    max_k: int = 100,
    max_body_bytes: int = 16 * 1024,
) -> FastAPI:
    """The service around ``searcher`` (a ``tbpr.search.searcher.Searcher``, loaded once by the caller).

    ``allowed_hosts``: the names (without port) a request's ``Host`` header may carry; ``"*"`` allows any.

    Every API request first lets the searcher pick up a newer generation of its index (a stat when none).
    """

    class RankingRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        k: int = Field(10, ge=1, le=max_k, strict=True, description="number of results")

        @field_validator("k", mode="before")
        @classmethod
        def integral_float(cls, value):
            """JSON Schema counts 5.0 as an integer; strings and booleans stay refused."""
            return int(value) if isinstance(value, float) and value.is_integer() else value

    class SearchRequest(RankingRequest):
        query: str = Field(
            min_length=1,
            max_length=max_query_chars,
            pattern=r"\S",
            strict=True,
            description="a description of the person (must contain a non-space character)",
            examples=["a woman in a red jacket and black trousers carrying a white bag"],
        )

    class SimilarRequest(RankingRequest):
        id: str = Field(
            pattern=IMAGE_ID_PATTERN, strict=True, description="a gallery image's id (from a search)"
        )

    search_lock = threading.Lock()  # one query at a time: torch already uses every core for one
    app = FastAPI(
        title="tbpr search",
        version="1",
        summary="Find a person in a gallery of pedestrian images from a text description.",
        redoc_url=None,
        redirect_slashes=False,  # a redirect's Location would be built from the request's Host
    )

    def error(description: str) -> dict:
        return {"model": ErrorResponse, "description": description}

    auth = {401: error("missing or wrong API key")} if api_key is not None else {}
    invalid = {422: error("invalid request: the detail names the field")}

    body = {  # what every JSON-body endpoint may answer before its handler runs
        **auth,
        **invalid,
        400: error("the body is not text (e.g. not UTF-8)"),
        413: error(f"the body is over {max_body_bytes} bytes"),
    }

    @app.post("/api/search", response_model=SearchResponse, responses=body)
    def search(request: SearchRequest) -> SearchResponse:
        """Rank the gallery against a text query; the best ``k`` images, best first."""
        start = time.perf_counter()
        searcher.refresh()  # between requests: pick up a generation `tbpr index update` wrote
        try:
            with search_lock:
                hits = searcher.search(request.query, k=request.k)
        except TbprError as err:  # e.g. a query of characters Python counts as blank
            raise HTTPException(422, str(err)) from None
        took_ms = 1000 * (time.perf_counter() - start)
        return SearchResponse(query=request.query, k=request.k, took_ms=took_ms, results=search_hits(hits))

    @app.post(
        "/api/similar",
        response_model=SimilarResponse,
        responses={**body, 404: error("no image with this id in the gallery")},
    )
    def similar(request: SimilarRequest) -> SimilarResponse:
        """Rank the gallery against one of its images (image to image); the image itself is left out."""
        searcher.refresh()
        start = time.perf_counter()
        try:
            with search_lock:
                hits = searcher.similar(request.id, k=request.k)
        except KeyError:
            raise HTTPException(404, f"no image with id {request.id!r} in the gallery") from None
        took_ms = 1000 * (time.perf_counter() - start)
        path = searcher.image_path(request.id)
        return SimilarResponse(
            id=request.id, path=path, k=request.k, took_ms=took_ms, results=search_hits(hits)
        )

    @app.get(
        "/api/images/{image_id}",
        response_class=Response,
        responses={
            **auth,
            **invalid,
            404: error("no image with this id (or its file is gone or changed since indexing)"),
            200: {"content": {t: {} for t in sorted(set(IMAGE_MEDIA_TYPES.values()))}},
        },
    )
    def image(
        image_id: Annotated[str, PathParam(pattern=IMAGE_ID_PATTERN, description="an id from /api/search")],
    ) -> Response:
        """A gallery image by its id (never by a path), only while its file is the one indexed."""
        searcher.refresh()
        try:
            data = searcher.read_image(image_id)
        except KeyError:
            raise HTTPException(404, f"no image with id {image_id!r} in the gallery") from None
        except DataError as err:  # gone, replaced, or now a link out of the folder: never served
            log.warning("image %s of the index is not served: %s", image_id, err)
            raise HTTPException(404, f"the file of image {image_id!r} is missing or changed") from None
        media_type = IMAGE_MEDIA_TYPES.get(
            searcher.image_file(image_id).suffix.lower(), "application/octet-stream"
        )
        return Response(data, media_type=media_type, headers={"cache-control": "private, max-age=3600"})

    @app.get("/api/health", response_model=HealthResponse, responses=auth)
    def health() -> HealthResponse:
        """Liveness and what is loaded: gallery size and model."""
        searcher.refresh()
        info = searcher.info()
        return HealthResponse(
            status="ok", gallery_size=info["size"], model=info["model"]["arch"], index_kind=info["kind"]
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    app.openapi = lambda: _openapi_schema(app, api_key is not None)
    # Added innermost first: a request meets headers, the Host check, the key, the size limit, the catch-all.
    app.add_middleware(_CatchAll)
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    if api_key is not None:
        app.add_middleware(_ApiKey, key=api_key)
    if "*" not in allowed_hosts:
        app.add_middleware(_AllowedHosts, hosts=allowed_hosts)
    app.add_middleware(_SecurityHeaders)
    return app


def search_hits(hits) -> list[SearchHit]:
    """The API's form of ``Searcher`` results: each with the URL of its image."""
    return [
        SearchHit(rank=h.rank, id=h.id, score=h.score, image_url=f"/api/images/{h.id}", path=h.path)
        for h in hits
    ]


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One readable line from pydantic's errors; the input is never echoed (it may be huge or unprintable)."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"malformed JSON body: {err.get('ctx', {}).get('error', 'cannot parse')}")
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _openapi_schema(app: FastAPI, keyed: bool) -> dict:
    """FastAPI's schema plus the API-key schemes (the check itself is the ``_ApiKey`` middleware)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        if keyed:
            schema["components"]["securitySchemes"] = {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
            schema["security"] = [{"apiKey": []}, {"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


async def _reply(send, status: int, detail: str, extra_headers=()) -> None:
    """Answer ``{"detail": detail}`` straight from a middleware."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra_headers]})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k == name), None)


class _SecurityHeaders:
    """CSP, nosniff, no-referrer and frame denial on every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = _DOCS_CSP if scope["path"] in ("/docs", "/docs/oauth2-redirect") else _PAGE_CSP

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(b"content-security-policy", csp.encode()), *_SECURITY_HEADERS]
                message["headers"] = [
                    *message.get("headers", ()),
                    *((k, v) for k, v in extra if k not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def host_name(header: bytes) -> str:
    """The name in a ``Host`` header value, without port or IPv6 brackets, lower-case."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _AllowedHosts:
    """400 for a request whose ``Host`` is not a name the server was started for (DNS rebinding)."""

    def __init__(self, app, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = frozenset(host_name(h.encode()) for h in hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and host_name(_header(scope, b"host") or b"") not in self.hosts:
            return await _reply(
                send, 400, "this server does not answer for that Host name (tbpr serve --allowed-host NAME)"
            )
        await self.app(scope, receive, send)


class _ApiKey:
    """401 on every ``/api/`` request without the key (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``)."""

    def __init__(self, app, key: str) -> None:
        self.app = app
        self.digest = hashlib.sha256(key.encode()).digest()

    def authorized(self, scope) -> bool:
        given = _header(scope, b"x-api-key")
        if given is None:
            scheme, _, token = (_header(scope, b"authorization") or b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        # Equal-length digests compared in constant time: neither the key nor its length leaks.
        return hmac.compare_digest(hashlib.sha256(given).digest(), self.digest)

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if (path == "/api" or path.startswith("/api/")) and not self.authorized(scope):
            return await _reply(
                send,
                401,
                "missing or wrong API key: send X-API-Key or Authorization: Bearer",
                [(b"www-authenticate", b"Bearer")],
            )
        await self.app(scope, receive, send)


class _BodyLimit:
    """413 for a request body over ``max_bytes``, decided before anything parses it (chunked bodies too)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body too large: the limit is {self.max_bytes} bytes"
        declared = _header(scope, b"content-length") or b""  # a malformed one never reaches us: uvicorn 400s
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(send, 413, too_large)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _reply(send, 413, too_large)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class _CatchAll:
    """Any unhandled exception: traceback to the log, ``500 {"detail": "internal error"}`` to the client."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("error while serving %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await _reply(send, 500, "internal error")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one); ConfigError when that is impossible."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a TCP port is 1 to 65535 (0: any free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"--host {host}: not an address of this machine ({err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not a busy port: a TIME_WAIT one
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = "another program listens there; choose another --port" if err.errno == errno.EADDRINUSE else ""
        raise ConfigError(
            f"cannot listen on {host}:{port}: {err.strerror}{'; ' + hint if hint else ''}"
        ) from None
    return sock


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port in a background thread; yields its base URL."""
    import uvicorn

    sock = bind_socket(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the uvicorn server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
