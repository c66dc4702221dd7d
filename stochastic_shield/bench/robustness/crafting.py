"""The PyTorch side of a robustness run: the models attacks differentiate, crafting, the gradient check."""
from __future__ import annotations

import math
import zlib

import numpy as np

from .grid import AttackSpec, Configuration
from .plan import Plan


def eot_replica(rep, samples: int):
    """EOT over dropout masks in one batched replica call: log of the mean softmax of SAMPLES passes
    with fresh masks (``EOT(average="probs")``, but the passes share one forward)."""
    import torch

    rep.seed = None  # fresh torch masks at every call

    def model(x):
        return torch.logsumexp(rep(x, T=samples).log_softmax(-1), dim=1) - math.log(samples)
    return model


class Models:
    """The fp32 model, and each configuration's replica and attack model (built lazily).

    COMPILE_ARGS(cfg, out) gives the CompileArgs of a configuration: the replica is built from the
    same quantization plan as its artifact.
    """

    def __init__(self, p: Plan, compile_args):
        from ...replica import float_model

        self.p = p
        self.fp32 = float_model(p.loaded)
        self._compile_args = compile_args
        self._models = {}

    def attack_model(self, cfg: Configuration):
        """images -> logits (N, K) the adaptive attacker differentiates for CFG."""
        if cfg.name not in self._models:
            if not cfg.int8:
                self._models[cfg.name] = self.fp32
            else:
                from ...compile.build import prepare_module
                from ...replica import Replica

                prep = prepare_module(self._compile_args(cfg, self.p.out / "artifacts" / cfg.name))  # reads only
                rep = Replica(prep.plan, prep.config)
                self._models[cfg.name] = (eot_replica(rep, self.p.args.eot_samples) if cfg.stochastic
                                          else (lambda x, rep=rep: rep(x, T=1)[:, 0]))
        return self._models[cfg.name]


def make_attack(spec: AttackSpec, model, eps: float):
    """FGSM, or PGD from a random start (the adaptive attack is PGD on an EOT + BPDA model)."""
    from ...attacks import FGSM, PGD

    if spec.kind == "fgsm":
        return FGSM(model, eps)
    return PGD(model, eps, steps=spec.steps, random_start=True)


def unit_seed(seed: int, key: str) -> int:
    """A seed per unit of work, stable across runs and resumes."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 31)


def craft(attack, x: np.ndarray, y: np.ndarray, batch: int, seed: int, bar=None, cost: int = 1) -> np.ndarray:
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


def progress_bar(total: int, enabled: bool):
    """Progress in passes (gradient evaluations) per image, so that the ETA weighs EOT and 100-step PGD right."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="pass", unit_scale=True, desc="attacks", dynamic_ncols=True)


def _samples(cfg: Configuration | None, eot_samples: int) -> int:
    """Passes per image and step: EOT samples on a stochastic replica, else one."""
    return eot_samples if cfg is not None and cfg.stochastic else 1


def cost(spec: AttackSpec, cfg: Configuration | None, eot_samples: int) -> int:
    """Forward-backward passes per image of an attack unit."""
    return spec.steps * _samples(cfg, eot_samples)


def images_per_batch(craft_batch: int, cfg: Configuration | None, eot_samples: int) -> int:
    """Images per attack batch so that a batch holds about CRAFT_BATCH passes: EOT's memory stays
    bounded, and the replica runs faster on a few hundred rows than on a thousand (cache)."""
    return max(1, craft_batch // _samples(cfg, eot_samples))
