"""`shield compile`: checkpoint in, deployable artifact (library + manifest) out, written atomically."""
from __future__ import annotations

import datetime as _dt
import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

from .._atomic import atomic_dir, write_json
from ..checkpoint import load_checkpoint
from ..errors import ShieldError
from ..targets import get_board

MANIFEST = "manifest.json"
LIBRARY = "model.so"
FORMAT_VERSION = 1


@dataclass
class CompileArgs:
    """Settings of one compilation."""

    checkpoint: Path | None
    target: str = "host"
    out: Path = Path("artifact")
    batch: int = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compile_artifact(args: CompileArgs) -> dict:
    """Import, compile and export a checkpoint for a board; returns the manifest written beside the library."""
    import tvm

    from .importer import import_model
    from .pipeline import build, optimize

    board = get_board(args.target)  # fail early on an unknown target
    fcompile = board.fcompile()     # ... and on a missing cross compiler
    target = board.tvm_target()
    if args.batch < 1:
        raise ShieldError(f"batch must be at least 1, got {args.batch}")
    model, meta = load_checkpoint(args.checkpoint)
    shape = [args.batch, *meta["input_shape"][1:]]

    mod = optimize(import_model(model, shape))
    ex = build(mod, target)
    out = Path(args.out)
    with atomic_dir(out) as tmp:
        lib = tmp / LIBRARY
        try:
            ex.export_library(str(lib), fcompile=fcompile) if fcompile else ex.export_library(str(lib))
        except Exception as e:  # noqa: BLE001 - the linker's failure, summarised
            raise ShieldError(f"linking the library for {board.name} failed: {str(e).strip().splitlines()[-1]}") from None
        manifest = {
            "format_version": FORMAT_VERSION,
            "library": LIBRARY,
            "library_sha256": _sha256(lib),
            "entry": "main",
            "input": {"shape": shape, "dtype": "float32", "range": meta.get("input_range", [0.0, 1.0]),
                      "layout": "NCHW"},
            "output": {"shape": [args.batch, len(meta["classes"])], "dtype": "float32", "kind": "logits"},
            "normalisation": meta.get("normalisation"),
            "classes": meta["classes"],
            "model": {"arch": meta["arch"], "dataset": meta["dataset"], "checkpoint": str(args.checkpoint or "shipped"),
                      "weights_sha256": meta["weights_sha256"], "fp32_test_accuracy": meta.get("test_accuracy")},
            "target": {"name": board.name, "tvm": board.target, "cross_compiler": board.cross_compiler,
                       "rpc_key": board.rpc_key},
            "precision": "fp32",
            "quantization": None,
            "shield": None,
            "tvm_version": tvm.__version__,
            "built_on": platform.node(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
