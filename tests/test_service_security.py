"""The service's security: API key, ids-only images, path traversal, limits, error bodies, headers, CLI."""

import dataclasses
import http.client
import logging
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tbpr.cli import main
from tbpr.cli.serve_cmd import API_KEY_ENV
from tbpr.search.service import create_app, is_loopback, serve_in_thread

KEY = "correct horse battery staple"
AUTH = {"X-API-Key": KEY}
QUERY = "a woman in a red jacket"
LOCAL = "http://localhost"  # TestClient's default Host, testserver, is not a name the service answers for
ROUTES = [
    ("POST", "/api/search", {"json": {"query": QUERY, "k": 3}}),
    ("POST", "/api/similar", {"json": {"id": "{id}", "k": 3}}),
    ("GET", "/api/images/{id}", {}),
    ("GET", "/api/health", {}),
    ("GET", "/api/no-such-route", {}),
]
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@pytest.fixture(scope="module")
def client(tiny_searcher):
    return TestClient(create_app(tiny_searcher, api_key=KEY), raise_server_exceptions=False, base_url=LOCAL)


@pytest.fixture(scope="module")
def image_id(tiny_searcher):
    return tiny_searcher.search(QUERY, k=1)[0].id


def with_id(kwargs: dict, image_id: str) -> dict:
    """A route's request arguments with a JSON body's ``"{id}"`` replaced by a gallery image's id."""
    if "json" not in kwargs:
        return kwargs
    return {"json": {k: image_id if v == "{id}" else v for k, v in kwargs["json"].items()}}


def assert_clean_error(response, status: int) -> str:
    """A JSON ``{"detail": str}`` error with the security headers and nothing of a traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert_security_headers(response)
    return detail


def assert_security_headers(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert value in response.headers.get(name, ""), name


# ------------------------------------------------------------------------------------------- API key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"X-Api-Key-Typo": KEY},
    ],
    ids=["none", "wrong", "prefix", "longer", "empty", "bearer-prefix", "basic", "no-scheme", "other-header"],
)
@pytest.mark.parametrize("method,route,kwargs", ROUTES, ids=[r[1] for r in ROUTES])
def test_every_api_route_needs_the_key(client, image_id, headers, method, route, kwargs):
    response = client.request(method, route.format(id=image_id), headers=headers, **with_id(kwargs, image_id))
    assert "API key" in assert_clean_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [AUTH, {"Authorization": f"Bearer {KEY}"}], ids=["x-api-key", "bearer"])
@pytest.mark.parametrize("method,route,kwargs", ROUTES[:4], ids=[r[1] for r in ROUTES[:4]])
def test_the_right_key_opens_every_api_route(client, image_id, headers, method, route, kwargs):
    response = client.request(method, route.format(id=image_id), headers=headers, **with_id(kwargs, image_id))
    assert response.status_code == 200


def test_the_key_is_checked_before_the_body_is_read(client):
    # malformed and oversized bodies get 401, not 422/413, without the key
    assert_clean_error(client.post("/api/search", content=b"{not json"), 401)
    assert_clean_error(client.post("/api/search", content=b"x" * 100_000), 401)


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css", "/openapi.json"])
def test_page_and_schema_load_without_the_key(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert_security_headers(response)


# ------------------------------------------------------------------------------ images by id, traversal

TRAVERSALS = [
    "/api/images/../../etc/passwd",
    "/api/images/..%2F..%2Fetc%2Fpasswd",
    "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/api/images/%2E%2E/%2E%2E/etc/passwd",
    "/api/images/%252e%252e%252fetc%252fpasswd",
    "/api/images/..",
    "/api/images/.",
    "/api/images/%2e%2e",
    "/api/images/%2Fetc%2Fpasswd",
    "/api/images//etc/passwd",
    "/api/images/..%5C..%5Cetc%5Cpasswd",
    "/api/images/C:%5Cwindows%5Cwin.ini",
    "/api/images/abc%00def",
    "/api/images/abc%00",
    "/api/images/a/b",
    "/api/images/{id}%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/images/{id}/../../../../etc/passwd",
    "/api/images/{id}.jpg",
    "/api/images/{id}%20",
    "/api/images/" + "a" * 65,
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/service.py",
    "/static/../service.py",
]


@pytest.fixture(scope="module")
def server(client):
    """The same app under uvicorn on loopback: ``http.client`` sends paths verbatim (httpx resolves ``..``)."""
    with serve_in_thread(client.app) as url:
        yield urlsplit(url)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_reads_a_file(client, server, image_id, path):
    path = path.format(id=image_id)
    connection = http.client.HTTPConnection(server.hostname, server.port, timeout=10)
    connection.request("GET", path, headers=AUTH)
    raw = connection.getresponse()
    responses = [(raw.status, raw.getheader("content-type", ""), raw.read().decode("latin-1"))]
    connection.close()
    response = client.get(path, headers=AUTH)
    responses.append((response.status_code, response.headers.get("content-type", ""), response.text))
    for status, content_type, text in responses:
        assert 400 <= status < 500, (status, path)
        assert "root:" not in text and "create_app" not in text
        assert not content_type.startswith("image/")


def test_the_id_pattern_rejects_separators_and_nul(client):
    for bad in ("a%5Cb", "a%00b", ".hidden", "a.b", "%20"):
        assert "image_id" in assert_clean_error(client.get(f"/api/images/{bad}", headers=AUTH), 422)


def test_unknown_id_is_404(client):
    assert "0123456789abcdef" in assert_clean_error(
        client.get("/api/images/0123456789abcdef", headers=AUTH), 404
    )


def test_an_indexed_image_whose_file_is_gone_is_404(client, image_id, tiny_searcher, tmp_path, monkeypatch):
    gen = tiny_searcher._gen  # the gallery folder is now empty
    monkeypatch.setattr(
        tiny_searcher, "_gen", dataclasses.replace(gen, meta={**gen.meta, "images_dir": str(tmp_path)})
    )
    assert "missing" in assert_clean_error(client.get(f"/api/images/{image_id}", headers=AUTH), 404)


def test_images_are_only_served_for_ids_of_the_index(client, image_id, tiny_searcher):
    path = tiny_searcher.image_file(image_id)
    assert path.is_file()
    for not_an_id in (path.name, path.stem, str(path).lstrip("/").replace("/", "%2F")):
        assert client.get(f"/api/images/{not_an_id}", headers=AUTH).status_code in (404, 422)


# ---------------------------------------------------------------------------------- limits and bodies


def test_oversized_body_is_413_before_parsing(client):
    body = b'{"query": "' + b"x" * 20_000 + b'"}'
    assert "16384" in assert_clean_error(client.post("/api/search", content=body, headers=AUTH), 413)
    # even a syntactically broken one: the size is checked first
    assert_clean_error(client.post("/api/search", content=b"{" * 20_000, headers=AUTH), 413)


def test_oversized_chunked_body_is_413(client):
    def chunks():
        for _ in range(40):
            yield b"x" * 1024

    response = client.post(
        "/api/search", content=chunks(), headers={**AUTH, "content-type": "application/json"}
    )
    assert_clean_error(response, 413)


def test_body_under_the_limit_is_accepted(tiny_searcher):
    client = TestClient(create_app(tiny_searcher, max_body_bytes=64), base_url=LOCAL)
    assert client.post("/api/search", json={"query": "red"}).status_code == 200
    assert_clean_error(client.post("/api/search", json={"query": "x" * 64}), 413)


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"{", "malformed JSON"),
        (b'{"query": "a",}', "malformed JSON"),
        (b"", "body"),
        (b"null", "body"),
        (b"[]", "body"),
        (b'"red jacket"', "body"),
        (b'{"k": 3}', "query"),
        (b'{"query": 5}', "query"),
        (b'{"query": ["red"]}', "query"),
        (b'{"query": null}', "query"),
        (b'{"query": "red", "k": "5"}', "k"),
        (b'{"query": "red", "k": 2.5}', "k"),
        (b'{"query": "red", "k": true}', "k"),
        (b'{"query": "red", "k": null}', "k"),
        (b'{"query": "red", "path": "/etc/passwd"}', "path"),
        (b'{"query": "\\ud800"}', "query"),
    ],
)
def test_malformed_and_wrong_typed_bodies_are_422(client, body, expected):
    response = client.post("/api/search", content=body, headers={**AUTH, "content-type": "application/json"})
    assert expected in assert_clean_error(response, 422)


def test_body_that_is_not_utf8_is_400(client):
    response = client.post(
        "/api/search", content=b'{"query": "\xff\xfe"}', headers={**AUTH, "content-type": "application/json"}
    )
    assert_clean_error(response, 400)


def test_non_json_content_type_is_422(client):
    response = client.post(
        "/api/search", content=b'{"query": "red"}', headers={**AUTH, "content-type": "text/plain"}
    )
    assert_clean_error(response, 422)


@pytest.mark.parametrize("k", [0, -1, 101, 10**12])
def test_k_out_of_range_is_422(client, k):
    assert "k" in assert_clean_error(
        client.post("/api/search", json={"query": QUERY, "k": k}, headers=AUTH), 422
    )


@pytest.mark.parametrize(
    "query", ["", " ", "\t\n ", "\x1c", "x" * 1001], ids=["empty", "space", "blank", "fs", "long"]
)
def test_empty_blank_or_too_long_query_is_422(client, query):
    response = client.post("/api/search", json={"query": query}, headers=AUTH)
    assert "query" in assert_clean_error(response, 422) or "empty" in response.json()["detail"]


def test_longest_allowed_query_is_searched(client):
    assert client.post("/api/search", json={"query": "red " * 250}, headers=AUTH).status_code == 200


def test_path_like_query_is_just_text(client):
    response = client.post("/api/search", json={"query": "../../etc/passwd", "k": 2}, headers=AUTH)
    assert response.status_code == 200 and len(response.json()["results"]) == 2


def test_wrong_method_and_unknown_route(client):
    assert_clean_error(client.get("/api/search", headers=AUTH), 405)
    assert_clean_error(client.get("/api/nothing-here", headers=AUTH), 404)
    assert_clean_error(client.get("/nothing-here"), 404)


def test_internal_errors_are_500_without_details_and_logged(client, tiny_searcher, monkeypatch, caplog):
    def broken(query, k=10):
        raise RuntimeError("secret internal state /srv/private")

    monkeypatch.setattr(tiny_searcher, "search", broken)
    with caplog.at_level(logging.ERROR, logger="tbpr.search.service"):
        response = client.post("/api/search", json={"query": QUERY}, headers=AUTH)
    assert assert_clean_error(response, 500) == "internal error"
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert "secret internal state" in caplog.text and "Traceback" in caplog.text


def test_images_have_content_type_and_security_headers(client, image_id):
    response = client.get(f"/api/images/{image_id}", headers=AUTH)
    assert response.headers["content-type"] == "image/jpeg"
    assert_security_headers(response)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.fixture
def served(monkeypatch):
    """``tbpr serve`` recording what it would serve: the app and the requested address (bound to a free port)."""
    import uvicorn

    from tbpr.search import service

    calls, bind = [], service.bind_socket

    def record_bind(host, port):
        calls.append((host, port))
        return bind(host, 0)

    class Server:
        def __init__(self, config):
            self.app = config.app

        def run(self, sockets):
            calls[-1] = (self.app, calls[-1])

    monkeypatch.setattr(service, "bind_socket", record_bind)
    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    return calls


def test_serve_binds_loopback_by_default_without_warning(served, tiny_index, caplog):
    assert main(["serve", str(tiny_index)]) == 0
    ((app, address),) = served
    assert address == ("127.0.0.1", 8000)
    assert "without an API key" not in caplog.text
    assert TestClient(app, base_url=LOCAL).get("/api/health").status_code == 200


def test_serve_warns_on_a_public_address_without_a_key(served, tiny_index, caplog):
    assert main(["serve", str(tiny_index), "--host", "0.0.0.0", "--port", "9001"]) == 0
    assert "0.0.0.0 without an API key" in caplog.text
    assert served[0][1] == ("0.0.0.0", 9001)


def test_serve_takes_the_key_from_the_environment(served, tiny_index, caplog, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert main(["serve", str(tiny_index), "--host", "0.0.0.0"]) == 0
    assert "without an API key" not in caplog.text
    client = TestClient(served[0][0], base_url=LOCAL)
    assert client.get("/api/health").status_code == 401
    assert client.get("/api/health", headers={"X-API-Key": "from-env"}).status_code == 200


def test_serve_key_option_overrides_the_environment(served, tiny_index, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert main(["serve", str(tiny_index), "--api-key", "from-option"]) == 0
    client = TestClient(served[0][0], base_url=LOCAL)
    assert client.get("/api/health", headers={"X-API-Key": "from-env"}).status_code == 401
    assert client.get("/api/health", headers={"X-API-Key": "from-option"}).status_code == 200


# ------------------------------------------------------------------------------ Host header (DNS rebinding)


def get_with_host(url: str, path: str, host: str | None) -> tuple[int, str]:
    """``GET path`` over a real socket with this exact ``Host`` header (None: no Host header at all)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    if host is not None:
        connection.putheader("Host", host)
    connection.endheaders()
    response = connection.getresponse()
    result = response.status, response.read().decode("latin-1")
    connection.close()
    return result


@pytest.fixture(scope="module")
def open_server(tiny_searcher):
    """The service without an API key (as on loopback by default) under uvicorn."""
    with serve_in_thread(create_app(tiny_searcher)) as url:
        yield url


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io", "", None])
@pytest.mark.parametrize("path", ["/api/health", "/api/images/{id}", "/", "/static/app.js"])
def test_a_foreign_host_name_is_refused(open_server, image_id, host, path):
    port = urlsplit(open_server).port
    host = None if host is None else host.format(port=port)
    status, body = get_with_host(open_server, path.format(id=image_id), host)
    assert status == 400 and ("--allowed-host" in body or host is None)  # no Host: uvicorn refuses it
    assert "gallery_size" not in body and "JFIF" not in body and "<html" not in body.lower()


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST", "127.0.0.1"])
def test_loopback_host_names_are_answered(open_server, image_id, host):
    host = host.format(port=urlsplit(open_server).port)
    assert get_with_host(open_server, "/api/health", host)[0] == 200
    assert get_with_host(open_server, f"/api/images/{image_id}", host)[0] == 200


def test_ipv6_loopback_host_is_answered(tiny_searcher):
    with serve_in_thread(create_app(tiny_searcher), host="::1") as url:
        port = urlsplit(url).port
        assert get_with_host(url, "/api/health", f"[::1]:{port}")[0] == 200
        assert get_with_host(url, "/api/health", f"evil.example:{port}")[0] == 400


def test_no_redirect_is_built_from_the_host(open_server):
    for path in ("/api/health/", "/static", "/api/search/"):
        status, body = get_with_host(open_server, path, "localhost")
        assert status not in (301, 302, 307, 308), (path, status)


def test_serve_allowed_host_option(served, tiny_index):
    assert main(["serve", str(tiny_index), "--host", "0.0.0.0", "--allowed-host", "gallery.lan"]) == 0
    app = served[0][0]
    assert TestClient(app, base_url="http://gallery.lan:8000").get("/api/health").status_code == 200
    assert TestClient(app, base_url=LOCAL).get("/api/health").status_code == 200
    assert TestClient(app, base_url="http://evil.example").get("/api/health").status_code == 400


# --------------------------------------------------------------------------- serve: one-line startup errors


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_rejects_an_invalid_port_before_serving(tiny_index, caplog, port):
    assert main(["serve", str(tiny_index), "--port", port]) == 2
    assert "1 to 65535" in caplog.text and "serving" not in caplog.text


def test_serve_on_a_busy_port_is_a_one_line_error(tiny_index, caplog):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_index), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text and "another --port" in caplog.text
    assert "serving" not in caplog.text
