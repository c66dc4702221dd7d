"""The main job on the embedded default: the shielded int8 model on a local RPC board, its latency
against T and its robustness under attack, ending with a report and plots."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ._atomic import atomic_file, write_json
from .defaults import DEFAULT_SHIELD, LATENCY_T, ROBUSTNESS_T

DEMO_ATTACKS = ("fgsm", "pgd10", "surrogate10", "apgd-ce10", "apgd-dlr10", "levels10", "apgd-da10", "seed-apgd-dlr10",
                "seed-levels10")


@dataclass
class DemoArgs:
    """Settings of the demo (defaults: a few minutes on 2 cores)."""

    out: Path = Path("shield-out")
    checkpoint: Path | None = None
    shield: str = DEFAULT_SHIELD
    # The strongest evaluation at demo budgets (about 5 minutes in all on 2 cores): every threat model
    # and attack family, 10 steps, EOT over 20 masks, one restart; the report states these budgets.
    limit: int = 100                       # test images for the robustness run
    attacks: tuple[str, ...] = DEMO_ATTACKS
    eps: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)
    configs: tuple[str, ...] = ("fp32", "int8", "int8+filter", "int8+shield")
    robust_T: tuple[int, ...] = ROBUSTNESS_T
    latency_T: tuple[int, ...] = LATENCY_T
    eot_samples: int = 20
    restarts: int = 1
    convergence_images: int = 50
    detect_images: int = 200
    surrogate_epochs: int = 1
    surrogate_images: int | None = 10000   # the transfer surrogate: trained once (about 15 s), then cached
    accuracy_images: int = 2000            # clean accuracy of int8 + shield at T=16 over RPC
    # One line of 'shield bench uncertainty' on the artifacts already built (T <= 16), four corruptions at severity 3.
    uncertainty_images: int = 500
    uncertainty_corruptions: tuple[str, ...] = ("gaussian-noise", "motion-blur", "contrast", "jpeg")
    resume: bool = True
    timing: dict = field(default_factory=lambda: {"number": 10, "repeat": 15, "warmup": 5})


def _step(msg: str):
    print(f"[shield demo] {msg}", flush=True)


def run_demo(args: DemoArgs) -> dict:
    """Compile int8 + shield for the host, start a tracker and a host RPC board, measure accuracy,
    latency against T and robustness there, stop the board, and write REPORT.md beside the plots."""
    from .bench.latency import LatencyArgs, format_table, run_latency
    from .bench.robustness import RobustnessArgs, run_robustness
    from .compile.sources import load_model
    from .compile.build import CompileArgs, compile_artifact
    from .compile.shield.config import parse_shield
    from .data import load_dataset
    from .runtime_py.boards import local_boards
    from .runtime_py.runner import Deployment, TimingSpec, evaluate
    from .runtime_py.session import Endpoint

    out = Path(args.out)
    t_start = time.perf_counter()
    meta = load_model(args.checkpoint).meta
    config = parse_shield(args.shield)
    _step(f"model: {meta['arch']} on {meta['dataset']} (PyTorch fp32 test accuracy {meta['test_accuracy']:.2%}); "
          f"shield: {config}")

    t0 = time.perf_counter()
    lat_art, acc_art = out / "host-int8-shield-b1", out / "host-int8-shield-b50"
    compile_artifact(CompileArgs(args.checkpoint, "host", lat_art, batch=1, int8=True,
                                 shield=replace(config, T=tuple(args.latency_T))))
    compile_artifact(CompileArgs(args.checkpoint, "host", acc_art, batch=50, int8=True,
                                 shield=replace(config, T=(16,))))
    _step(f"compiled int8 + shield for the host in {time.perf_counter() - t0:.1f} s -> {lat_art}")

    test = load_dataset(meta["dataset"], "test").subset(args.accuracy_images)
    with local_boards() as boards:
        ep = Endpoint(boards.tracker, "host", session_timeout=1800)
        _step(f"local boards up: tracker {boards.tracker}, host RPC server under key 'host'")
        with Deployment(acc_art, ep) as dep:
            acc = evaluate(dep, test, T=16, seed=None)  # as deployed: a fresh secret seed per call
        acc.pop("predictions")
        _step(f"clean accuracy of int8 + shield (T=16) on the host board: {acc['accuracy']:.2%} "
              f"({acc['correct']}/{acc['images']})")

        lat = run_latency(LatencyArgs(lat_art, None, list(args.latency_T), ep, out / "latency",
                                      TimingSpec(**args.timing)))
        _step("latency on the host board against T (untuned):\n" + format_table(lat))

        t_rob = time.perf_counter()
        rob = run_robustness(RobustnessArgs(
            checkpoint=args.checkpoint, limit=args.limit, attacks=args.attacks, eps=args.eps, T=args.robust_T,
            filter="+".join(map(str, config.filters)) or "none", dropout=",".join(map(str, config.dropout)),
            eot_samples=args.eot_samples, restarts=args.restarts, convergence_images=args.convergence_images,
            detect_images=args.detect_images, surrogate_epochs=args.surrogate_epochs,
            surrogate_images=args.surrogate_images, configs=args.configs, rpc=boards.tracker, key="host",
            session_timeout=1800, out=out / "robustness", resume=args.resume, batch=50, threads=1))
    rob_s = time.perf_counter() - t_rob
    _step(f"boards stopped (robustness: {rob_s:.0f} s)")
    unc = _uncertainty(args, config, acc_art, out)
    _step(f"uncertainty on {args.uncertainty_images} images (clean, {len(args.uncertainty_corruptions)} corruptions "
          f"at severity 3, glyphs-ood): {unc['line']}")

    report = _report(meta, config, acc, lat, rob, out, unc)
    result = {"model": {k: meta[k] for k in ("arch", "dataset", "test_accuracy", "weights_sha256")},
              "shield": str(config), "accuracy_T16": acc, "latency": lat["rows"],
              "sanity_checks": rob["sanity"], "report": str(report),
              "robustness_s": rob_s, "uncertainty": unc, "wall_s": time.perf_counter() - t_start}
    write_json(out / "demo.json", result)
    _step(f"report: {report}")
    plots = [str(out / "latency" / "latency.png")] + [v for v in rob["files"].values() if str(v).endswith(".png")]
    _step(f"plots: {', '.join(plots)}  ({result['wall_s']:.0f} s in all)")
    return result


def _uncertainty(args: DemoArgs, config, shield_art: Path, out: Path) -> dict:
    """'shield bench uncertainty' at demo size on the int8 artifact of the robustness run and the T=16 shield."""
    from .bench.uncertainty import UncertaintyArgs, headline, run_uncertainty

    int8_art = out / "robustness" / "artifacts" / "int8"
    res = run_uncertainty(UncertaintyArgs(
        checkpoint=args.checkpoint, limit=args.uncertainty_images, corruptions=args.uncertainty_corruptions,
        severities=(3,), T=(1, 8, 16), filter="+".join(map(str, config.filters)) or "none",
        dropout=",".join(map(str, config.dropout)), out=out / "uncertainty", batch=50, progress=False,
        artifacts={"int8": int8_art, "int8+shield": shield_art} if int8_art.exists() else {"int8+shield": shield_art}))
    return {"line": headline(res), "report": res["files"]["report"]}


def _report(meta, config, acc, lat, rob, out: Path, unc: dict | None = None) -> Path:
    """REPORT.md: what the shield buys per eps, then the three results with links to the detailed report and plots."""
    from .bench.latency import format_table
    from .bench.robustness.summary import headline

    lines = [
        f"# stochastic-shield demo: {meta['arch']} on {meta['dataset']}",
        "",
        *headline(rob),
        f"Shield: `{config}`. Board: this machine's CPU through a local TVM RPC tracker (key `host`). "
        "Kernels untuned (see `shield tune`).",
        "",
        "## Clean accuracy",
        f"int8 + shield at T = 16: **{acc['accuracy']:.2%}** on {acc['images']} test images "
        f"(PyTorch fp32: {meta['test_accuracy']:.2%} on all 10000), each call with a fresh seed from the OS "
        "CSPRNG, as a deployment draws them (the robustness cells use a fixed seed, see their report).",
        "",
        "## Latency against T",
        format_table(lat),
        "",
        "![latency](latency/latency.png)",
        "",
        "## Robustness",
        f"Attacks at demo budgets, chosen to keep the demo at about 5 minutes on 2 cores: {rob['settings']['images']} "
        f"images, the attacks' steps in their names ({', '.join(a['name'] for a in rob['settings']['attacks'])}), EOT "
        f"over {rob['settings']['eot_samples']} masks, {rob['settings'].get('restarts', 1)} restart(s). "
        "`shield bench robustness` runs the same families with longer budgets by default.",
        "",
        "Details, threat models and sanity checks: [robustness/robustness.md](robustness/robustness.md).",
        "",
        *([f"![worst case](robustness/{Path(rob['files']['worst']).name})"] if "worst" in rob["files"] else []),
        "![transfer](robustness/robustness_transfer.png)",
        "![adaptive](robustness/robustness_adaptive.png)",
        "",
        *(["## Uncertainty", "", unc["line"], "", "Details: [uncertainty/uncertainty.md](uncertainty/uncertainty.md).", ""]
          if unc else []),
    ]
    path = out / "REPORT.md"
    with atomic_file(path) as f:
        f.write("\n".join(lines))
    return path
