"""WRN-16-2 student epochs on CIFAR-format data, the harness against a bare eager loop:
images per second without distillation, with KD and with SAD (teacher WRN-40-2), the
harness/reference ratio of each (aim >= 1.2), and the share of epoch time spent on data
(batching, augmentation, normalisation: aim < 5%), and peak memory.

    python benchmarks/bench_cifar_epoch.py [--images 512] [--device cpu|cuda] [--repeats 5]
        [--autocast bf16|fp16|none]

The reference is the same training written as a paper's code writes it (the official
SAD code's loop): plain torch.nn models in the default memory format, the student's
forward and backward, the teacher's forward under torch.no_grad(), torch.optim.SGD with
its defaults, SAD's attention loss one teacher layer at a time. It gets
the harness's batched uint8 augmentation on the device (cheaper than a DataLoader of
per-image transforms), so the ratio measures the training step alone. It runs in a
process of its own, as a paper's script does: the harness keeps freed memory in its
process while it trains (harness/memory.py), and in a shared process the reference would
inherit that. Each method's harness and reference epochs are timed interleaved in the
same run, round after round, one process waiting while the other runs; a ratio is the
median over rounds of the round's reference ÷ harness epoch time, printed with the
rounds' range in brackets (the machine's noise, seen directly).

The images are random uint8 tensors in CIFAR's layout (speed does not depend on their
content); the same script runs on a GPU. Each method's harness is also timed with the
grid option train.compile (torch.compile of the distiller's loss; docs/models.md): its
compile time (its first epoch over its median epoch) is printed on its own line and
left out of its images/s. Each is also timed with the grid option train.autocast
(`--autocast bf16`, the default; `none` to skip): the step's forward passes and loss in
bf16 (or fp16). That changes numerics, so it is an opt-in grid option and its ratio is
printed apart ("plain/autocast-bf16"); the aim of 1.2 is for the float32 step. The last
line is JSON: {"bench": "cifar_epoch", "hardware": ..., "ratios": {"plain": x,
"plain/compiled": x', "plain/autocast-bf16": x'', "kd": y, ..., "sad": z, ...}}.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from _common import emit, hardware, interleaved
from harness.api import DataBundle, TensorSplit, probe
from harness.default_plugins import NoDistillation
from harness.grid import TRAIN
from harness.runner import train_model
from harness.tasks import get_task
from harness_distill.kd import KnowledgeDistillation, kd_term
from harness_distill.sad import SAD, Attention
from harness_distill.sad import sad_attention_loss_per_layer as reference_attention_loss
from harness_vision.cifar import augment_batch, normalise_batch, transform
from harness_vision.wrn import WideResNet, WRNFactory

CFG = {k: p.default for k, p in TRAIN.items()} | {"optimizer": "sgd", "lr": 0.05}
METHODS = {
    "plain": NoDistillation,
    "kd": lambda: KnowledgeDistillation(T=4.0, alpha=0.9),
    "sad": lambda: SAD(alpha=0.9, T=4.0, beta=200.0, d=128),
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mib(device: str) -> float:
    """CUDA's peak allocation, or the harness process's peak RSS (cumulative over methods)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def hooked(model):
    """A list that fills with the model's feature maps on each forward pass."""
    feats = []
    for layer in model.feature_layers():
        layer.register_forward_hook(lambda _m, _i, out: feats.append(out))
    return feats


def reference(method, x, y, teacher, batch_size, device):
    """One epoch's closure of the bare eager loop (the paper's code)."""
    torch.manual_seed(0)
    student = WideResNet(16, 2, 100).to(device)
    params, att = list(student.parameters()), None
    s_feats, t_feats = (hooked(student), hooked(teacher)) if method == "sad" else ([], [])
    if method == "sad":
        ex = normalise_batch(x[:2])
        att = Attention(
            [f[0] for f in probe(teacher, {"x": ex}).features],
            [f[0] for f in probe(student, {"x": ex}).features],
            128,
        ).to(device)
        params += list(att.parameters())
    opt = torch.optim.SGD(params, lr=CFG["lr"], momentum=CFG["momentum"], weight_decay=CFG["weight_decay"])
    gen, aug = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(0)

    def epoch():
        student.train()
        order = torch.randperm(len(x), generator=gen).to(device)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = normalise_batch(augment_batch(x[idx], aug)), y[idx]
            s_feats.clear(), t_feats.clear()
            out = student(xb)
            loss = F.cross_entropy(out, yb)
            if method != "plain":
                with torch.no_grad():
                    t_out = teacher(xb)
                kd = kd_term(out, t_out, "classification", 4.0)
                loss = (0.1 * loss + 0.9 * kd) if method == "kd" else loss + 0.9 * kd
            if method == "sad":
                loss = loss + 200.0 * reference_attention_loss(att(t_feats, s_feats), t_feats, s_feats)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return epoch


def harness(method, data, teacher, batch_size, device, compiled=False, autocast="none"):
    """One epoch's closure of the harness's training (train_model); with `compiled`,
    the grid option train.compile (torch.compile of the distiller's loss); with
    `autocast`, the grid option train.autocast (the step in bf16 or fp16)."""
    task = get_task("classification")
    torch.manual_seed(0)
    student = WRNFactory(**WRNFactory.resolve_params({"depth": 16, "widen": 2}, "bench")).build(data)
    student = student.to(device)
    distiller = METHODS[method]()
    extra = list(distiller.setup(teacher, student, data, data.prepare(data.train.head(64))))
    gen = torch.Generator().manual_seed(0)
    cfg = CFG | {"compile": compiled, "autocast": autocast}
    return lambda: train_model(student, data, task, cfg, 1, batch_size, gen, distiller, teacher, extra)


def paired_ratio(reference: list[float], harness: list[float]) -> tuple[float, tuple[float, float]]:
    """The median over rounds of reference ÷ harness epoch time, each round's two epochs
    run one after the other (so a slow spell of the shared machine hits both), and the
    range of the rounds' ratios."""
    per_round = [r / h for r, h in zip(reference, harness, strict=True)]
    return round(statistics.median(per_round), 3), (min(per_round), max(per_round))


def timed(fn, device):
    return lambda: (fn(), sync(device))


def report(method, n, times, first_epoch, first, ratios, spread, device) -> float:
    """Print a method's lines (into `ratios` and `spread`); the plain harness epoch."""
    med = {k: statistics.median(v) for k, v in times.items()}
    first = first or med["harness"]
    for key in med:
        if key != "reference":
            name = method + key.removeprefix("harness")
            ratios[name], spread[name] = paired_ratio(times["reference"], times[key])
    print(
        f"  {method:<6} harness {n / med['harness']:7.1f} images/s   "
        f"reference {n / med['reference']:7.1f} images/s   ratio {ratios[method]:5.2f} "
        f"[{spread[method][0]:.2f}-{spread[method][1]:.2f}]   "
        f"(harness cost over plain {med['harness'] / first:4.2f}x; peak {peak_mib(device):.0f} MiB)"
    )
    c = f"{method}/compiled"
    print(
        f"  {method + '/c':<6} harness {n / med['harness/compiled']:7.1f} images/s   "
        f"(train.compile)             ratio {ratios[c]:5.2f} [{spread[c][0]:.2f}-{spread[c][1]:.2f}]   "
        f"compile time {first_epoch['harness/compiled'] - med['harness/compiled']:.1f} s "
        "(first epoch over a compiled epoch; not in images/s)"
    )
    for key in (k for k in med if k.startswith("harness/autocast-")):
        name, precision = method + key.removeprefix("harness"), key.removeprefix("harness/autocast-")
        print(
            f"  {method + '/' + precision:<6} harness {n / med[key]:7.1f} images/s   "
            f"(train.autocast {precision})      ratio {ratios[name]:5.2f} "
            f"[{spread[name][0]:.2f}-{spread[name][1]:.2f}]   (changes numerics: an opt-in grid option)"
        )
    return first


def data_share(data, batch_size, device, repeats):
    aug = torch.Generator(device=device).manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        for _batch in data.batches("train", batch_size, True, gen, aug):
            pass
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def images(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """n random uint8 CIFAR-format images and labels, the same in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    return x, torch.randint(0, 100, (n,), generator=g).to(device)


def reference_teacher(device: str) -> WideResNet:
    torch.manual_seed(0)
    return WideResNet(40, 2, 100).to(device).eval()


def reference_process(conn, method, n, batch_size, device) -> None:
    """The reference's own process (spawned: the C library's allocator as a paper's
    script has it, untouched by the harness's; harness/memory.py): one epoch per
    request, answered when it is done (the parent times it, as it times its own)."""
    x, y = images(n, device)
    epoch = reference(method, x, y, reference_teacher(device), batch_size, device)
    while conn.recv():
        epoch()
        sync(device)
        conn.send(None)


@contextlib.contextmanager
def in_own_process(method, n, batch_size, device):
    """A closure that runs one reference epoch in its own process and waits for it."""
    ctx = multiprocessing.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=reference_process, args=(child_conn, method, n, batch_size, device))
    proc.start()

    def epoch():
        conn.send(True)
        conn.recv()

    try:
        yield epoch
    finally:
        conn.send(False)
        proc.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--autocast",
        default="bf16",
        choices=("none", "bf16", "fp16"),
        help="also time the harness with train.autocast at this precision (none: not)",
    )
    args = ap.parse_args()
    dev, n = args.device, args.images
    x, y = images(n, dev)
    split = TensorSplit({"x": x, "y": y})
    data = DataBundle("classification", split, split, split, info={"n_classes": 100}, transform=transform)
    t_ref = reference_teacher(dev)
    t_harness = WRNFactory(**WRNFactory.resolve_params({"depth": 40, "widen": 2}, "bench")).build(data)
    t_harness.load_state_dict(t_ref.state_dict())
    t_harness = t_harness.to(dev).eval()
    print(f"WRN-16-2 student, {n} CIFAR-format images, batch {args.batch_size}, device {dev}; {hardware()}")
    ratios, spread, first = {}, {}, None
    for method in METHODS:
        if dev.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with in_own_process(method, n, args.batch_size, dev) as reference_epoch:
            fns = {  # (the reference first: its process starts up in its warm-up epoch)
                "reference": reference_epoch,
                "harness": harness(method, data, t_harness, args.batch_size, dev),
                "harness/compiled": harness(method, data, t_harness, args.batch_size, dev, compiled=True),
            }
            if args.autocast != "none":
                fns[f"harness/autocast-{args.autocast}"] = harness(
                    method, data, t_harness, args.batch_size, dev, autocast=args.autocast
                )
            first_epoch = {}
            for name, fn in fns.items():  # warm-up epoch (the compiled one compiles in it)
                t0 = time.perf_counter()
                fn()
                sync(dev)
                first_epoch[name] = time.perf_counter() - t0
            times = interleaved({k: timed(f, dev) for k, f in fns.items()}, args.repeats)
        first = report(method, n, times, first_epoch, first, ratios, spread, dev)
    d = data_share(data, args.batch_size, dev, args.repeats)
    print(
        f"  data alone (batching + augmentation + normalisation): {d * 1000:.1f} ms per epoch, "
        f"{100 * d / first:.2f}% of a plain harness epoch"
    )
    emit("cifar_epoch", ratios)


if __name__ == "__main__":
    main()
