"""Image data sets: Fashion-MNIST (Debian idx files) and CIFAR-10 (python pickle batches)."""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ShieldError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data: shape, classes and normalisation."""

    name: str
    shape: tuple[int, int, int]  # C, H, W
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hint: str = field(default="", compare=False)


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", (1, 28, 28), FASHION_CLASSES, (0.2860,), (0.3530,),
        hint="install it with: apt-get install dataset-fashion-mnist"),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        hint="download the CIFAR-10 'python version' elsewhere and pass its folder with --data-root"),
}


@dataclass
class Split:
    """One split of a data set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    info: DatasetInfo
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def as_float(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Images in [0, 1] as float32, the input every model and artifact takes."""
        return self.images[start:stop].astype(np.float32) / 255.0

    def subset(self, limit: int | None) -> "Split":
        """The first LIMIT examples (all when LIMIT is None)."""
        if limit is None:
            return self
        return Split(self.info, self.images[:limit], self.labels[:limit])


def dataset_info(name: str) -> DatasetInfo:
    """Look up a data set by name, with a clear error for an unknown one."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ShieldError(f"unknown data set {name!r}",
                          f"choose one of: {', '.join(DATASETS)}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an idx file (optionally gzipped): magic, big-endian uint32 dims, then uint8 data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ShieldError(f"cannot read idx file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ShieldError(f"{path} is not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(dims))
    if len(raw) - header != count:
        raise ShieldError(f"{path} is truncated or malformed: header says {dims}, "
                          f"found {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_files(root: Path, split: str) -> tuple[Path, Path]:
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for suffix in (".gz", ""):
            p = root / f"{prefix}-{kind}{suffix}"
            if p.exists():
                found.append(p)
                break
        else:
            raise ShieldError(f"Fashion-MNIST {split} files not found in {root}",
                              DATASETS["fashion-mnist"].hint)
    return found[0], found[1]


def load_fashion_mnist(split: str = "test", root: str | os.PathLike | None = None) -> Split:
    """Load Fashion-MNIST from its idx files (default: the Debian package's folder)."""
    root = Path(root or os.environ.get("SHIELD_FASHION_MNIST", FASHION_MNIST_DIR))
    images_path, labels_path = _fashion_files(root, split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ShieldError(f"Fashion-MNIST files in {root} are malformed: images {images.shape}, "
                          f"labels {labels.shape}", DATASETS["fashion-mnist"].hint)
    return Split(DATASETS["fashion-mnist"], images[:, None, :, :].copy(), labels.astype(np.int64))


def load_cifar10(split: str = "test", root: str | os.PathLike | None = None) -> Split:
    """Load CIFAR-10 from the standard python pickle batches in ROOT."""
    info = DATASETS["cifar10"]
    if root is None:
        root = os.environ.get("SHIELD_CIFAR10")
    if root is None:
        raise ShieldError("CIFAR-10 needs a folder", info.hint)
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    images, labels = [], []
    for name in names:
        path = root / name
        if not path.exists():
            raise ShieldError(f"CIFAR-10 batch {path} not found", info.hint)
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ShieldError(f"CIFAR-10 batch {path} is malformed ({type(e).__name__}: {e})", info.hint) from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise ShieldError(f"CIFAR-10 batch {path} is malformed: data {data.shape}, labels {lab.shape}",
                              info.hint)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return Split(info, np.concatenate(images), np.concatenate(labels))


def load_dataset(name: str, split: str = "test", root: str | os.PathLike | None = None) -> Split:
    """Load split 'train' or 'test' of data set NAME."""
    if split not in ("train", "test"):
        raise ShieldError(f"unknown split {split!r}", "use 'train' or 'test'")
    dataset_info(name)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, root)
    return load_cifar10(split, root)

