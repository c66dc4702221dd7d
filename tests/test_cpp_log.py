"""A tuning run's console: TVM's C++ tensorization warnings go to the log folder, everything else stays."""
import os
import subprocess
import sys

from stochastic_shield.schedules.cpp_log import quiet_cpp_warnings

NOISE = b"[15:23:30] /project/src/s_tir/meta_schedule/postproc/rewrite_tensorize.cc:50: Warning: " \
        b"Tensorize failed with error (not rendered)\n"


def test_noise_lines_move_to_the_log_and_the_rest_passes_in_order(tmp_path, capfd):
    log = tmp_path / "logs" / "tvm-warnings.log"
    with quiet_cpp_warnings(log) as moved:
        os.write(2, NOISE)
        print("tune: first line", file=sys.stderr, flush=True)
        os.write(2, NOISE[:40])            # a C++ line arriving in pieces, as pipes deliver them
        os.write(2, NOISE[40:] + b"[15:2")
        os.write(2, b"3:31] another C++ warning, kept\n")
        sys.stderr.write("\rtune:  50%")   # a progress bar without a newline passes at once
        sys.stderr.flush()
        subprocess.run([sys.executable, "-c", f"import os; os.write(2, {NOISE!r} + b'worker line\\n')"], check=True)
        print("\ntune: done", file=sys.stderr, flush=True)
    assert moved["moved"] == 3
    assert log.read_bytes() == NOISE * 3
    err = capfd.readouterr().err
    assert "Tensorize" not in err
    assert err == "tune: first line\n[15:23:31] another C++ warning, kept\n\rtune:  50%worker line\n\ntune: done\n"
    os.write(2, NOISE)  # after the block: fd 2 is the real stderr again
    assert capfd.readouterr().err == NOISE.decode()
