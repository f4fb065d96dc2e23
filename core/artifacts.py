"""Heavy results on disk: keyed by what made them, written atomically, verified before they are trusted.

Layout (see README): ``<artifacts>/<catalogue key>/catalog/…`` and ``<artifacts>/<catalogue key>/<model key>/…``.
A key is a hash of the inputs, so a changed input is a new directory, never a stale hit. Each file is written to
a temporary name and renamed, and ``meta.json`` records each file's size and checksum: a half-written or corrupted
file fails verification and is rebuilt instead of being loaded (a truncated Annoy file would otherwise be mmapped
and read out of bounds).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core import locks


def fingerprint(inputs: dict[str, Any], length: int = 12) -> str:
    """Stable short hash of a JSON-able description of the inputs."""
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()[:length]


def file_checksum(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are shared, readable data
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class DiskFullError(OSError):
    """A job needs more space than its folder has: ``str(err)`` names the folder, what the job needs and what is
    free, for the operator. Raised before a build starts (``ensure_space``) or when a write runs out part-way
    (``space_for``); the last complete state stays on disk either way."""

    def __init__(self, folder: Path, needed: int, free: int, what: str):
        self.folder, self.needed, self.free, self.what = Path(folder), needed, free, what
        super().__init__(errno.ENOSPC, f"Not enough space in {folder} for {what}: it needs about "
                         f"{human_bytes(needed)} and {human_bytes(free)} is free. Free some space there (or set "
                         "FVS_ARTIFACTS_DIR to a larger disk) and try again; what was finished is kept.")

    def __str__(self) -> str:
        return self.strerror

    def visitor_message(self) -> str:
        """The same without the server's folder: what a dashboard visitor is shown."""
        return (f"The server's disk is full: building {self.what} needs about {human_bytes(self.needed)} and "
                f"{human_bytes(self.free)} is free. The operator has the details in the server log; try again "
                "once space is freed.")


class ReadOnlyArtifacts(RuntimeError):
    """Something must be written (built) in an artifacts folder that is served read-only."""


def human_bytes(n: float) -> str:
    """Sizes as people read them: 1.5 GB, 24 KB."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


def free_bytes(folder: Path) -> int:
    """Free space for an unprivileged writer in ``folder``, or in its nearest existing parent."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is the disk running out (errno, or the text pyarrow and Annoy put in their OSErrors)."""
    return isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EDQUOT)
                                         or "No space left on device" in str(exc))


def ensure_space(folder: Path, needed: int, what: str) -> None:
    """Refuse a job before it starts when ``folder`` has less than ``needed`` bytes free (an estimate)."""
    free = free_bytes(folder)
    if free < needed:
        raise DiskFullError(folder, needed, free, what)


@contextlib.contextmanager
def space_for(folder: Path, needed: int, what: str) -> Iterator[None]:
    """``ensure_space``, then any write in the block that runs out of space becomes a DiskFullError naming the
    folder and the need, instead of a bare ``[Errno 28]`` without a file name."""
    ensure_space(folder, needed, what)
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(folder, needed, free_bytes(folder), what) from exc
        raise


def reserve(path: Path) -> None:
    """Allocate every byte of ``path`` now. A memory-mapped file is sparse: a page written when the disk is full
    raises SIGBUS and kills the whole process (the server, with every visitor's session). Reserved first, the
    shortage is an ordinary OSError (ENOSPC) here instead."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.save(fh, array)


class ArtifactDir:
    """One keyed directory with a ``meta.json`` that vouches for its files."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def meta(self) -> dict[str, Any]:
        """The record, or {} when it is unreadable or not of the shape written here (every file then rebuilds)."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(meta, dict):
            return {}
        files = meta.get("files", {})
        meta["files"] = {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}
        return meta

    def file(self, name: str) -> Path:
        return self.path / name

    def writable(self) -> bool:
        """Whether this directory can be written, found by trying to create its lock file: a read-only mount, or a
        folder its server may not write, is served read-only (``Workspace.open``), not refused."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return False
            raise
        return True

    def lock(self, notify: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager[None]:
        """Exclusive lock on this directory, held while building so two first visitors do not build twice. It ends
        with its process and is not inherited by forked workers (core.locks); ``notify`` hears who holds it when
        a wait lasts more than a few seconds."""
        return locks.exclusive(self.path / ".lock", notify=notify)

    def record(self, name: str, **info: Any) -> None:
        """Vouch for a file just written: its size and checksum, plus what produced it."""
        path = self.file(name)
        meta = self.meta()
        meta.setdefault("files", {})[name] = {
            "bytes": path.stat().st_size,
            "checksum": file_checksum(path),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **info,
        }
        self.write_meta(meta)

    def write_meta(self, meta: dict[str, Any]) -> None:
        with atomic_path(self.meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))

    def update_meta(self, **fields: Any) -> None:
        meta = self.meta()
        meta.update(fields)
        self.write_meta(meta)

    def checksum(self, name: str) -> str | None:
        """The checksum meta.json recorded for ``name`` (what derived artifacts are keyed by), None if unrecorded."""
        return self.meta().get("files", {}).get(name, {}).get("checksum")

    def verified(self, name: str, full_check: bool = True) -> bool:
        """True if the file is exactly what meta.json recorded (size always; checksum when ``full_check``)."""
        entry = self.meta().get("files", {}).get(name)
        path = self.file(name)
        if not entry or not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return False
        return not full_check or file_checksum(path) == entry.get("checksum")
