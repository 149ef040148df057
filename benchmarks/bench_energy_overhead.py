"""The energy meter's overhead: the same training with and without an energy window
around it (aim: < 1%), for every meter available on this machine.

    python benchmarks/bench_energy_overhead.py [--repeats 11] [--epochs 3]
"""

from __future__ import annotations

import argparse

import torch

from _common import dcnn, emit, hardware, interleaved, movies, summary, train_cfg
from harness.energy import Window, available_meters
from harness.plugins import get_registry
from harness.runner import train_model
from harness.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    data = movies("categorical").to(device)
    task, cfg = get_task("rating"), train_cfg()
    model = dcnn(data).to(device)
    gen = torch.Generator().manual_seed(0)

    def train() -> None:
        train_model(model, data, task, cfg, args.epochs, 128, gen)

    fns = {"no meter": train}
    for cls, why in available_meters(get_registry(), device):
        if why is not None:
            print(f"  ({cls.name}: unavailable: {why})")
            continue
        meter = cls(device)

        def metered(meter=meter) -> None:
            with Window(meter):
                train()

        fns[f"meter {cls.name}"] = metered
    train()  # warm-up
    import time

    print(
        "cost of one begin()+end() pair, each meter (the whole overhead when the meter has "
        "no sampling thread):"
    )
    for name, fn in list(fns.items())[1:]:
        meter = fn.__defaults__[0]
        t0 = time.perf_counter()
        for _ in range(200):
            meter.begin()
            meter.end()
        print(f"  {name:<28} {(time.perf_counter() - t0) / 200 * 1e6:8.1f} µs per window")
    print(f"{args.epochs} student epochs with and without an energy window, device {device}; {hardware()}")
    ratios = summary(interleaved(fns, args.repeats), "no meter")
    emit("energy_overhead", {f"{k.removeprefix('meter ')}/no-meter": v for k, v in ratios.items()})


if __name__ == "__main__":
    main()
