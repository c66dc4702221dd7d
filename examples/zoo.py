"""CNNs that run on small boards, defined here and nowhere in the package: a user's own models.

MLPerf Tiny's image-classification ResNet-8, keyword-spotting DS-CNN and visual-wake-words
MobileNetV1 (width 0.25), a MobileNetV2 (width 0.35) and a MobileNetV3-small-like network
(hardswish, squeeze-and-excite); and, for speed benchmarks at 224x224, MobileNetV2-1.0 and ResNet-18 with
torchvision's layer structure (torchvision's PyPI wheels do not import beside the CPU torch). None normalises its input: compile them with --mean/--std, or
wrap them in ``Normalized``. Factories take the input channels and the number of classes, so
``shield compile --model examples.zoo:mobilenet_v2 --weights w.pt`` can build them.
"""
from __future__ import annotations

import torch
from torch import nn


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel counts rounded to a multiple of 8 (as in the MobileNet papers' code)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


class ResNet8(nn.Module):
    """MLPerf Tiny image classification (CIFAR-10, 32x32x3): three residual stacks of 16, 32, 64 channels."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(in_channels, 16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks.append(Residual(cin, cout, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Residual(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting (49x10 MFCC, 12 classes): a 10x4 conv, then 4 depthwise-separable blocks."""

    def __init__(self, in_channels: int = 1, num_classes: int = 12, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, (10, 4), 2, (5, 1), bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(conv_bn(width, width, 3, groups=width), conv_bn(width, width, 1))
                                      for _ in range(4)])
        self.drop = nn.Dropout(0.2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.pool(self.blocks(self.stem(x))), 1)))


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017); MLPerf Tiny visual wake words uses width 0.25 at 96x96x3, 2 classes."""

    PLAN = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 2, width: float = 0.25):
        super().__init__()
        c = make_divisible(32 * width)
        layers = [conv_bn(in_channels, c, 3, 2)]
        for cout, stride in self.PLAN:
            cout = make_divisible(cout * width)
            layers += [conv_bn(c, c, 3, stride, groups=c), conv_bn(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, act=nn.ReLU6, se=False):
        super().__init__()
        hidden = cin if expand == 1 else make_divisible(cin * expand)
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1, act=act)]
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(conv_bn(hidden, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(fc(relu(fc(mean(x))))) (Hu et al. 2018, as in MobileNetV3)."""

    def __init__(self, c):
        super().__init__()
        squeeze = make_divisible(c / 4)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        g = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(g))))


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018): inverted residuals with ReLU6; width 0.35 for small boards."""

    PLAN = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 0.35):
        super().__init__()
        c = make_divisible(32 * width)
        layers = [conv_bn(in_channels, c, 3, 2, act=nn.ReLU6)]
        for t, cout, n, s in self.PLAN:
            cout = make_divisible(cout * width)
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        last = make_divisible(1280 * max(1.0, width))
        layers.append(conv_bn(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.pool(self.features(x)), 1)))


class MobileNetV3Small(nn.Module):
    """A MobileNetV3-small-like network (Howard et al. 2019): hardswish, squeeze-excite, a hardswish head."""

    # (expansion, output channels, squeeze-excite, activation, stride)
    PLAN = ((1, 16, True, nn.ReLU, 2), (4.5, 24, False, nn.ReLU, 2), (3.67, 24, False, nn.ReLU, 1),
            (4, 40, True, nn.Hardswish, 2), (6, 40, True, nn.Hardswish, 1), (3, 48, True, nn.Hardswish, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        c = make_divisible(16 * width)
        layers = [conv_bn(in_channels, c, 3, 2, act=nn.Hardswish)]
        for expand, cout, se, act, stride in self.PLAN:
            cout = make_divisible(cout * width)
            layers.append(InvertedResidual(c, cout, stride, expand, act=act, se=se))
            c = cout
        layers.append(conv_bn(c, 6 * c, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(6 * c, 256), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(256, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (a 1x1 conv where the shape changes), as in torchvision."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) for 224x224 ImageNet inputs: torchvision's layers, 1.8 GMAC."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class Normalized(nn.Module):
    """MODEL after (x - mean) / std, for models that do not normalise their [0, 1] input themselves."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def resnet8(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return ResNet8(in_channels, num_classes)


def ds_cnn(in_channels: int = 1, num_classes: int = 12) -> nn.Module:
    return DSCNN(in_channels, num_classes)


def mobilenet_v1(in_channels: int = 3, num_classes: int = 2) -> nn.Module:
    return MobileNetV1(in_channels, num_classes, 0.25)


def mobilenet_v2(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return MobileNetV2(in_channels, num_classes, 0.35)


def mobilenet_v3_small(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    return MobileNetV3Small(in_channels, num_classes)


def mobilenet_v2_100(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    return MobileNetV2(in_channels, num_classes, 1.0)


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    return ResNet18(in_channels, num_classes)


# name -> (factory, the input shape (C, H, W) its benchmark uses)
ZOO = {
    "resnet8": (resnet8, (3, 32, 32)),
    "ds_cnn": (ds_cnn, (1, 49, 10)),
    "mobilenet_v1_025": (mobilenet_v1, (3, 96, 96)),
    "mobilenet_v2_035": (mobilenet_v2, (3, 96, 96)),
    "mobilenet_v3_small": (mobilenet_v3_small, (3, 96, 96)),
}

# The networks a Pi user deploys at 224x224 (speed benchmarks; too slow for the emulated board's tests)
LARGE = {
    "mobilenet_v2_100": (mobilenet_v2_100, (3, 224, 224)),
    "resnet18": (resnet18, (3, 224, 224)),
}
