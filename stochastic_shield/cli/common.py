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


def add_quantization(p: argparse.ArgumentParser, title: str = "int8 post-training quantization",
                     int8: bool = False) -> None:
    """--calib, --observer, --allow-fp32 and --data-root (with INT8, also the --int8 switch)."""
    q = p.add_argument_group(title)
    if int8:
        q.add_argument("--int8", action="store_true",
                       help="quantize to int8 (weights per channel, activations per tensor)")
    q.add_argument("--calib", type=int, default=CALIB_IMAGES, metavar="N",
                   help=f"calibration images from the training set (default {CALIB_IMAGES})")
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


def ints_text(values) -> str:
    """(1, 8, 32) -> '1,8,32', for help texts."""
    return ",".join(map(str, values))
