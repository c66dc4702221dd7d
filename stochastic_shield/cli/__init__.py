"""The `shield` command: a thin shell that parses arguments, calls a typed function and prints.

One module per command group, each with ``register(subparsers)`` and its ``cmd_*`` functions:
train, compile (and targets), run (and eval), boards, bench (latency, robustness), search, tune (and
schedules), demo. What they share (where to run, JSON output) is in ``common``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ..errors import ShieldError
from . import bench, boards, certify, compile, demo, detect, run, search, train, tune

DESCRIPTION = """\
stochastic-shield: int8 CNNs on small Arm boards, defended against adversarial inputs.

The usual path: 'shield compile' a checkpoint for a board, start or reach boards ('shield boards'),
then 'shield run' / 'shield eval' the artifact on them. 'shield demo' runs the whole story on the
shipped Fashion-MNIST model and a local board.
"""

# The command groups, in the order 'shield --help' lists them.
COMMAND_GROUPS = (train, compile, run, certify, detect, boards, bench, search, tune, demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole `shield` parser; each subcommand's parsed arguments carry ``func``, its command."""
    from .. import __version__

    ap = argparse.ArgumentParser(prog="shield", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"stochastic-shield {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return ap


def _quiet_library_warnings() -> None:
    """Hide library warnings that say nothing to a user of the command line."""
    # torch 2.13 deprecates its own LeafSpec class (torch/utils/_pytree.py) yet keeps a LeafSpec in
    # every exported program's module call graph; ExportedProgram.run_decompositions deep-copies
    # that graph, and re-creating the LeafSpec warns. It is about torch's internals, printed by
    # every int8 compile, and the call that triggers it (run_decompositions) is one we need.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


def main(argv=None) -> int:
    """Run `shield ARGV...`; returns the exit code (2 on a ShieldError, 3 on a failure of ours, 130 on Ctrl-C).

    Past argument parsing nothing prints a Python trace: a failure is one line naming the layer and the way out
    (the trace with SHIELD_TRACEBACK=1).
    """
    _quiet_library_warnings()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ShieldError as e:
        print(f"shield {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shield {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - no trace reaches a user unless asked for
        if os.environ.get("SHIELD_TRACEBACK") == "1":
            raise
        print(f"shield {args.command}: internal error: {describe_failure(e)} (a bug of ours, not your input: "
              f"{WAY_OUT.get(args.command, '')}rerun with SHIELD_TRACEBACK=1 for the trace and report it)",
              file=sys.stderr)
        return 3
    return 0


# What a user can try when a command fails inside the compiler or the runtime.
WAY_OUT = {"compile": "try --allow-fp32 or --fp32 meanwhile; ", "tune": "try --allow-fp32 or --fp32 meanwhile; "}


def describe_failure(e: BaseException) -> str:
    """One line: the layer that failed (TVM, or the module of ours nearest the failure) and the error's last line."""
    import traceback

    ours = [f for f in traceback.extract_tb(e.__traceback__) if "stochastic_shield" in f.filename]
    where = Path(ours[-1].filename).with_suffix("").parts if ours else ()
    layer = ".".join(where[where.index("stochastic_shield") + 1:]) if "stochastic_shield" in where else "?"
    tvm = type(e).__module__.startswith(("tvm", "tvm_ffi"))
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    return f"{'TVM ' if tvm else ''}{type(e).__name__} in {layer}{': ' + text[:300] if text else ''}"
