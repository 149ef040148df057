"""DCNN: the CNN rating predictor of Bharadhwaj et al.'s (2024) movie experiment (after Abarja 2020).

The paper gives no architecture; this is the reading documented in
docs/models.md: the encoded attribute vector is a
1-channel sequence; `len(channels)` stages of Conv1d(kernel) -> BatchNorm -> ReLU ->
MaxPool(2) widen it; the flattened result goes through one hidden fully connected
layer (ReLU, dropout) to one output, the standardised rating, trained with MSE.
Teacher and student differ in channel widths and hidden size (presets).

Features for feature distillers: the output of every conv stage ([B, C, L]) and of the
hidden layer ([B, H]).
"""

from __future__ import annotations

import torch
from torch import nn

from harness.api import DataBundle, ModelFactory, Param
from harness.errors import UsageError


class DCNN(nn.Module):
    def __init__(
        self, n_features: int, channels: list[int], kernel: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        stages = []
        c_in, length = 1, n_features
        for c in channels:
            stages.append(
                nn.Sequential(
                    nn.Conv1d(c_in, c, kernel, padding=kernel // 2),
                    nn.BatchNorm1d(c),
                    nn.ReLU(inplace=True),
                    nn.MaxPool1d(2, ceil_mode=True) if length > 1 else nn.Identity(),
                )
            )
            length = (length + 1) // 2 if length > 1 else 1
            c_in = c
        self.stages = nn.ModuleList(stages)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c_in * length, hidden), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.unsqueeze(1)
        for stage in self.stages:
            h = stage(h)
        return self.out(self.dropout(self.hidden(h))).squeeze(-1)

    def feature_layers(self) -> list[nn.Module]:
        return [*self.stages, self.hidden]


class DCNNFactory(ModelFactory):
    name = "dcnn"
    label = "DCNN"
    description = "1-D CNN over the encoded movie attributes predicting the rating (Bharadhwaj et al. 2024)"
    tasks = frozenset({"rating"})
    exposes_features = True
    prunable = frozenset({"structured", "unstructured"})
    params = {
        "channels": Param([16, 32, 64], "output channels of each conv stage", type=list),
        "kernel": Param(3, "convolution kernel size (odd)"),
        "hidden": Param(64, "units of the hidden fully connected layer"),
        "dropout": Param(0.1, "dropout before the output layer"),
    }
    presets = {
        "teacher": {"channels": [32, 64, 128], "hidden": 128, "dropout": 0.2},
        "student": {"channels": [8, 16, 32], "hidden": 32, "dropout": 0.1},
    }

    @classmethod
    def check(cls, params, where):
        ch = params["channels"]
        if not ch or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in ch):
            raise UsageError(f"{where}.channels: expected a non-empty list of positive ints")
        if params["kernel"] < 1 or params["kernel"] % 2 == 0:
            raise UsageError(f"{where}.kernel: expected an odd positive int")
        if params["hidden"] < 1:
            raise UsageError(f"{where}.hidden: must be at least 1")
        if not 0 <= params["dropout"] < 1:
            raise UsageError(f"{where}.dropout: must be in [0, 1)")

    def build(self, data: DataBundle) -> nn.Module:
        p = self.hparams
        return DCNN(data.info["n_features"], list(p["channels"]), p["kernel"], p["hidden"], p["dropout"])
