"""What an emulated board is made of, and fetching it: Debian arm64 packages (apt) and aarch64 wheels (pip).

The lists here are part of the board's recipe (emulated.py): a cached board is reused only if it
was built from the same lists. Downloads are kept and reused: a file is fetched again only when
it is missing or its SHA-256 differs from what apt expects.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import ShieldError

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

SITE_DIR = "opt/site"  # where the wheels go, relative to the sysroot
PTH_FILE = "usr/lib/python3/dist-packages/stochastic-shield-site.pth"

Progress = Callable[[str], None]


def run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run CMD; on failure raise a ShieldError naming WHAT with the command's last output line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise ShieldError(f"cannot {what}: {lines[-1]}", f"command: {' '.join(cmd[:6])} ...")
    return proc


def _ensure_apt_arch(progress: Progress) -> None:
    """Make apt know Debian's arm64 packages: add the architecture and update, only if needed."""
    foreign = run(["dpkg", "--print-foreign-architectures"], "list dpkg architectures").stdout.split()
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
        run(["dpkg", "--add-architecture", DEB_ARCH], f"add the {DEB_ARCH} architecture")
    run(["apt-get", "update", "-q"], "update apt's package lists")


def download_debs(dest: Path, progress: Progress) -> list[Path]:
    """Download DEB_PACKAGES into DEST (reusing files with the right SHA-256); return the .deb paths."""
    _ensure_apt_arch(progress)
    dest.mkdir(parents=True, exist_ok=True)
    # --print-uris names the exact files apt would fetch, with their hashes, without fetching them.
    # Run it in an empty folder: apt prints nothing for a file already present in its cwd.
    with tempfile.TemporaryDirectory() as empty:
        uris = run(["apt-get", "download", "--print-uris", *DEB_PACKAGES],
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
        run(["apt-get", "download", "-q", *names], "download the Debian packages", cwd=dest)
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


def download_wheels(dest: Path, progress: Progress) -> list[Path]:
    """Download the aarch64 WHEELS into DEST with the host's pip; return the wheel paths."""
    dest.mkdir(parents=True, exist_ok=True)
    progress(f"fetching {len(WHEELS)} aarch64 wheels into {dest}")
    # pip download skips files already in DEST, so a rebuild needs the index only to resolve.
    run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
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


def install_wheels(wheels: list[Path], sysroot: Path, progress: Progress) -> None:
    """Unpack WHEELS into SYSROOT/opt/site and make the board's Python see that folder."""
    progress(f"unpacking {len(wheels)} wheels into the board")
    site = sysroot / SITE_DIR
    run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "--no-index", "--target", str(site), *_pip_platform_args(), *map(str, wheels)],
         "unpack the aarch64 wheels")
    pth = sysroot / PTH_FILE
    pth.parent.mkdir(parents=True, exist_ok=True)
    # The path is as the board sees it: qemu's -L maps /opt/site to SYSROOT/opt/site.
    pth.write_text(f"/{SITE_DIR}\n")
