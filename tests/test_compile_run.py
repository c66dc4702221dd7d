"""Compiled fp32 output equals PyTorch's: locally, on the host RPC board, on the emulated aarch64 board."""
import json

import numpy as np
import pytest
import torch

from stochastic_shield.compile.build import CompileArgs, compile_artifact
from stochastic_shield.errors import ShieldError
from stochastic_shield.runtime_py.artifact import load_artifact
from stochastic_shield.runtime_py.runner import Deployment, evaluate
from stochastic_shield.runtime_py.session import Endpoint

TOL = 1e-4  # max abs difference of logits allowed between TVM and PyTorch fp32


def _reference(shipped, x):
    model, _ = shipped
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_manifest_describes_the_artifact(host_artifact, shipped):
    art = load_artifact(host_artifact)
    m = art.manifest
    assert m["input"] == {"shape": [8, 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0], "layout": "NCHW"}
    assert m["classes"][9] == "Ankle boot" and m["target"]["name"] == "host"
    assert m["model"]["weights_sha256"] == shipped[1]["weights_sha256"]
    assert m["tvm_version"].startswith("0.27") and m["precision"] == "fp32"
    assert sorted(p.name for p in host_artifact.iterdir()) == ["manifest.json", "model.so"]


def test_local_output_matches_pytorch(host_artifact, shipped, fashion_test):
    x = fashion_test.as_float(0, 37)  # not a multiple of the batch: the last batch is padded
    with Deployment(host_artifact) as dep:
        out = dep.predict_logits(x)
    assert out.shape == (37, 10)
    assert np.abs(out - _reference(shipped, x)).max() <= TOL


def test_host_rpc_board_through_tracker_matches_pytorch(host_artifact, shipped, fashion_test, boards):
    x = fashion_test.as_float(0, 64)
    with Deployment(host_artifact, Endpoint(boards.tracker, "host", session_timeout=60), threads=1) as dep:
        out = dep.predict_logits(x)
        res = evaluate(dep, fashion_test, progress=False)
        assert dep.threads == 1  # as the board's runtime reports it: set over RPC
    assert np.abs(out - _reference(shipped, x)).max() <= TOL
    assert res["accuracy"] >= 0.85  # 256 real test images; the model scores 92% on all 10000


@pytest.mark.emulated
def test_emulated_aarch64_board_matches_pytorch(rasp4_artifact, shipped, fashion_test, emulated_boards):
    x = fashion_test.as_float(0, 16)
    with Deployment(rasp4_artifact, Endpoint(emulated_boards.tracker, "rasp4b64", session_timeout=300)) as dep:
        out = dep.predict_logits(x)
    assert np.abs(out - _reference(shipped, x)).max() <= TOL


def test_wrong_input_shape_is_a_clear_error(host_artifact):
    with Deployment(host_artifact) as dep:
        with pytest.raises(ShieldError, match=r"input shape \(2, 3, 28, 28\) does not match"):
            dep.predict_logits(np.zeros((2, 3, 28, 28), np.float32))
        with pytest.raises(ShieldError, match="NaN"):
            dep.predict_logits(np.full((1, 1, 28, 28), np.nan, np.float32))


def test_aarch64_library_on_the_host_is_a_clear_error(rasp4_artifact):
    with pytest.raises(ShieldError, match="could not load the library built for target 'rasp4b64'"):
        with Deployment(rasp4_artifact):
            pass


def test_failed_build_leaves_no_half_artifact(tmp_path, monkeypatch):
    import stochastic_shield.compile.build as build_mod

    def boom(*a, **k):
        raise KeyboardInterrupt  # interrupted after the library was linked, before the manifest

    monkeypatch.setattr(build_mod, "write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        compile_artifact(CompileArgs(None, "host", tmp_path / "art", int8=False))
    assert list(tmp_path.iterdir()) == []


def test_compile_errors(tmp_path):
    with pytest.raises(ShieldError, match="unknown target"):
        compile_artifact(CompileArgs(None, "pi9", tmp_path / "a"))
    with pytest.raises(ShieldError, match="checkpoint .* not found"):
        compile_artifact(CompileArgs(tmp_path / "missing.pt", "host", tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_artifact_errors(tmp_path, host_artifact):
    with pytest.raises(ShieldError, match="not found"):
        load_artifact(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShieldError, match="not an artifact"):
        load_artifact(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"library": "model.so"}))
    with pytest.raises(ShieldError, match="malformed"):
        load_artifact(bad)


def test_unreachable_rpc_address_is_a_clear_error(host_artifact):
    with pytest.raises(ShieldError, match="cannot reach the RPC server at 127.0.0.1:9"):
        with Deployment(host_artifact, Endpoint("127.0.0.1:9")):
            pass
    with pytest.raises(ShieldError, match="bad RPC address"):
        with Deployment(host_artifact, Endpoint("localhost")):
            pass


def test_unknown_key_lists_the_keys_on_the_tracker(host_artifact, boards):
    with pytest.raises(ShieldError, match=r"no board registered under key 'pi5'.*host \(1\)"):
        with Deployment(host_artifact, Endpoint(boards.tracker, "pi5")):
            pass


def test_board_is_free_again_right_after_a_deployment_closes(host_artifact, fashion_test, boards):
    """A closed session must release the board at once, not at its session timeout."""
    import time

    from stochastic_shield.runtime_py.tracker import tracker_summary

    with Deployment(host_artifact, Endpoint(boards.tracker, "host", session_timeout=600)) as dep:
        dep.predict_logits(fashion_test.as_float(0, 8))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if tracker_summary(boards.tracker)["queue_info"].get("host", {}).get("free", 0) >= 1:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the host board stayed busy after the session was closed")
