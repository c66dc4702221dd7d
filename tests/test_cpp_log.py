"""A tuning run's console: TVM's C++ tensorization warnings go to the log folder, everything else stays."""
import subprocess
import sys
from pathlib import Path

NOISE = b"[15:23:30] /project/src/s_tir/meta_schedule/postproc/rewrite_tensorize.cc:50: Warning: " \
        b"Tensorize failed with error (not rendered)\n"

# Run as its own process (as 'shield tune' is), so that sys.stderr really writes to file descriptor 2.
SCENARIO = r"""
import os, subprocess, sys
from pathlib import Path
from stochastic_shield.schedules.cpp_log import quiet_cpp_warnings

NOISE = {noise!r}
with quiet_cpp_warnings(Path(sys.argv[1])) as moved:
    os.write(2, NOISE)
    print("tune: first line", file=sys.stderr, flush=True)
    os.write(2, NOISE[:40])            # a C++ line arriving in pieces, as pipes deliver them
    os.write(2, NOISE[40:] + b"[15:2")
    os.write(2, b"3:31] another C++ warning, kept\n")
    sys.stderr.write("\rtune:  50%")   # a progress bar without a newline passes at once
    sys.stderr.flush()
    subprocess.run([sys.executable, "-c", "import os; os.write(2, %r + b'worker line\\n')" % NOISE], check=True)
    print("\ntune: done", file=sys.stderr, flush=True)
os.write(2, NOISE)                     # after the block: fd 2 is the real stderr again
print(moved["moved"])
"""


def test_noise_lines_move_to_the_log_and_the_rest_passes_in_order(tmp_path):
    log = tmp_path / "logs" / "tvm-warnings.log"
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", SCENARIO.format(noise=NOISE), str(log)], capture_output=True,
                       cwd=root, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().strip() == "3"
    assert log.read_bytes() == NOISE * 3
    assert p.stderr == (b"tune: first line\n[15:23:31] another C++ warning, kept\n\rtune:  50%worker line\n"
                        b"\ntune: done\n" + NOISE)
