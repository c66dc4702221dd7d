"""What every command group shares: the 'where to run' options, JSON output, comma-separated lists."""
from __future__ import annotations

import argparse
import json
import sys
from ..defaults import CALIB_IMAGES, OBSERVER, OBSERVERS, SESSION_TIMEOUT
from ..errors import ShieldError


def add_rpc(p: argparse.ArgumentParser) -> None:
    """--rpc, --key and --session-timeout: where a command runs its artifact (default: here)."""
    g = p.add_argument_group("where to run (default: locally on this machine)")
    g.add_argument("--rpc", metavar="HOST:PORT", help="an RPC server, or the tracker when --key is given")
    g.add_argument("--key", help="device key of the boards at the tracker (e.g. rasp4b64, host)")
    g.add_argument("--session-timeout", type=float, default=SESSION_TIMEOUT, metavar="S",
                   help=f"seconds a board keeps the session (default {SESSION_TIMEOUT:g})")


def endpoint(args: argparse.Namespace):
    """The runtime Endpoint of the options add_rpc added."""
    from ..runtime_py.session import Endpoint

    if args.key and not args.rpc:
        raise ShieldError("--key needs --rpc", "give the tracker as --rpc HOST:PORT")
    return Endpoint(args.rpc, args.key, session_timeout=args.session_timeout)


MODEL_HELP = ("the model: a checkpoint .pt with its .json sidecar, a torch.export .pt2, an .onnx, or a state_dict .pt "
              "with --factory (default: the shipped Fashion-MNIST CNN)")


def add_model(p: argparse.ArgumentParser, data: bool = True) -> None:
    """The model positional and what a model that does not say it needs (see compile/sources.py);
    DATA False leaves --data to the command (which has its own data option)."""
    from pathlib import Path

    p.add_argument("checkpoint", type=Path, nargs="?", metavar="MODEL", help=MODEL_HELP)
    g = p.add_argument_group("your own model (when MODEL does not say)")
    g.add_argument("--factory", metavar="MODULE:FUNCTION",
                   help="a Python function returning the nn.Module whose state_dict MODEL holds")
    g.add_argument("--input-shape", type=comma_ints, metavar="C,H,W", help="the image input (default: the model's, "
                                                                           "else the data's)")
    g.add_argument("--classes", type=comma_list, metavar="NAMES", help="class names, comma-separated (default: "
                                                                       "the data's, else 0..K-1)")
    g.add_argument("--mean", type=comma_floats, metavar="M", help="the model does not normalise its [0, 1] input: "
                                                                  "compile (x - mean) / std in front, per channel")
    g.add_argument("--std", type=comma_floats, metavar="S", help="with --mean")
    if data:
        g.add_argument("--data", metavar="DATA", help="the model's data: an image folder (one subfolder per class), "
                                                      "an .npz (x, y) or fashion-mnist / cifar10; calibration uses it")


def model_source(args: argparse.Namespace):
    """The sources.ModelSource of the options add_model added (None: the shipped checkpoint, as it is)."""
    from ..compile.sources import ModelSource

    data = getattr(args, "data", None) or getattr(args, "dataset", None)
    extra = dict(factory=args.factory, input_shape=args.input_shape, classes=args.classes, mean=args.mean,
                 std=args.std, data=data)
    if args.checkpoint is None and not any(v is not None for v in extra.values()):
        return None
    if args.factory and args.checkpoint is None:
        raise ShieldError("--factory needs the state_dict file", "give it as MODEL")
    return ModelSource(args.checkpoint, **extra)


def add_precision(p: argparse.ArgumentParser, what: str = "compile") -> None:
    """--precision (int8 by default on every command), with --int8 and --fp32 as its short forms."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--precision", choices=("int8", "fp32"), default="int8",
                   help=f"{what} the int8 (default) or the fp32 model")
    g.add_argument("--int8", dest="precision", action="store_const", const="int8", help="--precision int8")
    g.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="--precision fp32")


def add_quantization(p: argparse.ArgumentParser, title: str = "int8 post-training quantization") -> None:
    """--calib, --calib-data, --observer, --allow-fp32 and --data-root."""
    q = p.add_argument_group(title)
    q.add_argument("--calib", type=int, default=CALIB_IMAGES, metavar="N",
                   help=f"calibration images from the training set (default {CALIB_IMAGES})")
    q.add_argument("--calib-data", metavar="DATA", help="calibrate on these images (folder, .npz or data set name; "
                                                        "default: the model's data)")
    q.add_argument("--observer", default=OBSERVER, choices=OBSERVERS,
                   help=f"how activation ranges are observed (default {OBSERVER})")
    q.add_argument("--allow-fp32", action="store_true", help="run layers that have no int8 form in fp32")
    q.add_argument("--data-root", help="folder of the calibration data set")


def add_json(p: argparse.ArgumentParser, help: str = "machine-readable output on stdout") -> None:
    """The --json flag."""
    p.add_argument("--json", action="store_true", help=help)


def to_json(obj, **kw) -> str:
    """OBJ as JSON text; numpy scalars and arrays become numbers and lists, anything else its str()."""
    return json.dumps(obj, default=_json_default, **kw)


def print_json(obj) -> None:
    """OBJ on stdout as indented JSON."""
    sys.stdout.write(to_json(obj, indent=2) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)  # paths, and whatever a result may carry (tune's results were always printed so)


def comma_list(text: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c')."""
    return tuple(filter(None, (t.strip() for t in text.split(","))))


def comma_ints(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32), or an argparse error."""
    try:
        return tuple(int(t) for t in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def comma_floats(text: str) -> tuple[float, ...]:
    """'0.5,0.25' -> (0.5, 0.25), or an argparse error."""
    try:
        return tuple(float(t) for t in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def ints_text(values) -> str:
    """(1, 8, 32) -> '1,8,32', for help texts."""
    return ",".join(map(str, values))


def add_seed(p: argparse.ArgumentParser, show: bool = True) -> None:
    """--seed (default: a fresh seed from the OS CSPRNG for every call) and, with SHOW, --show-seed."""
    p.add_argument("--seed", type=seed_int, default=None, metavar="N",
                   help="seed of the dropout masks, to reproduce a run (default: a fresh secret seed from the "
                        "OS CSPRNG for every call; a given seed is echoed in the output)")
    if show:
        p.add_argument("--show-seed", action="store_true", help="print the seeds that were drawn (they are secret "
                                                                "by default: whoever knows one can predict the masks)")


def seed_int(text: str) -> int:
    """'123' or '0x7b' -> 123, in [0, 2^64), or an argparse error."""
    try:
        seed = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed < 2**64:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2^64), got {seed}")
    return seed
