"""An emulated 64-bit Arm board: an aarch64 CPython + TVM runtime run under qemu user-mode emulation.

The board is a stand-in for a Raspberry Pi 4 (64-bit OS) in tests and CI: a real TVM RPC server
runs on an emulated aarch64 CPython, so cross-compiled modules are loaded and executed as on the
real board. Its timings mean nothing for speed; it checks correctness only.

It is made without root inside the sysroot, without chroot and without debootstrap:

1. ``apt-get download`` Debian arm64 packages (CPython 3.11 and the libraries it needs) and
   unpack each with ``dpkg -x`` into ``sysroot/``;
2. unpack aarch64 wheels (TVM runtime, numpy, ...) into ``sysroot/opt/site`` with the host's pip
   (``--platform``), made visible to the board's Python by a ``.pth`` file;
3. delete the compiler library from the board's TVM, so it is runtime-only like a deploy target;
4. write ``bin/python3``, a launcher that runs the board's Python under ``qemu-aarch64-static``.

Cache layout (``$SHIELD_CACHE`` defaults to ``~/.cache/stochastic-shield``)::

    $SHIELD_CACHE/boards/aarch64/          the board (replaced in one rename when rebuilt)
        board.json                         stamp: the recipe it was built from, plus what was used
        bin/python3                        the launcher (see board_python_command)
        sysroot/                           Debian arm64 files + opt/site (the wheels)
    $SHIELD_CACHE/boards/.aarch64.lock     serialises concurrent builds
    $SHIELD_CACHE/downloads/debs-arm64/    downloaded .deb files, reused by later builds
    $SHIELD_CACHE/downloads/wheels-aarch64/  downloaded wheels, reused by later builds

Run ``python -m stochastic_shield.runtime_py.emulated`` to build it and print its path.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from .. import paths
from .._atomic import atomic_dir, write_json
from ..errors import ShieldError
from .board_packages import (ARCH, DEB_ARCH, DEB_PACKAGES, PYTHON_VERSION, SITE_DIR, WHEEL_PLATFORMS, WHEELS,
                             download_debs, download_wheels, install_wheels, run)

# Bump when the build steps change in a way the lists (here and in board_packages.py) do not show.
RECIPE_VERSION = 1
# Paths inside the board's TVM that only a compiler needs; without them the board is runtime-only.
RUNTIME_ONLY_DELETE = ("tvm/lib/libtvm_compiler.so", "tvm/lib/libtvm_runtime_cuda.so", "tvm/3rdparty")

STAMP = "board.json"
LAUNCHER = "bin/python3"
QEMU = "qemu-aarch64-static"

# The launcher finds the board from its own path, so the board can be built in a temporary
# directory and renamed. "-0 <launcher>" makes the emulated Python report the launcher as
# sys.executable: TVM's RPC server re-executes sys.executable for its workers, and without binfmt_misc
# an aarch64 binary started directly fails with "Exec format error". PYTHONHOME pins the prefix to the
# sysroot's /usr (qemu's -L maps it) instead of whatever getpath finds walking up from the launcher.
_LAUNCHER_TEXT = """\
#!/bin/sh
# Emulated aarch64 CPython of a stochastic-shield board; written by stochastic_shield.runtime_py.emulated.
here=$(dirname "$(readlink -f "$0")")
board=$(dirname "$here")
PYTHONHOME=/usr PYTHONNOUSERSITE=1 exec {qemu} -L "$board/sysroot" -0 "$here/python3" \\
    "$board/sysroot/usr/bin/python{py}" "$@"
"""

Progress = Callable[[str], None]


def default_board_dir() -> Path:
    """Where the emulated aarch64 board lives by default: $SHIELD_CACHE/boards/aarch64."""
    return paths.boards_dir() / ARCH


def recipe() -> dict:
    """What a board is built from; a cached board is reused only if its stamp records the same."""
    return {
        "recipe_version": RECIPE_VERSION,
        "arch": ARCH,
        "python": PYTHON_VERSION,
        "debs": list(DEB_PACKAGES),
        "wheels": list(WHEELS),
        "wheel_platforms": list(WHEEL_PLATFORMS),
        "runtime_only_delete": list(RUNTIME_ONLY_DELETE),
    }


def is_built(board_dir: str | os.PathLike | None = None) -> bool:
    """True when BOARD_DIR holds a complete board built from the current recipe."""
    board_dir = Path(board_dir) if board_dir else default_board_dir()
    try:
        stamp = json.loads((board_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("recipe") == recipe() and (board_dir / LAUNCHER).is_file()


def build_emulated_board(cache_dir: str | os.PathLike | None = None, *, force: bool = False,
                         progress: Progress = print) -> Path:
    """Build (or reuse) the emulated aarch64 board and return its directory.

    Parameters
    ----------
    cache_dir:
        The board directory. Default: ``$SHIELD_CACHE/boards/aarch64``
        (``~/.cache/stochastic-shield/boards/aarch64``).
    force:
        Rebuild even if a board from the same recipe exists (downloads are still reused).
    progress:
        Called with one line per build step; pass ``lambda _: None`` for silence.

    Returns
    -------
    The board directory; run its Python with :func:`board_python_command`.

    Raises
    ------
    ShieldError
        A host tool is missing (with the Debian package to install), or a step failed.

    The build is idempotent: when the stamp ``board.json`` records the current recipe the board is
    returned at once. It is built in a temporary directory beside the destination and renamed at
    the end, so an interrupted build leaves nothing half made. Needs root only the first time, to
    add the arm64 architecture to apt (``dpkg --add-architecture arm64 && apt-get update``).
    """
    board_dir = Path(cache_dir) if cache_dir else default_board_dir()
    if not force and is_built(board_dir):
        return board_dir
    _require_host_tools()
    board_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(board_dir):
        # Another process may have finished the same build while we waited for the lock.
        if not force and is_built(board_dir):
            return board_dir
        # Under the lock, a temporary board left beside ours is from a killed build: remove it.
        for stale in board_dir.parent.glob(f".{board_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        downloads = paths.downloads_dir()
        with atomic_dir(board_dir) as tmp:
            sysroot = tmp / "sysroot"
            sysroot.mkdir()
            debs = download_debs(downloads / f"debs-{DEB_ARCH}", progress)
            progress(f"unpacking {len(debs)} Debian {DEB_ARCH} packages")
            for deb in debs:
                run(["dpkg", "-x", str(deb), str(sysroot)], f"unpack {deb.name}")
            wheels = download_wheels(downloads / f"wheels-{ARCH}", progress)
            install_wheels(wheels, sysroot, progress)
            _make_runtime_only(sysroot / SITE_DIR)
            launcher = _write_launcher(tmp)
            progress("checking the board's Python (import tvm under emulation)")
            versions = _smoke_test(launcher)
            write_json(tmp / STAMP, {
                "recipe": recipe(),
                "debs": [d.name for d in debs],
                "wheels": [w.name for w in wheels],
                "versions": versions,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - started, 1),
            })
        progress(f"emulated {ARCH} board ready in {time.monotonic() - started:.0f} s: {board_dir}")
    return board_dir


def board_python_command(board_dir: str | os.PathLike | None = None) -> list[str]:
    """The argv prefix that runs the board's emulated aarch64 Python.

    Append Python arguments to it, e.g. ``board_python_command(d) + ["-m", "tvm.exec.rpc_server"]``,
    and run it with :func:`board_env` as its environment.

    Raises
    ------
    ShieldError
        The board is not built (or from an older recipe), or qemu is not installed.
    """
    board_dir = Path(board_dir) if board_dir else default_board_dir()
    if not is_built(board_dir):
        raise ShieldError(f"no emulated {ARCH} board in {board_dir}",
                          "build it with: python -m stochastic_shield.runtime_py.emulated")
    if shutil.which(QEMU) is None:
        raise ShieldError(f"{QEMU} not found", "install the Debian package qemu-user-static")
    return [str(board_dir / LAUNCHER)]


def board_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a process on the board: BASE (default os.environ) made safe for aarch64.

    Sets ``TVM_USE_RUNTIME_LIB=1`` (the board's TVM has no compiler library) and drops the host's
    Python settings (PYTHONPATH would make the board import x86 packages). Returns a new dict:
    never apply it to ``os.environ``, or the host Python loses ``tvm.relax``.
    """
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["TVM_USE_RUNTIME_LIB"] = "1"
    return env


def _require_host_tools() -> None:
    """Fail in one line when a host tool the build needs is missing."""
    for tool, package in ((QEMU, "qemu-user-static"), ("apt-get", "apt"), ("dpkg", "dpkg")):
        if shutil.which(tool) is None:
            raise ShieldError(f"{tool} not found: the emulated {ARCH} board needs it",
                              f"install the Debian package {package}")


@contextlib.contextmanager
def _build_lock(board_dir: Path):
    """Hold an exclusive lock so two processes never build the same board at once."""
    with open(board_dir.parent / f".{board_dir.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)





def _make_runtime_only(site: Path) -> None:
    """Delete what only a compiler needs from the board's TVM (less than half the size, faster import)."""
    for rel in RUNTIME_ONLY_DELETE:
        path = site / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_launcher(board_dir: Path) -> Path:
    """Write the shell launcher that runs the board's Python under qemu; return its path."""
    launcher = board_dir / LAUNCHER
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(_LAUNCHER_TEXT.format(qemu=QEMU, py=PYTHON_VERSION))
    launcher.chmod(0o755)
    return launcher


_SMOKE = """\
import json, platform, sys
import cloudpickle, numpy, psutil, tvm, tvm.rpc
assert platform.machine() == "aarch64", platform.machine()
# Workers re-execute sys.executable: it must be the launcher, or they fail with Exec format error.
assert sys.executable.endswith("/bin/python3"), sys.executable
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "tvm": tvm.__version__, "numpy": numpy.__version__}))
"""


def _smoke_test(launcher: Path) -> dict:
    """Import what the RPC server needs on the new board; return the versions it reports."""
    proc = run([str(launcher), "-c", _SMOKE], "run the emulated Python", env=board_env(),
                timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Command line: build the emulated board (or reuse it) and print its directory."""
    parser = argparse.ArgumentParser(prog="python -m stochastic_shield.runtime_py.emulated",
                                     description=f"Build the emulated {ARCH} board and print its path.")
    parser.add_argument("--dir", type=Path, default=None, help="board directory (default: $SHIELD_CACHE/boards/aarch64)")
    parser.add_argument("--force", action="store_true", help="rebuild even if it is up to date")
    parser.add_argument("--quiet", action="store_true", help="print only the path")
    args = parser.parse_args(argv)
    say = (lambda _: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        board = build_emulated_board(args.dir, force=args.force, progress=say)
    except ShieldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(board)
    return 0


if __name__ == "__main__":
    sys.exit(main())
