"""`shield train`: train a model on the CPU and write a checkpoint."""
from __future__ import annotations

from pathlib import Path

from .common import add_json, print_json


def register(sub) -> None:
    """Add 'train' to the shield CLI's subparsers."""
    p = sub.add_parser("train", help="train a model on the CPU and write a checkpoint (weights + JSON sidecar)",
                       description="Train a model on the CPU (seeded, resumable) and write CHECKPOINT.pt + .json.")
    p.add_argument("-o", "--out", type=Path, required=True, help="checkpoint file to write (.pt)")
    p.add_argument("--arch", default="fashion_cnn", help="fashion_cnn, resnet8 or resnet20 (default fashion_cnn)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist or cifar10 (default fashion-mnist)")
    p.add_argument("--data-root", help="folder of the data set (CIFAR-10: the python pickle batches)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dropout", type=float, default=0.25, help="rate of the model's dropout layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="train on the first N images only")
    add_json(p, "print the sidecar as JSON")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> None:
    from ..train import TrainArgs, train

    meta = train(TrainArgs(out=args.out, arch=args.arch, dataset=args.dataset, data_root=args.data_root,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, dropout=args.dropout,
                           seed=args.seed, limit=args.limit, progress=not args.json))
    if args.json:
        print_json(meta)
    else:
        print(f"wrote {args.out} (test accuracy {meta['test_accuracy']:.4f} on {meta['test_images']} images)")
