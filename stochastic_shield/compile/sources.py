"""Where a model comes from, and what it takes: the four forms every command accepts.

- a checkpoint ``.pt`` with its ``.json`` sidecar (``shield train``; the shipped model is one);
- a ``torch.export`` program saved with ``torch.export.save`` (``.pt2``);
- a Python factory ``package.module:function`` returning an ``nn.Module``, plus its state_dict ``.pt``;
- an fp32 ONNX file (``.onnx``), imported with TVM Relax's ONNX frontend.

What the model takes comes from the model where it says (sidecar, .pt2 and ONNX input shapes),
else from flags or the data: ``input_shape`` (C, H, W), ``classes`` (names or a count), and, for
a model that does not normalise its [0, 1] input itself, ``mean``/``std`` (compiled in front).
``meta`` describes the model in the sidecar's terms, so the rest of the package treats every
form alike.
"""
from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .._atomic import sha256_file
from ..errors import ShieldError

FORMS = "a checkpoint .pt with its .json sidecar, a .pt2 (torch.export.save), an .onnx, or --factory MODULE:FUNCTION " \
        "with a state_dict .pt"


@dataclass(frozen=True)
class ModelSource:
    """A model the user names: PATH (None: the shipped checkpoint) and what the model itself does not say."""

    path: Path | None = None
    factory: str | None = None                # "package.module:function" (PATH is then its state_dict)
    input_shape: tuple | None = None          # (C, H, W)
    classes: tuple | None = None              # class names
    mean: tuple | None = None                 # the model does not normalise: compile (x - mean) / std in front
    std: tuple | None = None
    data: str | None = None                   # default data: a built-in name, an image folder or an .npz

    def __post_init__(self):
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        for name in ("input_shape", "classes", "mean", "std"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        if self.input_shape is not None and (len(self.input_shape) != 3 or min(self.input_shape) < 1):
            raise ShieldError(f"input shape must be C,H,W with positive sizes, got {list(self.input_shape)}",
                              "e.g. --input-shape 3,96,96")

    @classmethod
    def coerce(cls, value) -> "ModelSource":
        """A ModelSource from a ModelSource, a path or None (the shipped model)."""
        if isinstance(value, ModelSource):
            return value
        return cls(None if value is None else Path(value))

    @property
    def form(self) -> str:
        if self.factory:
            return "factory"
        suffix = self.path.suffix.lower() if self.path is not None else ".pt"
        return {".pt2": "pt2", ".onnx": "onnx"}.get(suffix, "checkpoint")

    def describe(self) -> dict:
        """What the manifest records, enough to load the same model again."""
        return {"form": self.form, "path": str(self.path) if self.path else "shipped", "factory": self.factory,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "classes": list(self.classes) if self.classes else None,
                "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None,
                "data": self.data}

    @classmethod
    def from_manifest(cls, d: dict) -> "ModelSource":
        """The inverse of describe()."""
        path = None if d.get("path") in (None, "shipped") else Path(d["path"])
        tup = (lambda v: tuple(v) if v else None)
        return cls(path, d.get("factory"), tup(d.get("input_shape")), tup(d.get("classes")), tup(d.get("mean")),
                   tup(d.get("std")), d.get("data"))


@dataclass
class LoadedModel:
    """A model ready to import: an eager or graph nn.Module (checkpoint, factory, .pt2) or an ONNX graph."""

    source: ModelSource
    meta: dict                                # arch, dataset, input_shape [1, C, H, W], classes, weights_sha256, ...
    module: object = None                     # torch.nn.Module (a GraphModule for .pt2)
    onnx_model: object = None                 # onnx.ModelProto
    fixed_batch: int | None = None            # the only batch a program exported with static shapes takes
    notes: list = field(default_factory=list)

    @property
    def form(self) -> str:
        return self.source.form


def _need(path: Path | None) -> Path:
    if path is None or not Path(path).exists():
        raise ShieldError(f"model file {path} not found", f"give {FORMS}")
    return Path(path)


def _factory(spec: str):
    """The callable named 'package.module:function' (the current folder is importable, like python -m)."""
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ShieldError(f"bad factory {spec!r}", "write it as package.module:function")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ShieldError(f"cannot import {mod_name} for --factory {spec}: {e}",
                          "run from the folder that holds the package, or install it") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ShieldError(f"{mod_name} has no function {fn_name!r} (--factory {spec})")
    return fn


def load_model(source) -> LoadedModel:
    """Load SOURCE in its form and describe it; a one-line error names what is missing or wrong."""
    import torch

    source = ModelSource.coerce(source)
    form = source.form
    if form == "checkpoint" and source.path is not None and not Path(source.path).with_suffix(".json").exists() \
            and Path(source.path).exists():
        raise ShieldError(f"{source.path} has no sidecar {Path(source.path).with_suffix('.json').name}",
                          f"a bare state_dict needs --factory MODULE:FUNCTION; models come as {FORMS}")
    if form == "checkpoint":
        from ..checkpoint import load_checkpoint

        module, meta = load_checkpoint(source.path)
        meta = dict(meta)
        if source.data:
            meta["dataset"] = source.data
        return LoadedModel(source, meta, module=module)
    path = _need(source.path)
    if form == "factory":
        try:
            module = _factory(source.factory)()
        except ShieldError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code
            raise ShieldError(f"--factory {source.factory} failed: {type(e).__name__}: {e}") from None
        if not isinstance(module, torch.nn.Module):
            raise ShieldError(f"--factory {source.factory} returned {type(module).__name__}, not a torch.nn.Module")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            module.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds
            raise ShieldError(f"cannot load the state_dict {path} into {source.factory}(): "
                              f"{str(e).strip().splitlines()[0]}") from None
        module.eval()
        arch = source.factory.rpartition(":")[2]
        return LoadedModel(source, _meta(source, arch, sha256_file(path), None), module=module)
    if form == "pt2":
        try:
            ep = torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001
            raise ShieldError(f"cannot load {path} with torch.export.load: {str(e).strip().splitlines()[0]}") from None
        shape = list(ep.graph_signature.user_inputs)
        val = next(n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder" and n.name in shape)
        dims = [d if isinstance(d, int) else None for d in val.shape]
        module = ep.module()
        return LoadedModel(source, _meta(source, path.stem, sha256_file(path), dims), module=module,
                           fixed_batch=dims[0])
    import onnx

    from .onnx_import import onnx_input

    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise ShieldError(f"cannot read {path} as ONNX: {str(e).strip().splitlines()[0]}") from None
    _, dims = onnx_input(model)
    return LoadedModel(source, _meta(source, path.stem, sha256_file(path), dims), onnx_model=model,
                       fixed_batch=dims[0] if dims and dims[0] else None)


def _meta(source: ModelSource, arch: str, sha: str, dims) -> dict:
    """The sidecar-like description of a model that came without one."""
    shape = list(source.input_shape) if source.input_shape else None
    if shape is None and dims and len(dims) == 4 and all(d for d in dims[1:]):
        shape = [int(d) for d in dims[1:]]
    if shape is None and source.data:
        from ..user_data import load_data

        shape = list(load_data(source.data, "test").info.shape)
    if shape is None:
        raise ShieldError(f"the input shape of {source.path} is unknown", "give --input-shape C,H,W (or --data)")
    meta = {"arch": arch, "dataset": source.data, "input_shape": [1, *shape], "input_range": [0.0, 1.0],
            "weights_sha256": sha, "test_accuracy": None, "source": source.describe(),
            "normalisation": {"inside_model": source.mean is None, "mean": list(source.mean) if source.mean else None,
                              "std": list(source.std) if source.std else None}}
    if source.classes:
        meta["classes"] = list(source.classes)
    elif source.data:
        from ..user_data import load_data

        meta["classes"] = list(load_data(source.data, "test").info.classes)
    return meta


def with_classes(loaded: LoadedModel, num_outputs: int) -> LoadedModel:
    """The model's classes are its NUM_OUTPUTS outputs: names from --classes (one per output), else from the data
    (its classes need only be among the outputs: the rest are named by their index), else '0'..'K-1'."""
    classes = loaded.meta.get("classes")
    if classes is None:
        loaded.meta["classes"] = [str(i) for i in range(num_outputs)]
    elif len(classes) != num_outputs and (loaded.source.classes is not None or loaded.form == "checkpoint"):
        raise ShieldError(f"the model has {num_outputs} outputs but {len(classes)} classes were given",
                          "give one class name per output")
    elif len(classes) > num_outputs:
        raise ShieldError(f"data {loaded.source.data} has {len(classes)} classes, the model only {num_outputs} outputs",
                          "give data whose labels index the model's outputs, 0-based")
    elif len(classes) < num_outputs:  # the data's labels cover only the first classes
        loaded.meta["classes"] = list(classes) + [str(i) for i in range(len(classes), num_outputs)]
    return loaded


def model_meta(checkpoint=None) -> dict:
    """What a model is: the sidecar of a checkpoint (default: the shipped model), read without loading the
    weights; for the other forms of compile/sources.py (.pt2, ONNX, factory) the loaded model's description."""
    from ..checkpoint import DEFAULT_CHECKPOINT, sidecar_path

    source = ModelSource.coerce(checkpoint)
    if source.form != "checkpoint":
        return load_model(source).meta
    checkpoint = source.path
    side = sidecar_path(checkpoint if checkpoint is not None else DEFAULT_CHECKPOINT)
    try:
        return json.loads(side.read_text())
    except FileNotFoundError:
        raise ShieldError(f"checkpoint sidecar {side} not found",
                          "a checkpoint is a .pt file plus the .json written by 'shield train'") from None
    except ValueError as e:
        raise ShieldError(f"sidecar {side} is malformed ({e})", "rewrite it with 'shield train'") from None


__all__ = ["ModelSource", "LoadedModel", "load_model", "model_meta", "with_classes", "replace"]
