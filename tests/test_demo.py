"""The README's main job runs end to end on the shipped model and a local RPC board."""
import json

from stochastic_shield.demo import DemoArgs, run_demo


def test_demo_compiles_runs_on_a_local_board_and_reports(tmp_path, capsys):
    res = run_demo(DemoArgs(out=tmp_path, limit=200))
    out = capsys.readouterr().out
    assert "accuracy on the host board over RPC" in out and "latency on the host board" in out
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["accuracy"]["images"] == 200 and saved["accuracy"]["accuracy"] >= 0.85
    assert saved["latency"]["median_ms"] > 0 and res["model"]["arch"] == "fashion_cnn"
