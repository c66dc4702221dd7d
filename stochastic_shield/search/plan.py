"""The settings of a defense search (SearchArgs) and their checked form (SearchPlan)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bench.robustness.grid import parse_attack, parse_eps
from ..bench.robustness.plan import RobustnessArgs, check_args as check_robustness
from ..defaults import SESSION_TIMEOUT, TARGET
from ..errors import ShieldError
from .space import DEFAULT_DROPOUTS, DEFAULT_FILTERS, DEFAULT_PAIR, SEARCH_T, make_space

# Stage 1: a cheap attack for every pair; stage 2: the strongest evaluation's adaptive attacks (and
# the transfer ones, which cost little) on the finalists. An attack runs only where it applies.
SCREEN_ATTACKS = ("apgd-ce10", "levels10")
FINAL_ATTACKS = ("fgsm", "pgd20", "apgd-ce25", "apgd-dlr25", "levels25", "apgd-ce-smooth25")


@dataclass
class SearchArgs:
    """Settings of one defense search (see run_search)."""

    checkpoint: Path | None = None          # None: the shipped Fashion-MNIST CNN
    data_root: str | None = None
    limit: int = 200                        # the first LIMIT test images: screening clean accuracy, the final stage
    clean_images: int = 2000                # the first N test images: the finalists' clean accuracy (the budgets)
    screen_images: int = 100                # the first of them that the screening attack runs on
    budgets: tuple[float, ...] = (1.0, 2.0)  # clean-accuracy budgets, points below plain int8
    eps: tuple = (0.02, 0.05, 0.1)
    T: tuple[int, ...] = SEARCH_T
    filters: tuple[str, ...] = DEFAULT_FILTERS
    dropouts: tuple[str, ...] = DEFAULT_DROPOUTS
    screen_attacks: tuple[str, ...] = SCREEN_ATTACKS
    screen_eot: int = 8                     # fresh masks per screening step
    attacks: tuple[str, ...] = FINAL_ATTACKS
    eot_samples: int = 20                   # fresh masks per final-stage step
    restarts: int = 1
    final_max: int = 6                      # finalists at most (besides plain int8 and the current default)
    slack: float = 0.0                      # points beyond a budget a screened point may lose clean (replica = artifact)
    margin: float = 0.03                    # robust accuracy by which a screening point must be beaten to drop
    target: str = TARGET
    rpc: str | None = None
    key: str | None = None
    session_timeout: float = SESSION_TIMEOUT
    out: Path = Path("shield-out/search")
    seed: int = 0
    batch: int = 50
    craft_batch: int = 100
    threads: int | None = None
    calib: int = 512
    progress: bool = True


@dataclass
class SearchPlan:
    """The checked settings: the robustness plan of plain int8 (model, images, eps, where), the pairs."""

    args: SearchArgs
    base: object                            # bench.robustness Plan of plain int8 (images, eps, endpoint)
    pairs: list
    eps: tuple[float, ...]
    Ts: tuple[int, ...]
    out: Path
    incumbent: object = DEFAULT_PAIR
    clean_split: object = None              # the test images of the budgets' clean accuracy (None: the final stage's)
    fixed: dict = field(default_factory=dict)

    def say(self, msg: str) -> None:
        """A progress line (only with args.progress)."""
        if self.args.progress:
            from tqdm import tqdm

            tqdm.write(f"[shield search] {msg}")


def robustness_args(a: SearchArgs, **kw) -> RobustnessArgs:
    """The RobustnessArgs of the final stage (KW: configs, filter, dropout, out, ...)."""
    base = dict(checkpoint=a.checkpoint, data_root=a.data_root, limit=a.limit, attacks=tuple(a.attacks),
                eps=(0.0,) + tuple(a.eps), T=tuple(a.T), eot_samples=a.eot_samples, restarts=a.restarts,
                convergence_images=0, detect_images=0, configs=("int8",), target=a.target, rpc=a.rpc, key=a.key,
                session_timeout=a.session_timeout, seed=a.seed, resume=True, batch=a.batch,
                craft_batch=a.craft_batch, threads=a.threads, calib=a.calib, progress=a.progress,
                out=Path(a.out) / "final" / "int8")
    base.update(kw)
    return RobustnessArgs(**base)


def check_args(a: SearchArgs) -> SearchPlan:
    """Validate A (one ShieldError per rule), load the model and the images."""
    for name in ("limit", "screen_images", "screen_eot", "eot_samples", "restarts", "final_max", "batch",
                 "craft_batch", "calib"):
        if int(getattr(a, name)) < 1:
            raise ShieldError(f"{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if int(a.clean_images) < 0:
        raise ShieldError(f"clean-images must be at least 0, got {a.clean_images}")
    if a.screen_images > a.limit:
        raise ShieldError(f"screen-images ({a.screen_images}) cannot exceed limit ({a.limit})",
                          "the screening attack runs on the first images of the final stage's")
    budgets = tuple(sorted({float(b) for b in a.budgets}))
    if not budgets or budgets[0] <= 0 or budgets[-1] >= 100:
        raise ShieldError(f"budgets must be points in (0, 100), got {list(a.budgets)}", "e.g. --budgets 1,2")
    a.budgets = budgets
    eps = tuple(e for e in parse_eps(a.eps) if e > 0)
    if not eps or any(e > 1 for e in eps):
        raise ShieldError(f"eps must hold budgets in (0, 1], got {list(a.eps)}", "e.g. --eps 0.02,0.05,0.1")
    for name in ("slack", "margin"):
        if not float(getattr(a, name)) >= 0:
            raise ShieldError(f"{name} must be >= 0, got {getattr(a, name)}")
    for attack in tuple(a.screen_attacks) + tuple(a.attacks):
        if parse_attack(attack).threat == "seed":
            raise ShieldError(f"attack {attack!r} knows the board's seed", "the search ranks fresh-seed deployments: "
                                                                           "give transfer and adaptive attacks")
    if not a.screen_attacks or any(parse_attack(s).threat != "adaptive" for s in a.screen_attacks):
        raise ShieldError(f"screening attacks must be adaptive ones, got {list(a.screen_attacks)}",
                          "e.g. apgd-ce10,levels10")
    pairs = make_space(a.filters, a.dropouts)
    base = check_robustness(robustness_args(a))
    Ts = base.Ts
    clean = check_robustness(robustness_args(a, limit=a.clean_images)).split if a.clean_images > a.limit else None
    return SearchPlan(a, base, pairs, eps, Ts, Path(a.out), clean_split=clean, fixed={
        "images": len(base.split), "screen_images": a.screen_images, "eps": list(eps), "seed": a.seed,
        "weights_sha256": base.meta["weights_sha256"], "dataset": base.split.info.name, "data_root": a.data_root,
        "screen_attacks": list(a.screen_attacks), "screen_eot": a.screen_eot, "attacks": list(a.attacks),
        "eot_samples": a.eot_samples, "restarts": a.restarts, "T": list(Ts), "target": a.target, "batch": a.batch, "calib": a.calib})
