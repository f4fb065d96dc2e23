"""The benchmark catalogue: Fashion-MNIST (70,000 items, 28×28 grayscale) from Debian's ``dataset-fashion-mnist``
package, read offline.

Lookup order: ``/usr/share/datasets/fashion-mnist`` (the package installed system-wide), then
``<data_dir>/fashion-mnist``. ``fetch`` (run by ``python -m core prepare``, i.e. at set-up time, never by the app)
puts the files there with ``apt-get download`` + ``dpkg -x``, which needs no root.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.artifacts import ArtifactDir, atomic_path, file_checksum, fingerprint, save_npy
from core.catalog.base import Catalog
from core.config import Settings
from core.photo.domain import FashionMnistDomain

NAME, LABEL = "fashion-mnist", "Fashion-MNIST (70,000 Zalando articles)"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class MissingDataError(FileNotFoundError):
    """The catalogue's files are not on disk; the message says how to get them."""


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for pair in FILES.values() for name in pair)


def find_dir(data_dir: Path) -> Path:
    for candidate in (SYSTEM_DIR, Path(data_dir) / "fashion-mnist"):
        if _complete(candidate):
            return candidate
    raise MissingDataError(
        "Fashion-MNIST is not on this machine. Get it with one of:\n"
        f"  sudo apt-get install {DEBIAN_PACKAGE}        (installs to {SYSTEM_DIR})\n"
        f"  .venv/bin/python -m core prepare           (no root: apt-get download + dpkg -x into "
        f"{Path(data_dir) / 'fashion-mnist'})\n"
        f"or copy the four official *-ubyte.gz files into {Path(data_dir) / 'fashion-mnist'}."
    )


def fetch(data_dir: Path) -> Path:
    """Download the Debian package and unpack its files into ``data_dir``; set-up time only."""
    try:
        return find_dir(data_dir)
    except MissingDataError:
        if not (shutil.which("apt-get") and shutil.which("dpkg")):
            raise
    target = Path(data_dir) / "fashion-mnist"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=tmp, check=True, capture_output=True)
            debs = list(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg", "-x", str(debs[0]), str(Path(tmp) / "root")], check=True, capture_output=True)
        except (subprocess.CalledProcessError, IndexError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            raise MissingDataError(
                f"`apt-get download {DEBIAN_PACKAGE}` failed ({stderr.decode(errors='replace').strip()[:300]}). "
                f"Run `sudo apt-get update && sudo apt-get install {DEBIAN_PACKAGE}`, or copy the four "
                f"*-ubyte.gz files into {target}."
            ) from exc
        unpacked = Path(tmp) / "root" / SYSTEM_DIR.relative_to("/")
        target.mkdir(parents=True, exist_ok=True)
        for pair in FILES.values():
            for name in pair:
                shutil.copyfile(unpacked / name, target / f".{name}.tmp")
                (target / f".{name}.tmp").replace(target / name)
    return find_dir(data_dir)


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (the MNIST format: magic, dims, big-endian uint8 payload)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {tuple(dims)}")
    return data.reshape(tuple(dims))


def load(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8 (N, 28, 28), labels uint8 (N,))}."""
    out = {}
    for split, (images_name, labels_name) in FILES.items():
        images, labels = read_idx(directory / images_name), read_idx(directory / labels_name)
        if len(images) != len(labels):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels in {directory}")
        out[split] = (images, labels)
    return out


def _limit_split(n_items: int, limit: int, share: float) -> int:
    return n_items if limit <= 0 else min(n_items, max(1, round(limit * share)))


def load_catalog(settings: Settings) -> Catalog:
    """Parse the IDX files once into ``pixels.npy`` + ``items.parquet``; later opens memory-map those."""
    source_dir = find_dir(settings.data_dir)
    domain = FashionMnistDomain()
    files = [source_dir / name for pair in FILES.values() for name in pair]
    key = fingerprint(
        {
            "source": NAME,
            "files": {f.name: cached_checksum(f, settings.artifacts_dir) for f in files},
            "limit": settings.catalog_limit,
        }
    )
    store = ArtifactDir(Path(settings.artifacts_dir) / f"{NAME}-{key}" / "catalog")
    if not (store.verified("pixels.npy") and store.verified("items.parquet")):
        _build(source_dir, settings.catalog_limit, store)
    items = pd.read_parquet(store.file("items.parquet"))
    pixels = np.load(store.file("pixels.npy"), mmap_mode="r")
    return Catalog(name=NAME, key=f"{NAME}-{key}", items=items, categories=list(CATEGORIES), domain=domain,
                   pixels=pixels)


def _build(source_dir: Path, limit: int, store: ArtifactDir) -> None:
    splits = load(source_dir)
    frames, arrays = [], []
    for split, share in (("train", 6 / 7), ("test", 1 / 7)):
        images, labels = splits[split]
        n = _limit_split(len(images), limit, share)
        arrays.append(images[:n])
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{split}-{i:05d}" for i in range(n)],
                    "label": labels[:n].astype(np.int16),
                    "category": [CATEGORIES[c] for c in labels[:n]],
                    "split": split,
                }
            )
        )
    items = pd.concat(frames, ignore_index=True)
    save_npy(store.file("pixels.npy"), np.concatenate(arrays))
    store.record("pixels.npy")
    with atomic_path(store.file("items.parquet")) as tmp:
        items.to_parquet(tmp, index=False)
    store.record("items.parquet", rows=len(items))


def cached_checksum(path: Path, artifacts_dir: Path) -> str:
    """Checksum of a source file, remembered by (path, size, mtime) so warm starts do not re-read 30 MB."""
    stat = path.stat()
    memo = Path(artifacts_dir) / ".checksums" / fingerprint({"p": str(path), "s": stat.st_size, "m": stat.st_mtime_ns})
    if memo.is_file():
        return memo.read_text().strip()
    value = file_checksum(path)
    with atomic_path(memo) as tmp:
        tmp.write_text(value)
    return value
