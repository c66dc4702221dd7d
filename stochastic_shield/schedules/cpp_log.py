"""TVM's C++ warnings that would flood a tuning run's console, moved to its log folder.

MetaSchedule's tensorization post-processor warns "Tensorize failed with error (not rendered)"
from C++ for every candidate the dot-product rule could not tensorize: hundreds of lines per run
(613 in one 64-trial run), nothing a user can act on. C++ writes straight to file descriptor 2,
past Python's ``sys.stderr``, so the filter sits on the descriptor: while a run lasts, fd 2 is a
pipe, and a thread copies what comes through to the real stderr, except whole lines that match,
which go to the log file instead. Progress bars pass at once (a partial line is held back only
while it could still become a C++ log line, which starts with "[HH:MM:SS]").
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from pathlib import Path

NOISE = (b"Tensorize failed with error",)
_CPP_STAMP = re.compile(rb"\[\d\d:\d\d:\d\d\] ")  # how TVM's C++ log lines start: "[15:23:30] "


@contextlib.contextmanager
def quiet_cpp_warnings(log_path: Path, noise: tuple[bytes, ...] = NOISE):
    """Within the block, whole stderr lines containing one of NOISE go to LOG_PATH (appended), the rest to stderr.

    Yields a dict whose "moved" counts the lines moved (final once the block has ended).
    """
    moved = {"moved": 0}
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters): leave it alone
        yield moved
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, real, Path(log_path), noise, moved), daemon=True)
    pump.start()
    try:
        yield moved
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(real, 2)  # our end of the pipe closes: the pump sees EOF once worker processes let go too
        pump.join(timeout=5)


def _pump(read_end: int, real: int, log_path: Path, noise: tuple[bytes, ...], moved: dict) -> None:
    """Copy READ_END to REAL line by line, moving NOISE lines to LOG_PATH; closes both descriptors at EOF."""
    held = b""
    log = None
    try:
        while chunk := os.read(read_end, 65536):
            held += chunk
            *lines, held = held.split(b"\n")
            out = []
            for line in lines:
                if any(n in line for n in noise):
                    if log is None:
                        log_path.parent.mkdir(parents=True, exist_ok=True)
                        log = open(log_path, "ab")  # noqa: SIM115 - closed below, when the pipe ends
                    log.write(line + b"\n")
                    moved["moved"] += 1
                else:
                    out.append(line + b"\n")
            cut = held.rfind(b"\r") + 1  # a progress bar's redraws: shown now
            out.append(held[:cut])
            held = held[cut:]
            if not _may_be_cpp(held):  # cannot become a C++ log line: shown now too
                out.append(held)
                held = b""
            _write_all(real, b"".join(out))
        _write_all(real, held)
    finally:
        if log is not None:
            log.close()
        os.close(read_end)
        os.close(real)


def _may_be_cpp(part: bytes) -> bool:
    """True when the partial line PART is, or may still become, a C++ log line ("[15:23:30] ...")."""
    if _CPP_STAMP.match(part):
        return True
    shape = b"[00:00:00] "
    return 0 < len(part) < len(shape) and all(c == s or (s == 0x30 and 0x30 <= c <= 0x39) for c, s in zip(part, shape))


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data):]
