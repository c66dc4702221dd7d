"""The networks we deploy: a small CNN for 28x28 grayscale and CIFAR-style ResNets for 32x32 colour.

Every model takes images in [0, 1] and normalises them itself, so that attack budgets, input
filters and compiled artifacts all work in pixel space.
"""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, the first layer of every model."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class FashionCNN(nn.Module):
    """Two conv blocks and two dense layers for 1x28x28 inputs (about 4.2 M MACs)."""

    def __init__(self, num_classes=10, dropout=0.25, mean=(0.2860,), std=(0.3530,), in_channels=1):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.drop1 = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.drop2 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.normalize(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.drop1(self.flatten(x))
        x = self.drop2(self.relu3(self.fc1(x)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1x1 conv when the shape changes), then relu."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016): depth 6n+2, widths 16/32/64, optional dropout before the head."""

    def __init__(self, depth=20, num_classes=10, dropout=0.0, mean=(0.4914, 0.4822, 0.4465),
                 std=(0.2470, 0.2435, 0.2616), in_channels=3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        layers, cin = [], 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.drop(self.flatten(self.pool(x))))


# Named architectures: name -> (constructor, the data set shape it expects).
ARCHITECTURES = {
    "fashion_cnn": lambda info, dropout: FashionCNN(len(info.classes), dropout, info.mean, info.std, info.shape[0]),
    "resnet8": lambda info, dropout: ResNet(8, len(info.classes), dropout, info.mean, info.std, info.shape[0]),
    "resnet20": lambda info, dropout: ResNet(20, len(info.classes), dropout, info.mean, info.std, info.shape[0]),
}


def build_model(arch: str, info, dropout: float = 0.25) -> nn.Module:
    """Construct architecture ARCH for data set INFO (a DatasetInfo)."""
    from .errors import ShieldError

    if arch not in ARCHITECTURES:
        raise ShieldError(f"unknown architecture {arch!r}", f"choose one of: {', '.join(ARCHITECTURES)}")
    if not 0.0 <= dropout < 1.0:
        raise ShieldError(f"dropout must be in [0, 1), got {dropout}")
    return ARCHITECTURES[arch](info, dropout)
