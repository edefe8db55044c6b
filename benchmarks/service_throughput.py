"""Search service throughput and latency under concurrent clients, on loopback.

Starts ``tbpr serve INDEX`` (uvicorn, one process) on 127.0.0.1 on a free port, then for each client
count runs that many threads, each with its own keep-alive httpx client, sending ``POST /api/search``
back to back for ``--seconds``; prints requests/s, p50 and p99 latency and the error count (any
non-200 answer or transport error, or fewer results than asked), with ratios against 1 client.

    python benchmarks/service_throughput.py INDEX --clients 1 4 16 --seconds 5
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

QUERIES = [
    "a woman in a red jacket and black trousers carrying a white bag",
    "a man wearing a blue shirt, grey shorts and white shoes",
    "a young man in a green hoodie with a black backpack",
    "a woman with long hair in a yellow dress",
    "a man in a black coat and blue jeans holding a phone",
    "a person in an orange t-shirt and dark trousers with a red shoulder bag",
    "a girl in a pink skirt and a white blouse",
    "an older man in a brown jacket and beige trousers",
]


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def run_load(
    base_url: str, clients: int, seconds: float, k: int = 10, headers: dict | None = None
) -> LoadResult:
    """``clients`` threads searching back to back until ``seconds`` have passed (each request times out
    after 30 s, so the whole run is bounded)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.perf_counter()
    deadline = start + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
            n = i
            while time.perf_counter() < deadline:
                body = {"query": QUERIES[n % len(QUERIES)], "k": k}
                n += 1
                sent = time.perf_counter()
                try:
                    response = http.post("/api/search", json=body)
                    ok = response.status_code == 200 and len(response.json()["results"]) == k
                except (httpx.HTTPError, ValueError, KeyError):
                    ok = False
                latencies[i].append(time.perf_counter() - sent)
                errors[i] += not ok

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.perf_counter() - start
    flat = np.array([x for per in latencies for x in per]) * 1000
    p50, p99 = np.percentile(flat, [50, 99]) if len(flat) else (float("nan"), float("nan"))
    return LoadResult(clients, elapsed, len(flat), sum(errors), float(p50), float(p99))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, port: int, timeout: float = 180.0) -> subprocess.Popen:
    """``tbpr serve`` in a subprocess; returns once /api/health answers (or raises after ``timeout``)."""
    env = {**os.environ, "TBPR_API_KEY": ""}
    cmd = [
        sys.executable,
        "-m",
        "tbpr",
        "-q",
        "serve",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"the server did not answer within {timeout:.0f} s")


def format_table(results: list[LoadResult]) -> str:
    base = results[0]
    lines = [
        f"| clients | requests/s | p50 ms | p99 ms | errors | requests/s vs {base.clients} | p50 vs {base.clients} |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.clients} | {r.throughput:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} "
            f"| {r.throughput / base.throughput:.2f}x | {r.p50_ms / base.p50_ms:.2f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index folder (tbpr index build ... --out INDEX)")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4, 16], help="client counts (default: 1 4 16)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="duration per client count (default: 5)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default: 10)")
    args = parser.parse_args()

    port = free_port()
    server = start_server(args.index, port)
    try:
        url = f"http://127.0.0.1:{port}"
        run_load(url, 1, 1.0, args.k)  # warm-up
        results = [run_load(url, n, args.seconds, args.k) for n in args.clients]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(format_table(results))
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
