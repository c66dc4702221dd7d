"""Bring your own model, end to end: train a MobileNetV2-style CNN on Fashion-MNIST, save it in the three forms
the tool takes, and compile, evaluate and attack each one with the `shield` command on an image folder.

    python examples/fashion_byom.py                 # about 10 minutes on 2 cores; results in byom-out/
    python examples/fashion_byom.py --quick         # a smoke run: fewer images, smaller attacks

The network is defined here, not in the package, as a user's would be. It does not normalise its
input, so every command gets --mean/--std. Reruns reuse what is on disk (weights, folders, artifacts).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from examples.zoo import conv_bn, InvertedResidual  # noqa: E402

MEAN, STD = 0.286, 0.353   # Fashion-MNIST's pixel statistics
FACTORY = "examples.fashion_byom:fashion_mobilenet"


class FashionMobileNet(nn.Module):
    """A MobileNetV2-style network for 28x28 grey images: inverted residuals with ReLU6, dropout before the head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, 3, 1, act=nn.ReLU6), InvertedResidual(16, 16, 1, 1), InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4), InvertedResidual(24, 32, 2, 4), InvertedResidual(32, 32, 1, 4),
            conv_bn(32, 96, 1, act=nn.ReLU6))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))


def fashion_mobilenet() -> nn.Module:
    """The factory `shield compile --factory` calls."""
    return FashionMobileNet()


def train(out: Path, images: int, epochs: int, seed: int = 0) -> float:
    """Train on the first IMAGES training images, save weights.pt; returns fp32 test accuracy (reused if saved)."""
    from tqdm import tqdm

    from stochastic_shield.data import load_fashion_mnist

    weights, info = out / "weights.pt", out / "fp32.json"
    if weights.exists() and info.exists():
        return json.loads(info.read_text())["test_accuracy"]
    torch.manual_seed(seed)
    model = fashion_mobilenet()
    train_split, test = load_fashion_mnist("train").subset(images), load_fashion_mnist("test")
    x = (torch.from_numpy(train_split.as_float()) - MEAN) / STD
    y = torch.from_numpy(train_split.labels)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with tqdm(total=steps, desc="train", unit="batch") as bar:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(128)[: len(x) // 128]:
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()
    with torch.no_grad():
        xt = (torch.from_numpy(test.as_float()) - MEAN) / STD
        acc = float(np.mean(np.concatenate([model(xt[i:i + 500]).argmax(1).numpy() for i in range(0, len(xt), 500)])
                            == test.labels))
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, weights)
    info.write_text(json.dumps({"test_accuracy": acc, "train_images": images, "epochs": epochs}))
    return acc


def save_forms(out: Path) -> dict:
    """The trained model as a .pt2 program (dynamic batch) and an ONNX file, beside weights.pt."""
    model = fashion_mobilenet()
    model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    model.eval()
    if not (out / "model.pt2").exists():
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)),
                          out / "model.pt2")
    if not (out / "model.onnx").exists():
        import warnings

        # the TorchScript exporter is the one whose eval-mode graph TVM's ONNX frontend reads; torch calls it legacy
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), out / "model.onnx", dynamo=False, external_data=False,
                          input_names=["image"], dynamic_axes={"image": {0: "n"}})
    import onnx

    graph = onnx.load(out / "model.onnx").graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    before_head = next(n for n in graph.node if gemm.input[0] in n.output).name
    # PyTorch forms keep the model's own dropout layer; the ONNX exporter drops it, so name the node instead
    return {"pt2": [out / "model.pt2"], "factory": [out / "weights.pt", "--factory", FACTORY],
            "onnx": [out / "model.onnx"], "onnx_site": before_head}


def shield(*args) -> dict:
    """Run `shield ... --json` from the repository root and return its JSON."""
    cmd = [sys.executable, "-m", "stochastic_shield", *map(str, args), "--json"]
    print("$ shield " + " ".join(map(str, args)), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if p.returncode != 0:
        sys.exit(f"shield failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("byom-out"))
    ap.add_argument("--quick", action="store_true", help="a smoke run (fewer images, one form, tiny attack)")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.set_num_threads(os.cpu_count() or 1)
    fp32 = train(out, 8000 if args.quick else 30000, 1)
    print(f"fp32 test accuracy (PyTorch, 10000 images): {fp32:.4f}")
    forms = save_forms(out)

    from stochastic_shield.data import load_fashion_mnist
    from stochastic_shield.user_data import write_image_folder

    test_dir, calib_dir = out / "test-images", out / "calib-images"
    if not test_dir.exists():
        write_image_folder(load_fashion_mnist("test"), test_dir.with_suffix(".tmp"))
        os.replace(test_dir.with_suffix(".tmp"), test_dir)
    if not calib_dir.exists():
        write_image_folder(load_fashion_mnist("train").subset(512), calib_dir.with_suffix(".tmp"))
        os.replace(calib_dir.with_suffix(".tmp"), calib_dir)
    common = ["--mean", MEAN, "--std", STD, "--data", test_dir, "--calib-data", calib_dir, "--batch", 50]
    rows = []
    for form in ("pt2",) if args.quick else ("pt2", "factory", "onnx"):
        site = forms["onnx_site"] if form == "onnx" else "model"
        int8 = out / f"art-{form}-int8"
        shielded = out / f"art-{form}-shield"
        if not (int8 / "manifest.json").exists():
            shield("compile", *forms[form], *common, "-o", int8)
        if not (shielded / "manifest.json").exists():
            shield("compile", *forms[form], *common, "--shield", f"filter=bits:3; dropout={site}:0.3; T=1,16",
                   "-o", shielded)
        a = shield("eval", int8, "--dataset", test_dir)["accuracy"]
        s = shield("eval", shielded, "--dataset", test_dir, "--T", 16, "--seed", 0)["accuracy"]
        rows.append((form, a, s))
    rob = shield("bench", "robustness", *forms["pt2"], "--mean", MEAN, "--std", STD, "--dataset", test_dir,
                 "--limit", 50 if args.quick else 200, "--attacks", "fgsm,pgd20" if args.quick else "fgsm,pgd20,adaptive",
                 "--eps", "0,0.05,0.1", "--T", "1,8", "-o", out / "robustness", "--resume")
    print(f"\n| form | fp32 (PyTorch) | int8 | int8 + shield (T=16) |\n|---|---|---|---|")
    for form, a, s in rows:
        print(f"| {form} | {fp32:.4f} | {a:.4f} | {s:.4f} |")
    print(f"\nrobustness report: {rob['files']['report']}  ({time.time() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
