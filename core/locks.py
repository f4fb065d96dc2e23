"""Directory locks that end with their process, and worker processes that end with their parent.

A lock is an ``flock`` on a file: the kernel drops it when its holder exits, however it exits, so a killed build
never leaves a stale lock behind. Two things used to break that promise:

- ``flock`` belongs to the open file description, which ``fork`` shares. DataLoader workers are forked while a
  build holds its lock, so a worker that outlived a ``kill -9`` of its parent kept the lock, and the next run waited
  for ever. Every held lock is therefore dropped in a forked child (its descriptor replaced by ``/dev/null``, which
  releases nothing in the parent), and workers ask the kernel to kill them when their parent dies.
- A lock that is held for a good reason (another build is running) looked like a hang. The holder writes who it is
  into the lock file, and a waiter says so after a few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

NOTIFY_AFTER_S = 3.0  # a waiter says who holds the lock after this long
RENOTIFY_S = 30.0
POLL_S = 0.2

_held: set[int] = set()  # descriptors of locks this process holds
_held_guard = threading.Lock()


class LockBusy(RuntimeError):
    """The lock was still held when the caller's patience ran out; the message names the holder."""


def _drop_in_child() -> None:
    """After fork, in the child: give up every lock the parent holds, without releasing it for the parent."""
    if not _held:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for fd in list(_held):
        os.dup2(null, fd)  # the child's reference to the locked description is gone; the number stays taken
    os.close(null)
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_child)


def holder(path: Path) -> str:
    """Who holds the lock file, as a person can act on it: the process the holder wrote down, plus any other live
    process with the file open (an orphaned child, if one ever escapes the guards above)."""
    path = Path(path)
    try:
        recorded = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        recorded = {}
    pids = _pids_with_open(path)
    parts = []
    pid = recorded.get("pid")
    if pid and pid in pids:
        parts.append(f"process {pid} ({recorded.get('command', '?')}, since {recorded.get('since', '?')})")
    parts += [f"process {p} ({_command(p)})" for p in sorted(pids) if p != pid]
    return ", ".join(parts) or "another process"


def _pids_with_open(path: Path) -> set[int]:
    target = str(path.resolve())
    found = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid == os.getpid():
            continue
        try:
            if any(os.readlink(link) == target for link in fd_dir.iterdir()):
                found.add(pid)
        except OSError:  # gone, or not ours to look at
            continue
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:120] or "?"


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool = True, timeout_s: float | None = None,
              notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block.

    ``wait`` False: raise LockBusy at once if it is held. Otherwise wait (at most ``timeout_s`` when given), and
    after ``NOTIFY_AFTER_S`` tell ``notify`` (or stderr) which process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, path, wait, timeout_s, notify or _to_stderr)
        with _held_guard:
            _held.add(fd)
        try:
            _write_holder(fd)
            yield
        finally:
            with _held_guard:
                _held.discard(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, wait: bool, timeout_s: float | None, notify: Callable[[str], None]) -> None:
    started = time.monotonic()
    next_notice = started + NOTIFY_AFTER_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if not wait or (timeout_s is not None and now - started >= timeout_s):
            raise LockBusy(f"{path.parent} is locked by {holder(path)}; waited {now - started:.0f} s. Wait for it "
                           "to finish, or stop it.")
        if now >= next_notice:
            notify(f"Waiting for {holder(path)}, which is working on {path.parent}")
            next_notice = now + RENOTIFY_S
        time.sleep(POLL_S)


def _write_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "command": _command(os.getpid()), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_locked(path: Path) -> bool:
    """Whether some process holds the lock on ``path`` right now. Read from the kernel's table of locks, not by
    taking the lock for a moment: a probe that takes it makes a trainer starting at that instant fail."""
    try:
        info = os.stat(path)
        table = Path("/proc/locks").read_text()
    except OSError:
        return _probe(path)
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2163572 0 EOF" (waiters read "1: -> FLOCK …" and hold nothing). The
    # device is left out of the match: on overlay filesystems the table names the lower device, not stat's.
    inode = f":{info.st_ino}"
    return any(len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(inode)
               for fields in (line.split() for line in table.splitlines()))


def _probe(path: Path) -> bool:
    """Without /proc/locks (not Linux): take the lock without waiting, and give it back."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


_PR_SET_PDEATHSIG = 1


def die_with_parent(_worker_id: int = 0) -> None:
    """``worker_init_fn`` of every DataLoader: the kernel sends this worker SIGKILL when its parent dies, so a
    ``kill -9`` of a build leaves no orphan decoding images (or holding files) behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers still stop at their next poll of the parent
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)
