"""Crash safety beyond atomic writes: one writer at a time, torn tails of append-only files, kill points.

- ``exclusive_lock``: an advisory ``flock`` held for a whole job; a second writer is refused at once with
  a clear message (the lock dies with its process, so a killed writer never leaves it stuck).
  ``try_lock`` is the same lock for a caller that skips the busy item instead; ``held_elsewhere`` looks.
- ``drop_torn_tail``: a process killed while appending a line leaves at most one line without its
  newline; cutting the file after its last newline lets readers and the next append carry on.
- ``kill_point``: a named step of a multi-step switch where tests deliver a real signal to the process
  (``TBPR_SIGNAL_AT=step``, SIGKILL, or ``step:SIGSTOP``; step names have no colon), to prove that
  every step recovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from tbpr.errors import ConfigError

log = logging.getLogger(__name__)

SIGNAL_AT_ENV = "TBPR_SIGNAL_AT"


@contextlib.contextmanager
def try_lock(path: str | Path) -> Iterator[bool]:
    """Try to hold an exclusive lock on ``path`` (created if missing) without waiting; yields whether this
    process holds it (False: another process does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def held_elsewhere(path: str | Path) -> bool:
    """Whether another process holds ``path``'s lock now; creates nothing and keeps nothing."""
    if not Path(path).is_file():
        return False
    with open(path, "rb") as fh:  # closing releases a lock this call took
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


@contextlib.contextmanager
def exclusive_lock(path: str | Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing); ``ConfigError(busy)`` if another process has it."""
    with try_lock(path) as held:
        if not held:
            raise ConfigError(busy)
        yield


def drop_torn_tail(path: str | Path) -> int:
    """Cut ``path`` after its last newline (a torn last line left by a killed write); returns bytes dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0 or (fh.seek(size - 1), fh.read(1))[1] == b"\n":
            return 0
        keep, end = 0, size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            newline = fh.read(end - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        log.warning(
            "%s: dropping a torn last line (%d bytes) left by an interrupted write", path, size - keep
        )
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def kill_point(step: str) -> None:
    """Deliver the signal ``TBPR_SIGNAL_AT`` names to this process if it names ``step`` (tests only)."""
    wanted = os.environ.get(SIGNAL_AT_ENV)
    if not wanted:
        return
    name, _, signame = wanted.partition(":")
    if name == step:
        log.warning("%s=%s: signalling this process at step %r", SIGNAL_AT_ENV, wanted, step)
        os.kill(os.getpid(), getattr(signal, signame or "SIGKILL"))
