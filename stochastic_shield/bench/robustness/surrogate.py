"""The transfer surrogate: an fp32 model of the same architecture trained independently (another seed), cached."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ...errors import ShieldError
from .plan import Plan


def surrogate_settings(p: Plan) -> str:
    """The surrogate in words: a given checkpoint, or what would be trained (a resumed run must agree)."""
    a = p.args
    if a.surrogate is not None:
        return f"checkpoint {a.surrogate}"
    return (f"{_arch(p)} trained on {p.split.info.name} (data root {a.data_root or 'default'}), "
            f"{a.surrogate_epochs} epoch(s), {a.surrogate_images or 'all'} training images, seed {_seed(p)}")


def _arch(p: Plan) -> str:
    from ...models import ARCHITECTURES

    return p.meta["arch"] if p.meta.get("arch") in ARCHITECTURES else "resnet8"


def _seed(p: Plan) -> int:
    """Another seed than the attacked model's: the surrogate shares its data and architecture, not its weights."""
    return int(p.meta.get("seed") or 0) + 1


def surrogate_path(p: Plan) -> Path:
    """Where the trained surrogate is cached: one file per training recipe."""
    from ...paths import cache_root

    key = hashlib.sha256(surrogate_settings(p).encode()).hexdigest()[:16]
    return cache_root() / "surrogates" / f"{_arch(p)}-{p.split.info.name}-{key}.pt"


def surrogate_model(p: Plan, say=print):
    """The surrogate as an images -> logits callable, and its description for the results.

    Trains it on the first call for a recipe (``TrainArgs`` with the run's epochs, images and
    another seed; a minute or two for the Fashion-MNIST CNN on 2 cores), then loads the cached file.
    """
    import torch

    from ...compile.sources import load_model
    from ...data import DATASETS
    from ...replica import float_model

    a = p.args
    path = Path(a.surrogate) if a.surrogate is not None else surrogate_path(p)
    if a.surrogate is None and not path.exists():
        from ...train import TrainArgs, train

        if p.split.info.name not in DATASETS:
            raise ShieldError(f"cannot train a surrogate on {p.split.info.name}: it has no training split we read",
                              "pass --surrogate CKPT (a model trained on the same data), or drop 'surrogate' from "
                              "--attacks")
        say(f"training the transfer surrogate ({surrogate_settings(p)}) -> {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        threads = torch.get_num_threads()
        try:
            train(TrainArgs(out=path, arch=_arch(p), dataset=p.split.info.name, data_root=a.data_root,
                            epochs=a.surrogate_epochs, limit=a.surrogate_images, seed=_seed(p), threads=threads,
                            progress=a.progress))
        finally:
            torch.set_num_threads(threads)
    loaded = load_model(path)
    return float_model(loaded), {"path": str(path), "recipe": surrogate_settings(p),
                                 "weights_sha256": loaded.meta.get("weights_sha256"),
                                 "test_accuracy": loaded.meta.get("test_accuracy")}
