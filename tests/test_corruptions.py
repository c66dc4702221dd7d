"""Fashion-MNIST-C and glyphs-ood: deterministic, checksummed, cached, severity that means something, one-line errors."""
import numpy as np
import pytest

from stochastic_shield import corruptions, glyphs
from stochastic_shield.corruptions import CORRUPTIONS, corrupt
from stochastic_shield.errors import ShieldError
from stochastic_shield.user_data import load_data


@pytest.fixture
def cache(tmp_path, monkeypatch, fashion_root):
    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path))
    monkeypatch.setenv("SHIELD_FASHION_MNIST", str(fashion_root))
    return tmp_path / "datasets"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_seeded_and_grows_with_severity(fashion_test, name):
    """Same seed, same bytes; the mean change from the clean images rises strictly from severity 1 to 5."""
    x = fashion_test.images[:128]
    changes = []
    for s in range(1, 6):
        a = corrupt(x, name, s)
        assert a.dtype == np.uint8 and a.shape == x.shape
        np.testing.assert_array_equal(a, corrupt(x, name, s))
        changes.append(np.abs(a.astype(int) - x).mean())
    assert all(b > a for a, b in zip(changes, changes[1:])), changes


def test_random_corruptions_follow_their_seed(fashion_test):
    x = fashion_test.images[:32]
    assert not np.array_equal(corrupt(x, "gaussian-noise", 3, seed=1), corrupt(x, "gaussian-noise", 3, seed=2))


def test_corrupted_set_is_made_once_checksummed_and_remade_when_damaged(cache, fashion_test):
    split = load_data("fashion-mnist-c/jpeg/3")
    assert split.info.name == "fashion-mnist-c/jpeg/3" and split.info.classes == fashion_test.info.classes
    np.testing.assert_array_equal(split.labels, fashion_test.labels)
    np.testing.assert_array_equal(split.images, corrupt(fashion_test.images, "jpeg", 3))
    (path,) = cache.glob("fashion-mnist-c-jpeg-3-*.npz")
    with np.load(path) as z:
        assert str(z["sha256"]) == corruptions.images_sha256(split.images)
    stamp = path.stat().st_mtime_ns
    load_data("fashion-mnist-c/jpeg/3")
    assert path.stat().st_mtime_ns == stamp  # read from the cache, not made again
    with np.load(path) as z:
        bad = dict(z)
    bad["x"] = bad["x"].copy()
    bad["x"][0, 0, 0, 0] ^= 1
    np.savez_compressed(path, **bad)
    again = load_data("fashion-mnist-c/jpeg/3")
    np.testing.assert_array_equal(again.images, split.images)  # the checksum caught the flipped bit
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.parametrize("name, match", [
    ("fashion-mnist-c", "name one as fashion-mnist-c/<corruption>/<1-5>"),
    ("fashion-mnist-c/jpeg", "name one as"),
    ("fashion-mnist-c/fog/3", "unknown corruption 'fog'"),
    ("fashion-mnist-c/jpeg/6", "severity must be 1..5, got '6'"),
    ("fashion-mnist-c/jpeg/x", "severity must be 1..5"),
])
def test_bad_corruption_names_are_one_line_errors(name, match):
    with pytest.raises(ShieldError, match=match) as e:
        load_data(name)
    assert "\n" not in str(e.value)


def test_glyphs_are_no_fashion_class_and_cached(cache):
    split = load_data("glyphs-ood")
    assert split.images.shape == (glyphs.COUNT, 1, 28, 28) and (split.labels == -1).all()
    assert ((split.images.reshape(len(split), -1) > 64).sum(1) >= 10).all()  # every image has a glyph on it
    np.testing.assert_array_equal(glyphs.render(20), split.images[:20])
    assert len(list(cache.glob("glyphs-ood-*.npz"))) == 1


def test_missing_fonts_say_which_package(tmp_path):
    with pytest.raises(ShieldError, match="apt-get install fonts-dejavu-core"):
        glyphs.fonts(tmp_path)
