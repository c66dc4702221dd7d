"""Artifact integrity: a library that does not match its manifest's SHA-256 is never loaded or uploaded."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from stochastic_shield import paths
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.runner import Deployment
from stochastic_shield.runtime_py.session import Endpoint


def _truncate(lib: Path) -> None:
    """Cut the library to half its size, as an interrupted copy would."""
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])


def _flip_one_byte(lib: Path) -> None:
    """Flip every bit of one byte in the middle; the size stays the same."""
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))


CORRUPTIONS = {"truncated": _truncate, "one byte flipped": _flip_one_byte}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(host_artifact: Path, tmp_path: Path) -> Path:
    art = tmp_path / "art"
    shutil.copytree(host_artifact, art)
    return art


def _cache(tmp_path, monkeypatch) -> Path:
    """Point the library cache at an empty folder of this test."""
    monkeypatch.setenv("SHIELD_CACHE", str(tmp_path / "cache"))
    return paths.library_cache_dir()


def _cached(cache: Path) -> set[str]:
    return {p.name for p in cache.glob("*")} if cache.exists() else set()


def _assert_one_line_integrity_error(err: pytest.ExceptionInfo) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert "does not match its manifest" in msg and "recompile" in msg


def _sessions(server_log: str) -> int:
    """Sessions the RPC server accepted so far (TVM logs one 'connected from' line per session)."""
    return Path(server_log).read_text().count("connected from")


def test_local_library_cache_is_named_after_the_files_real_hash(host_artifact, tmp_path, monkeypatch, fashion_test):
    art = _copy(host_artifact, tmp_path)
    cache = _cache(tmp_path, monkeypatch)
    with Deployment(art) as dep:
        dep.predict_logits(fashion_test.as_float(0, 8))
    digest = _sha256(art / "model.so")
    assert _cached(cache) == {f"{digest}.so"}
    assert (cache / f"{digest}.so").read_bytes() == (art / "model.so").read_bytes()


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_library_is_a_one_line_error_locally_even_with_a_cached_copy(
        host_artifact, tmp_path, monkeypatch, fashion_test, corruption):
    art = _copy(host_artifact, tmp_path)
    cache = _cache(tmp_path, monkeypatch)
    with Deployment(art) as dep:  # the intact library is loaded once: its copy is in the cache
        good = dep.predict_logits(fashion_test.as_float(0, 8))
    before = _cached(cache)

    CORRUPTIONS[corruption](art / "model.so")
    bad_digest = _sha256(art / "model.so")
    with pytest.raises(ShieldError) as err:
        with Deployment(art):
            pass
    _assert_one_line_integrity_error(err)
    assert _cached(cache) == before, "nothing of the damaged library was written to the cache"
    assert bad_digest not in Path("/proc/self/maps").read_text(), "the damaged library was not loaded"

    shutil.copy2(host_artifact / "model.so", art / "model.so")  # restored: it runs again, as before
    with Deployment(art) as dep:
        np.testing.assert_array_equal(dep.predict_logits(fashion_test.as_float(0, 8)), good)


def test_manifest_without_library_hash_is_refused(host_artifact, tmp_path, monkeypatch):
    art = _copy(host_artifact, tmp_path)
    cache = _cache(tmp_path, monkeypatch)
    manifest = json.loads((art / "manifest.json").read_text())
    del manifest["library_sha256"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShieldError, match="records no library_sha256") as err:
        with Deployment(art):
            pass
    _assert_one_line_integrity_error(err)
    assert _cached(cache) == set()


def test_corrupted_library_is_never_uploaded_to_a_board(host_artifact, tmp_path, fashion_test, boards):
    server_log = next(p.log for p in boards.processes if p.kind == "server")
    board = Endpoint(boards.tracker, "host", session_timeout=60)
    before = _sessions(server_log)
    for name, corrupt in CORRUPTIONS.items():
        art = _copy(host_artifact, tmp_path / name.replace(" ", "-"))
        corrupt(art / "model.so")
        with pytest.raises(ShieldError) as err:
            with Deployment(art, board):
                pass
        _assert_one_line_integrity_error(err)

    # The control: an intact copy does reach the board, and the server logs that one session.
    art = _copy(host_artifact, tmp_path / "intact")
    with Deployment(art, board) as dep:
        assert dep.predict_logits(fashion_test.as_float(0, 8)).shape == (8, 10)
    deadline = time.monotonic() + 10
    while _sessions(server_log) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sessions(server_log) == before + 1, "only the intact library opened a session on the board"
