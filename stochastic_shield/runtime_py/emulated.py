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
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .._atomic import atomic_dir, write_json
from ..errors import ShieldError

# Bump when the build steps change in a way the lists below do not show.
RECIPE_VERSION = 1
ARCH = "aarch64"
DEB_ARCH = "arm64"
PYTHON_VERSION = "3.11"

# CPython 3.11 and every library it links, from Debian 12 (bookworm), arm64 or arch-independent.
DEB_PACKAGES = (
    "python3.11:arm64", "python3.11-minimal:arm64", "libpython3.11-minimal:arm64",
    "libpython3.11-stdlib:arm64", "libc6:arm64", "libgcc-s1:arm64", "libstdc++6:arm64",
    "gcc-12-base:arm64", "zlib1g:arm64", "libexpat1:arm64", "libffi8:arm64", "libssl3:arm64",
    "libbz2-1.0:arm64", "liblzma5:arm64", "libzstd1:arm64", "libsqlite3-0:arm64",
    "libncursesw6:arm64", "libtinfo6:arm64", "libreadline8:arm64", "libuuid1:arm64",
    "libdb5.3:arm64", "libnsl2:arm64", "libtirpc3:arm64", "libgssapi-krb5-2:arm64",
    "libk5crypto3:arm64", "libkeyutils1:arm64", "libkrb5-3:arm64", "libkrb5support0:arm64",
    "libcom-err2:arm64", "libcrypt1:arm64", "libmd0:arm64", "libselinux1:arm64",
    "libpcre2-8-0:arm64", "libacl1:arm64", "media-types", "readline-common", "libtirpc-common",
)

# What the board's RPC server imports. apache-tvm-ffi is pinned: 0.1.15.x segfaults in ToJSONGraph.
# cloudpickle and psutil: TVM's popen worker and RPC server import them at run time.
WHEELS = (
    "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy==2.4.6",
    "ml_dtypes==0.6.0", "typing_extensions==4.15.0", "cloudpickle==3.1.2", "psutil==7.2.2",
)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")

# Paths inside the board's TVM that only a compiler needs; without them the board is runtime-only.
RUNTIME_ONLY_DELETE = ("tvm/lib/libtvm_compiler.so", "tvm/lib/libtvm_runtime_cuda.so", "tvm/3rdparty")

SITE_DIR = "opt/site"  # where the wheels go, relative to the sysroot
PTH_FILE = "usr/lib/python3/dist-packages/stochastic-shield-site.pth"
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


def cache_root() -> Path:
    """The package's cache folder: $SHIELD_CACHE or ~/.cache/stochastic-shield."""
    return Path(os.environ.get("SHIELD_CACHE") or Path.home() / ".cache" / "stochastic-shield")


def default_board_dir() -> Path:
    """Where the emulated aarch64 board lives by default: $SHIELD_CACHE/boards/aarch64."""
    return cache_root() / "boards" / ARCH


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
        downloads = cache_root() / "downloads"
        with atomic_dir(board_dir) as tmp:
            sysroot = tmp / "sysroot"
            sysroot.mkdir()
            debs = _download_debs(downloads / f"debs-{DEB_ARCH}", progress)
            progress(f"unpacking {len(debs)} Debian {DEB_ARCH} packages")
            for deb in debs:
                _run(["dpkg", "-x", str(deb), str(sysroot)], f"unpack {deb.name}")
            wheels = _download_wheels(downloads / f"wheels-{ARCH}", progress)
            _install_wheels(wheels, sysroot, progress)
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


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run CMD; on failure raise a ShieldError naming WHAT with the command's last output line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise ShieldError(f"cannot {what}: {lines[-1]}", f"command: {' '.join(cmd[:6])} ...")
    return proc


def _ensure_apt_arch(progress: Progress) -> None:
    """Make apt know Debian's arm64 packages: add the architecture and update, only if needed."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "list dpkg architectures").stdout.split()
    if DEB_ARCH in foreign:
        known = subprocess.run(["apt-cache", "show", "--no-all-versions", DEB_PACKAGES[0]],
                               capture_output=True, text=True)
        if known.returncode == 0 and known.stdout.strip():
            return
    hint = f"as root run: dpkg --add-architecture {DEB_ARCH} && apt-get update"
    if os.geteuid() != 0:
        raise ShieldError(f"apt does not know the {DEB_ARCH} packages the emulated board needs", hint)
    progress(f"adding the {DEB_ARCH} architecture to apt and updating its lists")
    if DEB_ARCH not in foreign:
        _run(["dpkg", "--add-architecture", DEB_ARCH], f"add the {DEB_ARCH} architecture")
    _run(["apt-get", "update", "-q"], "update apt's package lists")


def _download_debs(dest: Path, progress: Progress) -> list[Path]:
    """Download DEB_PACKAGES into DEST (reusing files with the right SHA-256); return the .deb paths."""
    _ensure_apt_arch(progress)
    dest.mkdir(parents=True, exist_ok=True)
    # --print-uris names the exact files apt would fetch, with their hashes, without fetching them.
    # Run it in an empty folder: apt prints nothing for a file already present in its cwd.
    with tempfile.TemporaryDirectory() as empty:
        uris = _run(["apt-get", "download", "--print-uris", *DEB_PACKAGES],
                    "resolve the Debian packages", cwd=empty).stdout
    wanted: list[tuple[str, str]] = []  # (file name, sha256)
    for line in uris.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].startswith("'") and parts[3].startswith("SHA256:"):
            wanted.append((parts[1], parts[3].removeprefix("SHA256:")))
    if len(wanted) != len(DEB_PACKAGES):
        raise ShieldError(f"apt resolved {len(wanted)} of {len(DEB_PACKAGES)} Debian packages",
                          f"run apt-get update and retry; apt said: {uris.strip()[-200:]}")
    missing = [fname for fname, sha in wanted if _sha256(dest / fname) != sha]
    if missing:
        progress(f"downloading {len(missing)} Debian {DEB_ARCH} packages into {dest}")
        # apt lists files in its own order; a file name starts with its package's name.
        by_name = {pkg.split(":")[0]: pkg for pkg in DEB_PACKAGES}
        names = [by_name[fname.split("_")[0]] for fname in missing]
        _run(["apt-get", "download", "-q", *names], "download the Debian packages", cwd=dest)
    debs = [dest / fname for fname, _ in wanted]
    bad = [d.name for d, (_, sha) in zip(debs, wanted) if _sha256(d) != sha]
    if bad:
        raise ShieldError(f"apt-get download did not produce {', '.join(bad)}", str(dest))
    return debs


def _sha256(path: Path) -> str | None:
    """SHA-256 of PATH in hex, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _pip_platform_args() -> list[str]:
    """pip options that select aarch64 CPython 3.11 binary wheels on an x86 host."""
    args = []
    for platform in WHEEL_PLATFORMS:
        args += ["--platform", platform]
    args += ["--python-version", PYTHON_VERSION, "--implementation", "cp",
             "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--abi", "abi3", "--abi", "none",
             "--only-binary=:all:", "--no-deps"]
    return args


def _download_wheels(dest: Path, progress: Progress) -> list[Path]:
    """Download the aarch64 WHEELS into DEST with the host's pip; return the wheel paths."""
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {len(WHEELS)} aarch64 wheels into {dest}")
    # pip download skips files already in DEST, so a rebuild needs the index only to resolve.
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
          "--dest", str(dest), *_pip_platform_args(), *WHEELS], "download the aarch64 wheels")
    wheels = []
    for spec in WHEELS:
        name, _, version = spec.partition("==")
        stem = name.replace("-", "_").lower()
        found = [w for w in dest.glob("*.whl")
                 if w.name.lower().startswith(f"{stem}-{version}-")]
        if not found:
            raise ShieldError(f"pip did not download a wheel for {spec}", str(dest))
        wheels.append(sorted(found)[-1])
    return wheels


def _install_wheels(wheels: list[Path], sysroot: Path, progress: Progress) -> None:
    """Unpack WHEELS into SYSROOT/opt/site and make the board's Python see that folder."""
    progress(f"unpacking {len(wheels)} wheels into the board")
    site = sysroot / SITE_DIR
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "--no-index", "--target", str(site), *_pip_platform_args(), *map(str, wheels)],
         "unpack the aarch64 wheels")
    pth = sysroot / PTH_FILE
    pth.parent.mkdir(parents=True, exist_ok=True)
    # The path is as the board sees it: qemu's -L maps /opt/site to SYSROOT/opt/site.
    pth.write_text(f"/{SITE_DIR}\n")


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
    proc = _run([str(launcher), "-c", _SMOKE], "run the emulated Python", env=board_env(),
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
