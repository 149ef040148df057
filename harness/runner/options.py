"""Run options shared by every stage: the device, the teacher cache's folder, progress
bars; the device choice; seeding; the name of the worker that runs a cell."""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError


@dataclass
class RunOptions:
    device: str = "cpu"
    teacher_dir: str = "teachers"
    progress: bool = False


def resolve_device(choice: str, here: bool = True) -> str:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present, else CPU). here=False: the
    cells run on other machines (a Dask cluster), so cuda is not checked on this one."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return "cpu"
    if choice.startswith("cuda"):
        if here and not torch.cuda.is_available():
            raise UsageError(
                f"--device {choice}: CUDA is not available on this machine (use --device cpu or auto)"
            )
        return choice
    raise UsageError(f"--device {choice!r}: expected cpu, cuda or auto")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_name() -> str:
    """Who runs a cell: "host:pid" of this process (a record's "worker")."""
    return f"{socket.gethostname()}:{os.getpid()}"
