"""Shared fixtures: real data (a small Fashion-MNIST cut), the shipped checkpoint, compiled artifacts."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
FASHION_FIXTURE = FIXTURES / "fashion-mnist"

torch.set_num_threads(2)

@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """Folder of the small Fashion-MNIST cut that always ships with the tests."""
    return FASHION_FIXTURE


@pytest.fixture(scope="session")
def fashion_test(fashion_root):
    """The 256 real test images of the fixture."""
    from stochastic_shield.data import load_fashion_mnist

    return load_fashion_mnist("test", fashion_root)


@pytest.fixture(scope="session")
def shipped():
    """The shipped Fashion-MNIST checkpoint: (model, sidecar)."""
    from stochastic_shield.checkpoint import load_checkpoint

    return load_checkpoint()


@pytest.fixture(scope="session")
def host_artifact(tmp_path_factory):
    """The shipped model compiled for the host at batch 8."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("art") / "host-fp32"
    compile_artifact(CompileArgs(None, "host", out, batch=8, int8=False))
    return out


@pytest.fixture(scope="session")
def rasp4_artifact(tmp_path_factory):
    """The shipped model cross-compiled for rasp4b64 at batch 8."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("art") / "rasp4b64-fp32"
    compile_artifact(CompileArgs(None, "rasp4b64", out, batch=8, int8=False))
    return out


@pytest.fixture(scope="session")
def noise_artifact(tmp_path_factory, fashion_root):
    """The shipped model with randomized smoothing (noise:0.25, then bits:3) for the host at batch 4: (folder, args)."""
    from stochastic_shield.compile.build import CompileArgs, compile_artifact

    out = tmp_path_factory.mktemp("art") / "host-noise"
    args = CompileArgs(None, "host", out, batch=4, int8=True, calib=64, data_root=str(fashion_root),
                       shield="filter=noise:0.25+bits:3; T=8,100")
    compile_artifact(args)
    return out, args


@pytest.fixture(scope="session")
def noise_plan(noise_artifact):
    """The quantized plan of noise_artifact (for its numpy reference and PyTorch replica)."""
    from stochastic_shield.compile.build import prepare_module

    return prepare_module(noise_artifact[1]).plan


@pytest.fixture(scope="session")
def boards():
    """A real TVM tracker and host RPC server on 127.0.0.1 (free ports), stopped after the session."""
    from stochastic_shield.runtime_py.boards import local_boards

    with local_boards() as b:
        yield b


@pytest.fixture(scope="session")
def emulated_boards():
    """Tracker + host server + the emulated aarch64 board (key rasp4b64)."""
    if os.environ.get("SHIELD_SKIP_EMULATED"):
        pytest.skip("SHIELD_SKIP_EMULATED is set")
    from stochastic_shield.runtime_py.boards import local_boards

    with local_boards(emulated=True) as b:
        yield b
