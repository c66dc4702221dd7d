"""A user's own data: image folders and .npz files load exactly, and every kind of bad data is a one-line error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stochastic_shield.data import load_fashion_mnist
from stochastic_shield.errors import ShieldError
from stochastic_shield.user_data import (align_classes, check_for_model, load_image_folder, load_npz,
                                         load_user_data, write_image_folder)


@pytest.fixture(scope="module")
def test_split(fashion_root):
    return load_fashion_mnist("test", fashion_root).subset(40)


def test_image_folder_round_trips_the_test_set(test_split, tmp_path):
    write_image_folder(test_split, tmp_path / "f")
    got = load_user_data(tmp_path / "f")
    order = np.lexsort((np.arange(len(test_split)), test_split.labels))  # folders are read class by class
    np.testing.assert_array_equal(got.images, test_split.images[order])
    np.testing.assert_array_equal(got.labels, test_split.labels[order])
    assert got.info.shape == (1, 28, 28) and got.info.classes[0] == "0-T-shirt-top"


def test_npz_with_uint8_or_float_pixels(test_split, tmp_path):
    np.savez(tmp_path / "u.npz", x=test_split.images, y=test_split.labels)
    np.savez(tmp_path / "f.npz", x=test_split.as_float(), y=test_split.labels, classes=np.array(["a"] * 10))
    u, f = load_npz(tmp_path / "u.npz"), load_user_data(tmp_path / "f.npz")
    np.testing.assert_array_equal(u.images, test_split.images)
    np.testing.assert_array_equal(f.images, test_split.images)  # x / 255 round-trips to the same bytes
    assert len(u.info.classes) == int(test_split.labels.max()) + 1 and f.info.classes == ("a",) * 10


def _png(path, size=(8, 8), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


def test_bad_image_folders_are_one_line_errors(tmp_path):
    _png(tmp_path / "mixed/a/1.png")
    _png(tmp_path / "mixed/b/2.png", size=(9, 8))
    with pytest.raises(ShieldError, match=r"differ in size.*8x8 grey.*8x9 grey"):
        load_image_folder(tmp_path / "mixed")
    _png(tmp_path / "empty/a/1.png")
    (tmp_path / "empty/b").mkdir()
    with pytest.raises(ShieldError, match=r"class folder .*b has no PNG or JPEG"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "broken/a").mkdir(parents=True)
    (tmp_path / "broken/a/1.png").write_bytes(b"not a png")
    with pytest.raises(ShieldError, match="cannot read image"):
        load_image_folder(tmp_path / "broken")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ShieldError, match="no class subfolders"):
        load_image_folder(tmp_path / "flat")


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64), r"needs \(N, C, H, W\)"),
    (np.zeros((4, 1, 28, 28), np.uint8), np.zeros(3, np.int64), "4 integer labels"),
    (np.full((4, 1, 28, 28), 2.0, np.float32), np.zeros(4, np.int64), r"uint8 or float in \[0, 1\]"),
    (np.zeros((4, 1, 28, 28), np.uint8), np.array([0, 1, -1, 2]), r"labels must be in \[0, 3\)"),
])
def test_bad_npz_is_a_one_line_error(tmp_path, x, y, match):
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(ShieldError, match=match):
        load_npz(tmp_path / "d.npz")


def test_data_the_model_cannot_take_is_refused(test_split):
    with pytest.raises(ShieldError, match=r"has 1 channel\(s\), the model takes 3"):
        check_for_model(test_split, (3, 28, 28))
    with pytest.raises(ShieldError, match="28x28 images, the model takes 32x32"):
        check_for_model(test_split, (1, 32, 32))
    with pytest.raises(ShieldError, match="has label 9, the model has 5 classes"):
        check_for_model(test_split, (1, 28, 28), num_classes=5)
    assert check_for_model(test_split, (4, 1, 28, 28), num_classes=10) is test_split


def test_folders_named_like_the_models_classes_are_matched_by_name(tmp_path):
    for cls, n in (("cat", 2), ("dog", 1)):
        for i in range(n):
            _png(tmp_path / "pets" / cls / f"{i}.png")
    split = load_image_folder(tmp_path / "pets")
    assert list(split.labels) == [0, 0, 1]
    assert list(align_classes(split, ["dog", "cat"]).labels) == [1, 1, 0]
    assert align_classes(split, ["cat", "dog"]) is split


def test_the_model_sets_the_class_count_and_the_data_only_has_to_fit_inside(test_split, tmp_path):
    """Issue 18: a calibration set whose labels cover 8 of 10 classes is no error when the user named no classes."""
    from stochastic_shield.compile.sources import LoadedModel, ModelSource, with_classes

    keep = test_split.labels < 8
    np.savez(tmp_path / "d.npz", x=test_split.images[keep], y=test_split.labels[keep])
    src = ModelSource(tmp_path / "m.onnx", input_shape=(1, 28, 28), data=str(tmp_path / "d.npz"))
    meta = {"classes": list(load_user_data(tmp_path / "d.npz").info.classes)}
    assert len(meta["classes"]) == 8
    assert with_classes(LoadedModel(src, dict(meta)), 10).meta["classes"] == [str(i) for i in range(10)]
    with pytest.raises(ShieldError, match="has 8 classes, the model only 6 outputs"):
        with_classes(LoadedModel(src, dict(meta)), 6)
    named = ModelSource(tmp_path / "m.onnx", input_shape=(1, 28, 28), classes=tuple("abcdefgh"))
    with pytest.raises(ShieldError, match="10 outputs but 8 classes were given"):
        with_classes(LoadedModel(named, {"classes": list("abcdefgh")}), 10)
