"""The PyTorch side of a robustness run: the models attacks differentiate, crafting, the gradient check."""
from __future__ import annotations

import zlib

import numpy as np

from .grid import DA_CAP, DA_WEIGHT, AttackSpec, Configuration
from .plan import Plan


BATCH_ROWS = 500


class ReplicaPasses:
    """images -> pass logits (N, T, K) of a replica: fresh masks (SEED None: EOT) or the board's (an int SEED).

    ``passes`` is the attribute ``attacks.double(attack, "samples")`` doubles. With REDUCE the log
    of the mean softmax (N, K) is returned instead, for attacks that take logits (PGD, FGSM).
    """

    def __init__(self, rep, passes: int, seed: int | None = None, reduce: bool = False):
        self.rep, self.passes, self.seed, self.reduce = rep, int(passes), seed, reduce

    def __call__(self, x):
        from ...attacks.losses import log_mean_probs

        self.rep.seed = self.seed  # replicas are shared between the (b) and (c) models
        out = self.rep(x, T=self.passes)
        return log_mean_probs(out) if self.reduce else out


class Models:
    """The fp32 model, the transfer surrogate, and each configuration's replicas (built lazily).

    COMPILE_ARGS(cfg, out) gives the CompileArgs of a configuration: the replica is built from the
    same quantization plan as its artifact.
    """

    def __init__(self, p: Plan, compile_args):
        from ...replica import float_model

        self.p = p
        self.fp32 = float_model(p.loaded)
        self._compile_args = compile_args
        self._plans, self._replicas = {}, {}
        self._surrogate = None
        self.surrogate_info = None

    @property
    def surrogate(self):
        """The independently trained fp32 surrogate of threat (a) (trained and cached on first use)."""
        if self._surrogate is None:
            from .surrogate import surrogate_model

            self._surrogate, self.surrogate_info = surrogate_model(self.p, self.p.say)
        return self._surrogate

    def replica(self, cfg: Configuration, grad: str = "identity", skip_filters: int = 0):
        """CFG's Replica with the filter gradient GRAD, without its first SKIP_FILTERS filter links."""
        from ...replica import Replica

        key = (cfg.name, grad, skip_filters)
        if key not in self._replicas:
            if cfg.name not in self._plans:
                from ...compile.build import prepare_module

                args = self._compile_args(cfg, self.p.out / "artifacts" / cfg.name)
                self._plans[cfg.name] = prepare_module(args).plan
            self._replicas[key] = Replica(self._plans[cfg.name], filter_grad=grad, skip_filters=skip_filters)
        return self._replicas[key]

    def attack_model(self, cfg: Configuration):
        """images -> log-probabilities (N, K) the adaptive attacker differentiates for CFG (EOT, BPDA identity)."""
        if not cfg.int8:
            return self.fp32
        return ReplicaPasses(self.replica(cfg), self.p.args.eot_samples if cfg.stochastic else 1, reduce=True)

    def model_for(self, spec: AttackSpec, cfg: Configuration | None, T: int | None = None):
        """The model SPEC differentiates: fp32 or the surrogate (transfer), else CFG's replica with EOT
        over fresh masks (b) or with the board's masks for row T (c); LevelPGD's replica skips the bits link."""
        if spec.kind in ("fgsm", "pgd"):
            return self.fp32
        if spec.kind == "surrogate":
            return self.surrogate
        if not cfg.int8:
            return self.fp32
        a = self.p.args
        rep = self.replica(cfg, spec.grad, 1 if spec.kind == "levels" else 0)
        if spec.seed_known:
            return ReplicaPasses(rep, T, a.seed, reduce=spec.kind == "adaptive")
        return ReplicaPasses(rep, a.eot_samples if cfg.stochastic else 1, None, reduce=spec.kind == "adaptive")


def make_attack(spec: AttackSpec, model, eps: float, restarts: int = 1, seed: int = 0, bits: int | None = None,
                threshold: float | None = None):
    """The attack object of SPEC on MODEL: FGSM; PGD from a random start (pgd, adaptive); APGD (surrogate,
    apgd-ce/dlr/da, THRESHOLD the detector's for the detection-aware loss); LevelPGD over BITS levels."""
    from ...attacks import APGD, FGSM, PGD, DetectionAwareLoss, LevelPGD

    if spec.kind == "fgsm":
        return FGSM(model, eps)
    if spec.kind in ("pgd", "adaptive"):
        return PGD(model, eps, steps=spec.steps, random_start=True)
    if spec.kind == "levels":
        return LevelPGD(model, eps, bits=bits, steps=spec.steps, restarts=restarts, seed=seed)
    loss = spec.loss if spec.loss != "da" else DetectionAwareLoss("dlr", DA_WEIGHT, "mi", threshold, DA_CAP)
    return APGD(model, eps, steps=spec.steps, restarts=restarts, loss=loss, seed=seed)


def unit_seed(seed: int, key: str) -> int:
    """A seed per unit of work, stable across runs and resumes."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 31)


def craft(attack, x: np.ndarray, y: np.ndarray, batch: int, seed: int, bar=None, cost: float = 1) -> np.ndarray:
    """Adversarial images for X in batches, with the global torch RNG (random starts, EOT masks)
    seeded for this unit and restored afterwards; BAR advances by COST per image."""
    import torch

    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(x), batch):
            xb, yb = torch.from_numpy(x[i:i + batch]), torch.from_numpy(y[i:i + batch])
            out.append(attack(xb, yb).numpy())
            if bar is not None:
                bar.update(len(xb) * cost)
    return np.concatenate(out)


def gradient_check(model, x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Input gradient of the margin loss (best other logit - true logit) through MODEL: finite, non-zero?

    The margin rather than cross-entropy: cross-entropy's gradient underflows to exactly zero on
    confidently classified images, which would look like masking but is not.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt, yt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(y)
        with torch.enable_grad():
            logits = model(xt)
            true = logits.gather(1, yt[:, None])[:, 0]
            is_true = torch.nn.functional.one_hot(yt, logits.shape[1]).bool()
            other = logits.masked_fill(is_true, -torch.inf).max(1).values
            (grad,) = torch.autograd.grad((other - true).sum(), xt)
    per_image = grad.flatten(1).abs().sum(1)
    return {"images": len(x), "finite": bool(torch.isfinite(grad).all()),
            "nonzero_fraction": float((per_image > 0).float().mean()), "mean_abs": float(grad.abs().mean())}


def progress_bar(total: float, enabled: bool):
    """Progress in attack steps per image, weighted by their cost, so that the ETA weighs EOT and long attacks right."""
    from tqdm import tqdm

    return tqdm(total=round(total), disable=not enabled, unit="step", unit_scale=True, desc="attacks",
                dynamic_ncols=True)


def samples(spec: AttackSpec, cfg: Configuration | None, eot_samples: int, T: int | None = None) -> int:
    """Passes per image and step: T with the seed known, EOT samples on a stochastic replica, else one."""
    if spec.threat == "transfer" or cfg is None or not cfg.stochastic:
        return 1
    return T if spec.seed_known else eot_samples


def cost(spec: AttackSpec, cfg: Configuration | None, eot_samples: int, restarts: int = 1,
         T: int | None = None) -> float:
    """Relative cost per image of an attack unit: steps (times restarts, at most), each step one pass
    of the layers before the dropout plus about 1/20 of one per sample after it (measured on the Fashion CNN)."""
    rounds = restarts if spec.kind in ("apgd", "levels", "surrogate") else 1
    return spec.steps * rounds * (1 + samples(spec, cfg, eot_samples, T) / 20)


def images_per_batch(craft_batch: int, passes: int = 1) -> int:
    """Images per attack batch: CRAFT_BATCH, but at most about BATCH_ROWS rows after the MC expansion
    (images x PASSES), where the replica's dense layers run fastest (cache; measured on the Fashion CNN)."""
    return max(1, min(craft_batch, BATCH_ROWS // max(1, passes)))
