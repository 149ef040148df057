"""How long an inference-energy window must be for a stable figure: the same model's
inference energy per 1,000 test samples, measured again and again with windows of
several lengths (energy.inference_min_seconds), interleaved so drift hits all alike.

    python benchmarks/bench_energy_window.py [--repeats 10] [--windows 0.05,0.1,0.25,0.5,1,2]

For each window: the median J/1k, the coefficient of variation (std / mean) and the
max/min ratio over the repeats, and the passes each window took. The CPU-time
estimate reads os.times(), whose clock ticks every 10 ms (USER_HZ 100), so a window's
CPU time is off by up to a tick at each end; the other meters have their own update
periods (NVML's energy counter 20-100 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from _common import dcnn, emit, hardware, movies
from harness.energy import select_meter
from harness.plugins import get_registry
from harness.runner import _inference_energy
from harness.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--windows", default="0.05,0.1,0.25,0.5,1,2")
    ap.add_argument("--features", default="numerical")
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    windows = [float(w) for w in args.windows.split(",")]
    device = torch.device("cpu")
    data = movies(args.features).to(device)
    task = get_task("rating")
    model = dcnn(data).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    meter = select_meter(get_registry(), device, args.meter)
    _inference_energy(model, data, task, meter, 1024, 0.2)  # warm-up
    got: dict[float, list[dict]] = {w: [] for w in windows}
    for _ in range(args.repeats):
        for w in windows:
            got[w].append(_inference_energy(model, data, task, meter, 1024, w))
    print(
        f"dcnn student ({n_params:,} params), imdb-movies {args.features}, {len(data.test)} test films, "
        f"meter {meter.name}; {hardware()}; load {os.getloadavg()[0]:.2f}"
    )
    ratios = {}
    for w in windows:
        js = [g["inference_j_per_1k"] for g in got[w] if g["inference_j_per_1k"] is not None]
        passes = [g["inference_passes"] for g in got[w]]
        cv = statistics.stdev(js) / statistics.fmean(js) if len(js) > 1 else float("nan")
        print(
            f"  window {w:>5g} s: J/1k median {statistics.median(js):.4g}, CV {cv:6.1%}, "
            f"max/min {max(js) / min(js):5.2f}, passes {min(passes)}-{max(passes)} (n={len(js)})"
        )
        ratios[f"cv/window={w:g}s"] = round(cv, 4)
    emit("energy_window", ratios)


if __name__ == "__main__":
    main()
