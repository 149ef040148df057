"""Size of the deployed model: parameters, non-zero parameters, saved bytes, FLOPs.

Parameters are those of the module a user would deploy (a distiller's attention heads
are not part of it). Bytes are those of `torch.save(state_dict)`; for a model with zeros
(unstructured pruning) `sparse_bytes` is the size of a CSR-like encoding (int32 column
indices, int32 row pointers for each 2-D-or-more weight, values in the weight's dtype),
kept beside the dense figure and never replacing it.
FLOPs per sample come from `torch.utils.flop_counter.FlopCounterMode` on one sample
(it counts matmul/conv FLOPs, 2 per multiply-add; elementwise ops are not counted).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def saved_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def sparse_bytes(model: nn.Module) -> int:
    total = 0
    for t in model.state_dict().values():
        if not torch.is_floating_point(t):
            total += t.numel() * t.element_size()
            continue
        nnz = int(torch.count_nonzero(t))
        if t.dim() >= 2:
            rows = t.shape[0]
            total += nnz * (t.element_size() + 4) + (rows + 1) * 4
        else:
            total += min(t.numel() * t.element_size(), nnz * (t.element_size() + 4))
    return total


def flops_per_sample(forward: Callable[[], Any], n: int = 1) -> int:
    """FLOPs of `forward()` (which runs the model on n samples) divided by n."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return int(counter.get_total_flops() // max(n, 1))


def measure_size(model: nn.Module, forward_one: Callable[[], Any]) -> dict[str, Any]:
    was = model.training
    model.eval()
    try:
        flops = flops_per_sample(forward_one)
    finally:
        model.train(was)
    params = count_parameters(model)
    nonzero = count_nonzero(model)
    return {
        "params": params,
        "nonzero_params": nonzero,
        "bytes": saved_bytes(model),
        "sparse_bytes": sparse_bytes(model) if nonzero < params else None,
        "flops": flops,
    }
