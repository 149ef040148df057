"""Pruned models at each pruning level: parameters, FLOPs, and CPU inference latency at
batch 1 and batch 256, with the measured speedup over the FLOPs-implied speedup
(aim >= 0.8: the smaller model is really faster, not only smaller on paper). Ends with
one JSON line of those ratios.

    python benchmarks/bench_prune_speed.py [--levels 0 0.2 0.4 0.6] [--repeats 20]
        [--round-to 1 8] [--models wrn16-2 dcnn-student dcnn-teacher]

Each level removes that fraction of the channels of every coupled group (L1 importance,
structure.py) from a freshly initialised model and shrinks it with torch-pruning, as
the sp/lth/ss pruners do at the end of training, with each `round_to` (1: the channel
counts the fraction gives; 8: the pruners' default, the nearest multiple of 8 in every
group of at least 32 channels). Latency: the best over `rounds` interleaved rounds of the
median of timed forward passes in eval mode under no_grad. The WRN runs in the
channels_last memory format, dense and pruned alike, as the harness builds and trains
it (`--layout contiguous` for the default format), and with freed memory kept for reuse
as in a harness process (harness/memory.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import emit, hardware
from harness.memory import retain_freed_memory
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


CASES = {
    "wrn16-2": ("WRN-16-2 (CIFAR 32x32)", lambda: WideResNet(16, 2, 100), (3, 32, 32)),
    "dcnn-student": (
        "dcnn student (imdb-movies textual, 256 inputs)",
        lambda: DCNN(256, [8, 16, 32], 3, 32, 0.1),
        (256,),
    ),
    "dcnn-teacher": (
        "dcnn teacher (imdb-movies textual, 256 inputs)",
        lambda: DCNN(256, [32, 64, 128], 3, 128, 0.2),
        (256,),
    ),
}


def pruned_models(
    build, shape, levels, round_tos, channels_last: bool = False
) -> dict[tuple[float, int], tuple[torch.nn.Module, float]]:
    """(level, round_to) -> (the shrunk model, the fraction of channels it lost); the
    dense model under (0.0, 1). channels_last: every model (the shrunk ones after
    shrinking) in that memory format, as the harness builds and trains WRNs."""
    out = {}
    for level in levels:
        for r in round_tos if level > 0 else [1]:
            torch.manual_seed(0)
            model = build().eval()
            removed = 0.0
            if level > 0:
                masks = StructuredMasks(model, torch.randn(2, *shape))
                masks.prune(model, level, r)
                model, removed = masks.shrink(model).eval(), masks.removed_fraction
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            out[(level, r)] = (model, removed)
    return out


def measure(
    key: str, levels, round_tos, repeats: int, rounds: int, ratios: dict[str, float], layout: str
) -> None:
    name, build, shape = CASES[key]
    cl = layout == "channels_last" and len(shape) == 3  # (2-D images; the dcnn's 1-D convs stay)
    models = pruned_models(build, shape, levels, round_tos, cl)
    print(f"\n{name}")
    print(
        f"  {'level':>6} {'round_to':>8} {'removed':>8} {'params':>10} {'FLOPs':>12} {'b1 ms':>9} "
        f"{'b256 ms':>9} {'FLOPs speedup':>14} {'b1 speedup':>11} {'b256 speedup':>13} "
        f"{'ratio b1':>9} {'ratio b256':>11}"
    )
    x1, x256 = torch.randn(1, *shape), torch.randn(256, *shape)
    if cl:
        x1, x256 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x256))
    print(f"  (memory format: {'channels_last' if cl else 'contiguous'})")
    # interleave the models' timings so machine noise hits them alike
    lat = {k: {"b1": [], "b256": []} for k in models}
    for _ in range(rounds):
        for k, (m, _) in models.items():
            lat[k]["b1"].append(latency(m, x1, repeats))
            lat[k]["b256"].append(latency(m, x256, max(3, repeats // 4)))
    base = None
    for (level, r), (m, removed) in models.items():
        flops = flops_per_sample(lambda m=m, x=x1: m(x))
        b1, b256 = min(lat[(level, r)]["b1"]), min(lat[(level, r)]["b256"])
        if base is None:
            base = (flops, b1, b256)
        fs, s1, s256 = base[0] / flops, base[1] / b1, base[2] / b256
        print(
            f"  {100 * level:5.0f}% {r:>8} {100 * removed:7.1f}% {count_parameters(m):>10,} "
            f"{flops:>12,} {1000 * b1:9.3f} {1000 * b256:9.2f} {fs:14.2f} {s1:11.2f} "
            f"{s256:13.2f} {s1 / fs:9.2f} {s256 / fs:11.2f}"
        )
        if level > 0:
            ratios[f"{key}/{100 * level:.0f}%/round_to={r}/b1"] = s1 / fs
            ratios[f"{key}/{100 * level:.0f}%/round_to={r}/b256"] = s256 / fs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--round-to",
        type=int,
        nargs="+",
        default=[1, 8],
        help="keep multiples of this many channels (8: the pruners' default; 1: none)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument(
        "--layout",
        choices=("channels_last", "contiguous"),
        default="channels_last",
        help="memory format of the image models (channels_last: as the harness builds WRNs)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # as in the harness, whose inference measurements run in a process that has trained
    # (harness/memory.py: freed activations are reused rather than faulted in again)
    retain_freed_memory()
    levels = sorted(set([0.0, *args.levels]))
    print(f"CPU inference of pruned models (round_to {args.round_to}); {hardware()}")
    ratios: dict[str, float] = {}
    for key in args.models:
        measure(key, levels, args.round_to, args.repeats, args.rounds, ratios, args.layout)
    emit("prune_speed", ratios)


if __name__ == "__main__":
    main()
