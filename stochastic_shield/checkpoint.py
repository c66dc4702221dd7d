"""Checkpoints: PyTorch weights plus a JSON sidecar that says what they are."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from ._atomic import atomic_file, write_json
from .data import dataset_info
from .errors import ShieldError
from .models import build_model

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = PACKAGE_DIR / "checkpoints" / "fashion_cnn.pt"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar beside weights file PATH."""
    return Path(path).with_suffix(".json")


def weights_hash(state_dict) -> str:
    """sha256 of the weights' raw bytes in name order: the same weights give the same hash."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, meta: dict) -> dict:
    """Write weights and sidecar atomically; returns the sidecar dict."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    meta = dict(meta, weights_sha256=weights_hash(state), torch_version=torch.__version__)
    with atomic_file(path, "wb") as f:
        f.write(buf.getvalue())
    write_json(sidecar_path(path), meta)
    return meta


def load_checkpoint(path: str | os.PathLike | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint (default: the shipped Fashion-MNIST CNN) as an eval-mode model and its sidecar."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    side = sidecar_path(path)
    if not path.exists():
        raise ShieldError(f"checkpoint {path} not found", "train one with 'shield train' or pass an existing .pt file")
    if not side.exists():
        raise ShieldError(f"checkpoint {path} has no sidecar {side.name}",
                          "a checkpoint is a .pt file plus the .json written by 'shield train'")
    try:
        meta = json.loads(side.read_text())
        arch, dataset = meta["arch"], meta["dataset"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ShieldError(f"sidecar {side} is malformed ({e})", "rewrite it with 'shield train'") from None
    model = build_model(arch, dataset_info(dataset), meta.get("dropout", 0.0))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ShieldError(f"cannot load weights from {path}: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, meta
