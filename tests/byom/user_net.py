"""A user's own network, unknown to the package: what 'bring your own model' tests compile.

Hardswish, a squeeze-and-excite gate, a batch norm after an activation (so no conv absorbs it),
a concatenation, an average pool and its own dropout; it does not normalise its input.
"""
import torch
from torch import nn


class UserNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.Hardswish())
        self.branch = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.bn = nn.BatchNorm2d(16)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1),
                                  nn.Hardsigmoid())
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(16 * 7 * 7, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.bn(torch.cat([x, torch.relu(self.branch(x))], 1))
        x = self.pool(x * self.gate(x))
        return self.fc(self.drop(torch.flatten(x, 1)))


def user_net() -> nn.Module:
    return UserNet()
