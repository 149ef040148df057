"""Stage 3, build student (and the teacher's untrained architecture): a registered model
built for the data, seeded by the cell's seed."""

from __future__ import annotations

from torch import nn

from ..api import DataBundle
from ..plugins import get_registry
from ..spec import ModelPart
from .options import seed_everything


def build_model(part: ModelPart, data: DataBundle, seed: int, device: str) -> nn.Module:
    cls = get_registry().get("model", part.model)
    seed_everything(seed)
    return cls(**part.kwargs()).build(data).to(device)
