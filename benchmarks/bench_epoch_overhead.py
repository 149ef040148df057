"""A student epoch under the harness against a bare PyTorch loop of the same model,
batch size and data (aim: ratio <= 1.05: the harness adds nothing measurable).

    python benchmarks/bench_epoch_overhead.py [--repeats 15] [--features categorical]

Both loops shuffle with the same generator, take batches by indexing the same tensors,
and run Adam on MSE; the harness's loop adds its task/distiller indirection, the
per-epoch NaN check, and the learning-rate schedule.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from _common import dcnn, emit, hardware, interleaved, movies, summary, train_cfg
from harness.default_plugins import NoDistillation
from harness.runner import train_model
from harness.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--features", default="categorical")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    data = movies(args.features).to(args.device)
    task = get_task("rating")
    cfg = train_cfg()
    bs = args.batch_size

    m_bare = dcnn(data).to(args.device)
    opt = torch.optim.Adam(m_bare.parameters(), lr=cfg["lr"])
    g_bare = torch.Generator().manual_seed(0)
    x, y = data.train["x"], data.train["y"]

    def bare() -> None:
        m_bare.train()
        order = torch.randperm(len(x), generator=g_bare).to(x.device)
        for s in range(0, len(x), bs):
            idx = order[s : s + bs]
            loss = F.mse_loss(m_bare(x.index_select(0, idx)), y.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    m_h = dcnn(data).to(args.device)
    g_h = torch.Generator().manual_seed(0)
    dist = NoDistillation()

    def harness_epoch() -> None:
        train_model(m_h, data, task, cfg, 1, bs, g_h, distiller=dist)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    bare(), harness_epoch()  # warm-up
    print(
        f"student epoch, imdb-movies {args.features}, {len(x)} films, batch {bs}, "
        f"device {args.device}; {hardware()}"
    )
    ratios = summary(
        interleaved({"bare PyTorch loop": bare, "harness train_model": harness_epoch}, args.repeats),
        "bare PyTorch loop",
    )
    emit("epoch_overhead", {"harness/bare": ratios["harness train_model"]})


if __name__ == "__main__":
    main()
