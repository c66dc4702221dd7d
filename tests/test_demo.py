"""The README's main job runs end to end (small settings) and ends with a report and its plots."""
import json

from stochastic_shield.demo import DemoArgs, run_demo

PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_reports_accuracy_latency_and_robustness_from_a_local_board(tmp_path, capsys):
    args = DemoArgs(out=tmp_path, limit=12, attacks=("fgsm", "pgd5", "adaptive5"), robust_T=(1, 8),
                    latency_T=(1, 8), eot_samples=2, accuracy_images=100, uncertainty_images=50,
                    uncertainty_corruptions=("contrast",),
                    timing={"number": 2, "repeat": 3, "warmup": 1})
    res = run_demo(args)
    out = capsys.readouterr().out
    assert "clean accuracy of int8 + shield (T=16) on the host board" in out and "report:" in out
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["accuracy_T16"]["images"] == 100 and saved["accuracy_T16"]["accuracy"] >= 0.85
    assert [r["T"] for r in saved["latency"]] == [1, 8]
    assert all(c["passed"] is not False for c in saved["sanity_checks"]), saved["sanity_checks"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "Latency against T" in report and "robustness/robustness.md" in report
    assert "uncertainty on 50 images" in out and "int8+shield T=16 vs int8: ECE" in saved["uncertainty"]["line"]
    assert "uncertainty/uncertainty.md" in report
    for png in ("latency/latency.png", "robustness/robustness_transfer.png", "robustness/robustness_adaptive.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG
    assert res["shield"].startswith("filter=bits:3")
