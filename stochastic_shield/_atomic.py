"""Atomic file and directory writes (never leave a half-written artifact), and file digests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike):
    """Yield a temporary directory beside DEST; on success it replaces DEST in one rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, mode: str = "w"):
    """Yield a file object for a temporary file beside DEST, renamed over DEST on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(dest: str | os.PathLike, obj) -> None:
    """Write OBJ as indented JSON to DEST atomically."""
    with atomic_file(dest) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resume_json(path: Path, fresh: dict, fixed: list, start_over: str) -> dict:
    """The results file PATH of a resumable run when its format and FIXED settings match FRESH's, else an error.

    FRESH: the results a new run starts from ("format_version", "settings" and empty tables; the
    file's missing tables are taken from it). START_OVER: how the user starts afresh instead, as in
    "delete it" or "drop --resume". Every refusal is one line that says why and what to do.
    """
    from .errors import ShieldError

    try:
        old = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ShieldError(f"{path} is not valid JSON ({e})", f"{start_over} to start over") from None
    if old.get("format_version") != fresh["format_version"]:
        raise ShieldError(f"{path} has format {old.get('format_version')}, this version writes "
                          f"{fresh['format_version']}", f"use another -o folder, or {start_over} to start over")
    then, now = old.get("settings", {}), fresh["settings"]
    changed = [k for k in fixed if then.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {then.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ShieldError(f"cannot resume {path}: it was computed with other settings ({diffs})",
                          f"use another -o folder, or {start_over} to start over")
    for k, v in fresh.items():
        old.setdefault(k, v)
    return old
