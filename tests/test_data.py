"""Data loaders: idx and CIFAR pickle parsing on real and hand-made files, and their one-line errors."""
import gzip
import pickle

import numpy as np
import pytest

from stochastic_shield.data import load_cifar10, load_dataset, load_fashion_mnist, read_idx
from stochastic_shield.errors import ShieldError


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_round_trips_a_hand_made_file(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)


def test_fixture_is_real_fashion_mnist(fashion_root):
    s = load_fashion_mnist("test", fashion_root)
    assert s.images.shape == (256, 1, 28, 28) and s.images.dtype == np.uint8
    assert set(np.unique(s.labels)) == set(range(10))
    assert s.labels[0] == 9  # the first Fashion-MNIST test image is an ankle boot
    x = s.as_float(0, 4)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_truncated_idx_file_gives_one_line_error(tmp_path):
    arr = np.zeros((3, 28, 28), np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", arr)
    raw = gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-10])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ShieldError, match="truncated or malformed"):
        load_fashion_mnist("test", tmp_path)


def test_bad_magic_is_rejected(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(ShieldError, match="bad magic"):
        read_idx(tmp_path / "x")


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(ShieldError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", tmp_path)


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f)
    return data, labels


def test_cifar10_pickle_batches_are_parsed_channel_major(tmp_path):
    data, labels = _cifar_batch(tmp_path / "test_batch", 5, 0)
    s = load_cifar10("test", tmp_path)
    assert s.images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(s.images[2, 1].ravel(), data[2, 1024:2048])  # green plane
    np.testing.assert_array_equal(s.labels, labels)
    for i in range(1, 6):
        _cifar_batch(tmp_path / f"data_batch_{i}", 4, i)
    assert len(load_cifar10("train", tmp_path)) == 20


def test_cifar10_errors(tmp_path):
    with pytest.raises(ShieldError, match="CIFAR-10 needs a folder"):
        load_cifar10("test", None)
    with pytest.raises(ShieldError, match="test_batch not found"):
        load_cifar10("test", tmp_path)
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ShieldError, match="malformed"):
        load_cifar10("test", tmp_path)


def test_unknown_dataset_and_split(fashion_root):
    with pytest.raises(ShieldError, match="unknown data set 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ShieldError, match="unknown split"):
        load_dataset("fashion-mnist", "val", fashion_root)
