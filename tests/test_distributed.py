"""Distributed helpers: single-process fallbacks; 2-process DDP equals one process on the whole batch."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tbpr.errors import ConfigError
from tbpr.train.distributed import (
    DistInfo,
    all_gather_no_grad,
    all_gather_with_grad,
    barrier,
    cleanup,
    init_distributed,
    world_size,
)

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "ddp_loss_worker.py"
SRC = TESTS.parent / "src"


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_without_torchrun(no_torchrun_env):
    assert init_distributed() == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    x = torch.ones(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    gathered = all_gather_no_grad(x)
    assert torch.equal(gathered, x) and not gathered.requires_grad
    assert init_distributed().is_main
    barrier()
    cleanup()


def test_world_of_one_launched_by_torchrun_env(no_torchrun_env, monkeypatch):
    env = {"RANK": 0, "WORLD_SIZE": 1, "LOCAL_RANK": 0, "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = free_port()
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    try:
        info = init_distributed()
        assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        assert torch.distributed.is_initialized() and torch.distributed.get_backend() == "gloo"
        assert init_distributed() == info  # joining twice reuses the group
        x = torch.arange(4.0)
        assert all_gather_with_grad(x) is x and torch.equal(all_gather_no_grad(x), x)
        barrier()
    finally:
        cleanup()
    assert not torch.distributed.is_initialized()


def test_malformed_torchrun_env_is_a_config_error(no_torchrun_env, monkeypatch):
    monkeypatch.setenv("RANK", "first")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK='first'"):
        init_distributed()


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_loss_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_whole_batch(no_torchrun_env, tmp_path):
    out = tmp_path / "rank0.pt"
    pythonpath = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = torch.load(out)

    assert world_size() == 1
    _, single = load_worker().run()
    loss, grads = single["with_grad"]

    # all_gather_with_grad's backward sums over ranks the gradient each rank's loss sends to a slice, and
    # every rank's loss IS the global loss, so rank r's towers receive W * dL/dθ through its own half of
    # the batch. DDP averages over the W ranks: (1/W) * sum_r W * dL/dθ|half r = dL/dθ, the one-process
    # gradient.
    ddp_loss, ddp_grads = ddp["with_grad"]
    assert ddp_loss == pytest.approx(loss, abs=1e-6)
    assert ddp_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(ddp_grads[name], grad, atol=1e-5), name

    # A plain gather gives rank r only dL/dθ|half r, so after DDP's averaging the towers get 1/W of the
    # gradient; the logit scale is used locally on every rank and keeps its full gradient.
    plain_loss, plain_grads = ddp["local_graph_only"]
    assert plain_loss == pytest.approx(loss, abs=1e-6)
    for name, grad in grads.items():
        if name.startswith("logit_scale"):
            assert torch.allclose(plain_grads[name], grad, atol=1e-5), name
        else:
            assert not torch.allclose(plain_grads[name], grad, atol=1e-5), name
            assert torch.allclose(plain_grads[name], grad / 2, atol=1e-5), name
