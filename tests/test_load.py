"""Concurrent clients against a real uvicorn server on loopback for a bounded time: no errors, answers flow.

The load generator is benchmarks/service_throughput.py's (that script reports the figures for docs).
"""

import importlib.util
from pathlib import Path

from tbpr.search.service import create_app, serve_in_thread

_SPEC = importlib.util.spec_from_file_location(
    "service_throughput", Path(__file__).parents[1] / "benchmarks" / "service_throughput.py"
)
service_throughput = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(service_throughput)

KEY = "load-key"
CLIENTS = 8


def test_concurrent_clients_get_answers_without_errors(tiny_searcher, capsys):
    with serve_in_thread(create_app(tiny_searcher, api_key=KEY)) as url:
        result = service_throughput.run_load(url, CLIENTS, seconds=3.0, k=10, headers={"X-API-Key": KEY})
    with capsys.disabled():
        print(f"\n{service_throughput.format_table([result])}")
    assert result.errors == 0
    assert result.requests >= CLIENTS  # every client got answers
    assert 3.0 <= result.seconds < 3.0 + 30  # bounded: stops at the deadline (plus one request)
    assert 0 < result.p50_ms <= result.p99_ms


def test_errors_are_counted(tiny_searcher):
    # a wrong key: every request is answered 401, and each one is counted as an error
    with serve_in_thread(create_app(tiny_searcher, api_key=KEY)) as url:
        result = service_throughput.run_load(url, 2, seconds=0.5, headers={"X-API-Key": "wrong"})
    assert result.requests > 0 and result.errors == result.requests
