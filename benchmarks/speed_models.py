"""The models of the peer speed benchmark (benchmarks/speed.py) and their inputs, as files every engine reads.

Every model takes [0, 1] images and gets, in its work folder:
  model.pt2      fp32, dynamic batch: what `shield compile model.pt2 --data calib.npz` compiles (ours)
  model_b1.pt2   fp32, batch 1: what the peers' converters quantize (benchmarks/edge_convert.py)
  calib.npz      the 32 calibration images every int8 engine calibrates on (x, y)
  eval.npy       the images every engine is scored on (top-1 agreement and SQNR against fp32)
  fp32.npy       PyTorch fp32 logits of eval.npy
The shipped model is compiled from its checkpoint (it normalises inside); the zoo networks carry seeded random
weights whose BatchNorm statistics are re-estimated on real images (with the init's statistics the logits are
about 1e-9 and every int8 engine outputs zeros). Images: Fashion-MNIST resized to the model's input, grey
replicated to its channels.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CALIB = 32          # calibration images, the same for every int8 engine
EVAL = 64           # images every engine is scored on
BN_IMAGES = 256     # images the random networks' BatchNorm statistics are estimated on
SEED = 0

# name -> (label, examples/zoo factory name or None for the shipped model, input shape (C, H, W), classes)
MODELS = {
    "fashion_cnn": ("shipped fashion_cnn 1x28x28", None, (1, 28, 28), 10),
    "resnet8": ("ResNet-8 3x32x32", "resnet8", (3, 32, 32), 10),
    "ds_cnn": ("DS-CNN 1x49x10", "ds_cnn", (1, 49, 10), 12),
    "mobilenet_v1_025": ("MobileNetV1-0.25 3x96x96", "mobilenet_v1", (3, 96, 96), 2),
    "mobilenet_v2_035": ("MobileNetV2-0.35 3x96x96", "mobilenet_v2", (3, 96, 96), 10),
    "mobilenet_v3_small": ("MobileNetV3-small 3x96x96", "mobilenet_v3_small", (3, 96, 96), 10),
    "mobilenet_v2_100": ("MobileNetV2-1.0 3x224x224", "mobilenet_v2_100", (3, 224, 224), 1000),
    "resnet18": ("ResNet-18 3x224x224", "resnet18", (3, 224, 224), 1000),
}


def images(split: str, start: int, n: int, shape) -> np.ndarray:
    """N Fashion-MNIST images of SPLIT from START as float32 (N, C, H, W) in [0, 1] at SHAPE (C, H, W)."""
    from stochastic_shield.data import load_fashion_mnist

    x = torch.from_numpy(np.ascontiguousarray(load_fashion_mnist(split).as_float(start, start + n)))
    c, h, w = shape
    if (h, w) != tuple(x.shape[2:]):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return np.ascontiguousarray(x.repeat(1, c, 1, 1).clamp(0, 1).numpy(), dtype=np.float32)


def build(name: str) -> torch.nn.Module:
    """The fp32 model NAME in eval mode: the shipped checkpoint, or a zoo network with seeded random weights and
    BatchNorm statistics of real images."""
    label, factory, shape, classes = MODELS[name]
    if factory is None:
        from stochastic_shield.checkpoint import load_checkpoint

        return load_checkpoint(None)[0].eval()
    import examples.zoo as zoo

    torch.manual_seed(SEED)
    model = getattr(zoo, factory)(shape[0], classes)
    for m in model.modules():  # re-estimate, not average with the init's statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    x = torch.from_numpy(images("train", 10000, BN_IMAGES, shape))
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
    return model.eval()


def macs(model: torch.nn.Module, shape) -> int:
    """Multiply-accumulates of one image through the Conv2d and Linear layers of MODEL."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return int(total)


def prepare(name: str, folder: Path) -> dict:
    """Write NAME's files (module docstring) into FOLDER once; returns its description (also info.json)."""
    folder = Path(folder)
    info_path = folder / "info.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    from stochastic_shield._atomic import write_json

    folder.mkdir(parents=True, exist_ok=True)
    label, factory, shape, classes = MODELS[name]
    model = build(name)
    calib = images("train", 0, CALIB, shape)
    ev = images("test", 0, EVAL, shape)
    np.savez(folder / "calib.npz", x=calib, y=np.zeros(CALIB, np.int64))
    np.save(folder / "eval.npy", ev)
    with torch.no_grad():
        np.save(folder / "fp32.npy", model(torch.from_numpy(ev)).numpy())
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.export.save(torch.export.export(model, (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},)),
                      folder / "model.pt2")
    torch.export.save(torch.export.export(model, (torch.zeros(1, *shape),)), folder / "model_b1.pt2")
    info = {"name": name, "label": label, "input_shape": list(shape), "classes": classes,
            "macs": macs(model, shape), "params": sum(p.numel() for p in model.parameters()),
            "weights": "shipped checkpoint" if factory is None else f"examples.zoo:{factory}, torch seed {SEED}, "
                       f"BatchNorm statistics of {BN_IMAGES} images",
            "calib_images": CALIB, "eval_images": EVAL}
    write_json(info_path, info)
    return info
