"""Pruned models at each pruning level: parameters, FLOPs, and CPU inference latency at
batch 1 and batch 256, with the measured speedup over the FLOPs-implied speedup
(aim >= 0.8: the smaller model is really faster, not only smaller on paper).

    python benchmarks/bench_prune_speed.py [--levels 0 0.2 0.4 0.6] [--repeats 20]

Each level removes that fraction of the channels of every coupled group (L1 importance,
structure.py) from a freshly initialised model and shrinks it with torch-pruning, as
the sp/lth/ss pruners do at the end of training. Latency: median of interleaved timed
forward passes in eval mode under no_grad.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import hardware
from harness.size import count_parameters, flops_per_sample
from harness_movies.dcnn import DCNN
from harness_prune.structure import StructuredMasks
from harness_vision.wrn import WideResNet


def latency(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--round-to", type=int, default=1, help="keep multiples of this many channels")
    args = ap.parse_args()
    print(f"CPU inference of pruned models (round_to {args.round_to}); {hardware()}")
    cases = {
        "WRN-16-2 (CIFAR 32x32)": (lambda: WideResNet(16, 2, 100), (3, 32, 32)),
        "dcnn student (imdb-movies textual, 256 inputs)": (
            lambda: DCNN(256, [8, 16, 32], 3, 32, 0.1),
            (256,),
        ),
        "dcnn teacher (imdb-movies textual, 256 inputs)": (
            lambda: DCNN(256, [32, 64, 128], 3, 128, 0.2),
            (256,),
        ),
    }
    for name, (build, shape) in cases.items():
        torch.manual_seed(0)
        models = []
        for level in args.levels:
            model = build().eval()
            if level > 0:
                masks = StructuredMasks(model, torch.randn(2, *shape))
                masks.prune(model, level, args.round_to)
                model = masks.shrink(model).eval()
            models.append(model)
        print(f"\n{name}")
        print(
            f"  {'removed':>8} {'params':>10} {'FLOPs':>12} {'b1 ms':>9} {'b256 ms':>9} "
            f"{'FLOPs speedup':>14} {'b1 speedup':>11} {'b256 speedup':>13} {'ratio b1':>9} "
            f"{'ratio b256':>11}"
        )
        x1, x256 = torch.randn(1, *shape), torch.randn(256, *shape)
        # interleave the levels' timings so machine noise hits them alike
        lat = {i: {"b1": [], "b256": []} for i in range(len(models))}
        for _ in range(3):
            for i, m in enumerate(models):
                lat[i]["b1"].append(latency(m, x1, args.repeats))
                lat[i]["b256"].append(latency(m, x256, max(3, args.repeats // 4)))
        base = None
        for i, (level, m) in enumerate(zip(args.levels, models, strict=True)):
            flops = flops_per_sample(lambda m=m, x=x1: m(x))
            b1, b256 = min(lat[i]["b1"]), min(lat[i]["b256"])
            if base is None:
                base = (flops, b1, b256)
            fs, s1, s256 = base[0] / flops, base[1] / b1, base[2] / b256
            print(
                f"  {100 * level:7.0f}% {count_parameters(m):>10,} {flops:>12,} "
                f"{1000 * b1:9.3f} {1000 * b256:9.2f} {fs:14.2f} {s1:11.2f} {s256:13.2f} "
                f"{s1 / fs:9.2f} {s256 / fs:11.2f}"
            )


if __name__ == "__main__":
    main()
