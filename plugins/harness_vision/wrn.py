"""Wide residual networks for 32×32 inputs (Zagoruyko & Komodakis 2016), WRN-d-k.

Stem conv3×3 (3→16); three groups of n = (d−4)/6 pre-activation basic blocks of widths
16k, 32k, 64k with strides 1, 2, 2; head BN-ReLU-global average pool-FC. Block: BN-ReLU →
conv3×3(stride) → BN-ReLU → dropout → conv3×3, plus the shortcut (identity, or a 1×1
conv of the BN-ReLU'd input when the shape changes). Convs are initialised
N(0, √(2 / (k²·C_out))), BN weight 1 and bias 0, the FC bias 0 — as in the seed
paper's code. With 100 classes: WRN-40-2 has 2,255,156 parameters, WRN-16-2 703,284.

Features (for SAD): the output of every block after the next block's pre-activation
BN+ReLU, and for the last block the head's BN+ReLU — 6n features.

`WideResNet` is plain torch.nn code (the default memory format, as a paper's code has
it); `WRNFactory.build` returns it in the channels_last memory format, the layout the
CPU's oneDNN convolutions (and CUDA's tensor-core ones) run fastest in, and the vision
transform hands it channels_last batches. Same parameters and the same arithmetic up to
float rounding (tests/test_vision.py checks a few training steps against the default
layout); benchmarks/bench_cifar_epoch.py measures the speed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.api import DataBundle, ModelFactory, Param
from harness.errors import UsageError


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        y = self.conv2(self.dropout(self.relu2(self.bn2(self.conv1(o)))))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks = []
        c_in = widths[0]
        for g, stride in zip(range(3), (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(Block(c_in, widths[g + 1], stride if i == 0 else 1, dropout))
                c_in = widths[g + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / k))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(h), 1))

    def feature_layers(self) -> list[nn.Module]:
        """The pre-activation ReLU of every block after the first (each is the previous
        block's output after BN+ReLU), then the head's ReLU."""
        return [b.relu1 for b in list(self.blocks)[1:]] + [self.relu]


class WRNFactory(ModelFactory):
    name = "wrn"
    label = "WRN"
    description = "wide residual network WRN-depth-widen for 32×32 images (e.g. WRN-40-2, WRN-16-2)"
    tasks = frozenset({"classification"})
    exposes_features = True
    prunable = frozenset({"structured", "unstructured"})
    params = {
        "depth": Param(16, "depth d (d − 4 divisible by 6)"),
        "widen": Param(2, "widen factor k"),
        "dropout": Param(0.0, "dropout between a block's convolutions"),
    }
    presets = {
        "wrn-40-2": {"depth": 40, "widen": 2},
        "wrn-16-2": {"depth": 16, "widen": 2},
        "wrn-16-4": {"depth": 16, "widen": 4},
        "wrn-28-10": {"depth": 28, "widen": 10},
        "teacher": {"depth": 40, "widen": 2},
        "student": {"depth": 16, "widen": 2},
    }

    @classmethod
    def check(cls, params, where):
        if params["depth"] < 10 or (params["depth"] - 4) % 6:
            raise UsageError(f"{where}.depth: WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...)")
        if params["widen"] < 1:
            raise UsageError(f"{where}.widen: must be at least 1")
        if not 0 <= params["dropout"] < 1:
            raise UsageError(f"{where}.dropout: must be in [0, 1)")

    def build(self, data: DataBundle) -> nn.Module:
        p = self.hparams
        model = WideResNet(p["depth"], p["widen"], int(data.info["n_classes"]), p["dropout"])
        return model.to(memory_format=torch.channels_last)
