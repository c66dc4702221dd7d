"""Train a model on the CPU: seeded, with a progress bar, resumable after an interruption."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import save_checkpoint
from .data import dataset_info, load_dataset
from .errors import ShieldError
from .models import build_model


@dataclass
class TrainArgs:
    """Settings of one training run."""

    out: Path
    arch: str = "fashion_cnn"
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    epochs: int = 8                 # the shipped checkpoint's recipe
    batch_size: int = 128
    lr: float = 2e-3
    dropout: float = 0.25
    seed: int = 0
    limit: int | None = None  # train on the first N images only (for tests)
    threads: int | None = None
    progress: bool = True


def evaluate_torch(model: nn.Module, split, batch_size: int = 500) -> float:
    """Top-1 accuracy of a PyTorch model on a data split."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x = torch.from_numpy(split.as_float(i, i + batch_size))
            correct += int((model(x).argmax(1).numpy() == split.labels[i:i + batch_size]).sum())
    return correct / max(len(split), 1)


def _augment(x: torch.Tensor, gen: np.random.Generator, info) -> torch.Tensor:
    """Random horizontal flips (and, for colour images, 4-pixel shifted crops)."""
    flip = torch.from_numpy(gen.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if info.shape[0] == 3:
        padded = nn.functional.pad(x, (4, 4, 4, 4))
        dx, dy = gen.integers(0, 9, 2)
        x = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    return x


def train(args: TrainArgs) -> dict:
    """Train ARGS.arch on ARGS.dataset and write the checkpoint; returns its sidecar."""
    from tqdm import tqdm

    info = dataset_info(args.dataset)
    if args.epochs < 1 or args.batch_size < 1:
        raise ShieldError("epochs and batch size must be at least 1")
    torch.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    train_split = load_dataset(args.dataset, "train", args.data_root).subset(args.limit)
    test_split = load_dataset(args.dataset, "test", args.data_root)

    torch.manual_seed(args.seed)
    model = build_model(args.arch, info, args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (len(train_split) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    out = Path(args.out)
    partial = out.with_suffix(".partial.pt")
    start = 0
    if partial.exists():  # resume: finished epochs are kept in the partial file
        state = torch.load(partial, map_location="cpu", weights_only=False)
        if state.get("args") == _resume_key(args):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            start = state["epoch"]
            print(f"resuming from {partial} after epoch {start}")

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, args.epochs):
        model.train()
        gen = np.random.default_rng([args.seed, epoch])  # per-epoch stream: a resumed run reshuffles identically
        torch.manual_seed(args.seed * 1000 + epoch)
        order = gen.permutation(len(train_split))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not args.progress,
                   unit="batch", leave=True)
        running = 0.0
        for step in bar:
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            x = torch.from_numpy(train_split.images[idx].astype(np.float32) / 255.0)
            y = torch.from_numpy(train_split.labels[idx])
            x = _augment(x, gen, info)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        _save_partial({"args": _resume_key(args), "model": model.state_dict(), "opt": opt.state_dict(),
                       "sched": sched.state_dict(), "epoch": epoch + 1}, partial)

    acc = evaluate_torch(model, test_split)
    meta = {
        "arch": args.arch, "dataset": args.dataset, "input_shape": [1, *info.shape],
        "input_range": [0.0, 1.0], "normalisation": {"mean": list(info.mean), "std": list(info.std), "inside_model": True},
        "classes": list(info.classes), "dropout": args.dropout, "seed": args.seed, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "train_images": len(train_split),
        "test_accuracy": acc, "test_images": len(test_split),
        "command": (f"shield train --arch {args.arch} --dataset {args.dataset} --epochs {args.epochs} "
                    f"--batch-size {args.batch_size} --lr {args.lr} --dropout {args.dropout} --seed {args.seed}"),
    }
    meta = save_checkpoint(model, out, meta)
    partial.unlink(missing_ok=True)
    return meta


def _save_partial(state: dict, partial: Path) -> None:
    """Write the state after a finished epoch atomically."""
    tmp = partial.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, partial)


def _resume_key(args: TrainArgs) -> dict:
    """The settings a partial run must share with this one to be resumed."""
    return {k: getattr(args, k) for k in ("arch", "dataset", "epochs", "batch_size", "lr", "dropout", "seed", "limit")}
