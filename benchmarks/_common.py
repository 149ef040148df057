"""Shared set-up of the benchmarks (run by hand; not tests)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import torch

from harness.grid import TRAIN
from harness_movies.data import ImdbMovies
from harness_movies.dcnn import DCNNFactory


def movies(features: str = "categorical"):
    return ImdbMovies(**ImdbMovies.resolve_params({"features": features}, "bench")).load("rating")


def dcnn(data, preset: str = "student"):
    params = DCNNFactory.resolve_params(dict(DCNNFactory.presets[preset]), "bench")
    torch.manual_seed(0)
    return DCNNFactory(**params).build(data)


def train_cfg(**kw):
    cfg = {k: p.default for k, p in TRAIN.items()}
    cfg.update(kw)
    return cfg


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Time each function `repeats` times, interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Print each variant's median time and its ratio to `base`'s; return the ratios
    of the other variants (for `emit`)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(
            f"  {k:<28} median {v * 1000:8.1f} ms  (min {min(times[k]) * 1000:.1f}, "
            f"n={len(times[k])})  ratio to {base}: {v / med[base]:.3f}"
        )
    return {k: v / med[base] for k, v in med.items() if k != base}


def hardware() -> str:
    from harness.envinfo import cpu_model

    return f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def emit(bench: str, ratios: dict[str, float], **more: dict[str, float]) -> None:
    """Every benchmark's last line: one JSON object, {"bench": NAME, "hardware": ...,
    "ratios": {NAME: VALUE, ...}}, so figures can be tracked over time
    (benchmarks/README.md keeps the latest); `more` adds other maps of ratios beside."""
    line = {"bench": bench, "hardware": hardware(), "ratios": ratios, **more}
    rounded = {
        k: {n: round(float(v), 4) for n, v in m.items()} for k, m in line.items() if isinstance(m, dict)
    }
    print(json.dumps({**line, **rounded}))
