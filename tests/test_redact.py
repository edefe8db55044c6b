"""Secrets never reach stored or logged error text, even from a server that echoes the request's headers."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tbpr.cli import main
from tbpr.data.caption_store import CaptionStore
from tbpr.errors import ConfigError
from tbpr.generate.chat import ChatClient, Failure
from tbpr.redact import REDACTED, redact

KEY = "sk-test-0123456789abcdef"


@pytest.mark.parametrize(
    "text,expected",
    [
        ('{"authorization": "Bearer abc.def"}', '{"authorization": "[redacted]"}'),
        ("Authorization: Basic dXNlcjpwdw==\r\nHost: x", "Authorization: [redacted]\r\nHost: x"),
        ("{'X-API-Key': 'k1', 'accept': '*/*'}", "{'X-API-Key': '[redacted]', 'accept': '*/*'}"),
        ("token is bearer abc123, retry", "token is bearer [redacted], retry"),
        ("GET http://user:pw@host/v1 failed", "GET http://[redacted]@host/v1 failed"),
        ("?api_key=zz&q=1", "?api_key=[redacted]&q=1"),
        ("leaked sk-abcdefgh12 here", "leaked [redacted] here"),
        ("the key MYSECRET was wrong", "the key [redacted] was wrong"),
        ("HTTP 500: overloaded", "HTTP 500: overloaded"),
    ],
)
def test_redact(text, expected):
    assert redact(text, ["MYSECRET", None, ""]) == expected


class EchoServer(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint that answers the client's test request, then fails every other
    request with ``status`` and a body that echoes the request's key and headers (as some gateways do)."""

    status = 400


class EchoHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if body["messages"][0]["content"] == "Say OK." and self.server.status != 401:
            self.reply(200, {"model": "echo", "choices": [{"message": {"content": "OK"}}]})
        else:
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            error = f"Incorrect API key provided: {token}"  # the bare key, as OpenAI-style gateways say
            self.reply(self.server.status, {"error": error, "headers": dict(self.headers.items())})

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo():
    server = EchoServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.mark.parametrize("status", [400, 503])
def test_failure_reasons_and_retry_logs_hold_no_key(echo, caplog, status):
    echo.status = status
    with (
        caplog.at_level(logging.DEBUG, logger="tbpr"),
        ChatClient(url(echo), api_key=KEY, max_retries=1, backoff=0.01) as client,
    ):
        reply = client.complete([{"role": "user", "content": "describe"}])
    assert isinstance(reply, Failure) and f"HTTP {status}" in reply.reason
    assert KEY not in reply.reason and REDACTED in reply.reason
    assert KEY not in caplog.text


def test_the_key_refused_error_holds_no_key(echo):
    echo.status = 401
    with ChatClient(url(echo), api_key=KEY) as client, pytest.raises(ConfigError) as err:
        client.check()
    assert "refused the API key" in str(err.value) and KEY not in str(err.value)


def test_caption_store_and_log_hold_no_key(echo, tmp_path, monkeypatch, caplog, capsys):
    images = tmp_path / "crops"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (16, 32), "red").save(images / name)
    monkeypatch.setenv("ECHO_KEY", KEY)
    store = tmp_path / "caps.jsonl"
    argv = ["caption", str(images), "--out", str(store), "--base-url", url(echo), "--api-key-env", "ECHO_KEY"]
    with caplog.at_level(logging.DEBUG, logger="tbpr"):
        assert main([*argv, "--max-attempts", "1"]) == 0
    records = list(CaptionStore(store))
    assert len(records) == 2 and all(r.text is None and "HTTP 400" in r.reason for r in records)
    assert KEY not in store.read_text() and REDACTED in store.read_text()
    assert KEY not in caplog.text and KEY not in capsys.readouterr().out
