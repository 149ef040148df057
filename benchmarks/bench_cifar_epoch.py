"""WRN-16-2 student epochs on CIFAR-format data: images per second without
distillation, with KD and with SAD (teacher WRN-40-2), the share of epoch time spent on
data (batching, augmentation, normalisation: aim < 5%), and peak memory.

    python benchmarks/bench_cifar_epoch.py [--images 512] [--device cpu|cuda] [--repeats 2]

The images are random uint8 tensors in CIFAR's layout (speed does not depend on their
content); the same script runs on a GPU, where it reads CUDA's peak allocation.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from _common import hardware
from harness.api import DataBundle, TensorSplit
from harness.grid import TRAIN
from harness.runner import train_model
from harness.tasks import get_task
from harness_distill.kd import KnowledgeDistillation, NoDistillation
from harness_distill.sad import SAD
from harness_vision.cifar import transform
from harness_vision.wrn import WideResNet


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = args.device
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (args.images,), generator=g)
    split = TensorSplit({"x": x, "y": y})
    data = DataBundle("classification", split, split, split, info={"n_classes": 100}, transform=transform).to(
        dev
    )
    task = get_task("classification")
    cfg = {k: p.default for k, p in TRAIN.items()} | {"optimizer": "sgd", "lr": 0.05}
    torch.manual_seed(0)
    teacher = WideResNet(40, 2, 100).to(dev).eval()

    def epoch(distiller, label: str) -> tuple[float, float]:
        torch.manual_seed(0)
        student = WideResNet(16, 2, 100).to(dev)
        extra = list(distiller.setup(teacher, student, data, data.prepare(data.train.head(64))))
        gen = torch.Generator().manual_seed(0)
        train_model(student, data, task, cfg, 1, args.batch_size, gen, distiller, teacher, extra)
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            sync(dev)
            t0 = time.perf_counter()
            train_model(student, data, task, cfg, 1, args.batch_size, gen, distiller, teacher, extra)
            sync(dev)
            times.append(time.perf_counter() - t0)
        return min(times), peak_mib(dev)

    def data_only() -> float:
        aug = torch.Generator(device=dev).manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        best = float("inf")
        for _ in range(args.repeats + 1):
            sync(dev)
            t0 = time.perf_counter()
            for _batch in data.batches("train", args.batch_size, True, gen, aug):
                pass
            sync(dev)
            best = min(best, time.perf_counter() - t0)
        return best

    print(
        f"WRN-16-2 student, {args.images} CIFAR-format images, batch {args.batch_size}, "
        f"device {dev}; {hardware()}"
    )
    d = data_only()
    base = None
    for label, dist in (
        ("plain (none)", NoDistillation()),
        ("KD", KnowledgeDistillation(T=4.0, alpha=0.9)),
        ("SAD (teacher WRN-40-2)", SAD(alpha=0.9, T=4.0, beta=200.0, d=128)),
    ):
        t, peak = epoch(dist, label)
        base = base or t
        print(
            f"  {label:<24} {args.images / t:8.1f} images/s   epoch {t:7.2f} s   "
            f"cost over plain {t / base:5.2f}x   data share {100 * d / t:5.2f}%   "
            f"peak memory {peak:8.1f} MiB"
        )
    print(f"  data alone (batching + augmentation + normalisation): {d * 1000:.1f} ms per epoch")


if __name__ == "__main__":
    main()
