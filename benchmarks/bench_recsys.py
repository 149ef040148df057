"""Recommender training speed (run by hand; not a test).

1. Epoch time of a student under the harness against the same RecBole model, batch
   size and training interactions under RecBole's own Trainer (`Trainer._train_epoch`,
   its dataloader drawing the negatives), interleaved epochs, medians. RecBole is given
   the same leave-one-out split (eval_args LS valid_and_test, ordered by time), so both
   train on the same 98,114 interactions of ML-100K. Aim: ratio <= 1.0.
2. The cost of each ranking distiller over plain student training (one epoch each,
   interleaved), for CDAE (user rows) and BPR (interaction rows); aims (issue 15):
   at most 2x on CDAE and 3x on BPR. Each epoch is the first of its training call
   (epoch 0), so DE-RRD's expert selection runs at τ = 1, where every expert is run
   on every row; `de-rrd@e25of50` is DE-RRD's epoch 25 of a 50-epoch training
   (τ = 1e-5, the selection one-hot in float: each row runs its own expert only).
   DE-RRD and CD-SG, whose definitions set their cost (experts on every row while τ is
   large; ranking by the current student every step), are also timed in their
   reference form, the same epoch with the experts stacked as the official code
   computes them and with CD-SG's sample made by sorting every row:
   "bpr/de-rrd/vs-reference-form" is ours over that.

Ends with one JSON line, {"bench": "recsys", "hardware": ..., "ratios": {...}}, the
ratios named model/method (e.g. "bpr/de-rrd": distiller epoch / plain epoch,
"bpr/harness-vs-recbole": harness epoch / RecBole Trainer epoch, and part 3's
"bpr/de-rrd/experts-tau1": optimised / unoptimised time of one piece).

    python benchmarks/bench_recsys.py [--repeats 5] [--part all|recbole|distillers|components]
                                      [--models cdae,bpr]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, interleaved, summary, train_cfg  # noqa: E402
from harness.plugins import get_registry  # noqa: E402
from harness.runner import seed_everything, train_model  # noqa: E402
from harness.tasks import get_task  # noqa: E402
from harness_recsys import distillers, rb  # noqa: E402
from harness_recsys.data import MovieLens100K  # noqa: E402

FOLDER = rb.wheel_datasets() / "ml-100k"
#: where RecBole's Trainer writes its logs and checkpoints: a temporary folder, never
#: the current directory
RECBOLE_DIR = Path(tempfile.mkdtemp(prefix="recbole-bench-"))


def recbole_epoch(model: str, size: dict, batch_size: int, lr: float):
    """A closure running one epoch of RecBole's Trainer on its leave-one-out split."""
    with rb.quiet():  # (RecBole's imports switch on autograd anomaly detection; undone)
        from recbole.data import create_dataset, data_preparation
        from recbole.trainer import Trainer

    options = {
        **size,
        "train_batch_size": batch_size,
        "learning_rate": lr,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "checkpoint_dir": str(RECBOLE_DIR / "saved"),
        "weight_decay": 0.0,
    }
    config = rb.make_config(model, FOLDER, options)
    with rb.quiet():
        dataset = create_dataset(config)
        train, _, _ = data_preparation(config, dataset)
        seed_everything(0)
        net = rb.model_class(model)(config, train.dataset).to(config["device"])
        with contextlib.chdir(RECBOLE_DIR):  # (its Trainer writes log/ and log_tensorboard/ here)
            trainer = Trainer(config, net)
    epoch = [0]

    def run():
        trainer._train_epoch(train, epoch[0])
        epoch[0] += 1

    n = len(train.dataset.inter_feat)
    return run, n


def harness_epoch(data, model: str, size: dict, batch_size: int, lr: float, distiller=None, teacher=None):
    reg = get_registry()
    cls = reg.get("model", model)
    seed_everything(0)
    m = cls(**cls.resolve_params(size, "bench")).build(data)
    task = get_task("ranking")
    cfg = train_cfg(optimizer="adam", lr=lr, weight_decay=0.0)
    extra = []
    if distiller is not None:
        extra = list(distiller.setup(teacher, m, data, data.train.head(2)))
    gen = torch.Generator().manual_seed(0)

    def run():
        if distiller is not None:  # each call is a training's epoch 0: the per-epoch draws are made again
            distiller._table_key = None
            distiller.epoch_drawn = None
        train_model(
            m, data, task, cfg, 1, batch_size, gen, distiller=distiller, teacher=teacher, extra_params=extra
        )

    return run


def teacher_for(data, model: str, size: dict, batch_size: int):
    cls = get_registry().get("model", model)
    seed_everything(1)
    t = cls(**cls.resolve_params(size, "bench")).build(data)
    cfg = train_cfg(optimizer="adam", lr=0.003, weight_decay=0.0)
    return train_model(
        t, data, get_task("ranking"), cfg, 3, batch_size, torch.Generator().manual_seed(1)
    ).eval()


def ratios_of(
    times: dict[str, list[float]], base: str, prefix: str, stat=statistics.median
) -> dict[str, float]:
    med = {k: stat(v) for k, v in times.items()}
    return {f"{prefix}/{k}": round(v / med[base], 3) for k, v in med.items() if k != base}


def mid_training(distiller, epoch: int = 25, epochs: int = 50):
    """DE-RRD as at `epoch` of an `epochs`-long training (its annealed τ), for timing."""
    d = copy.copy(distiller)
    d.tau = lambda e, n, f=distiller.tau: f(epoch, epochs)
    return d


def bench_recbole(data, repeats: int) -> dict[str, float]:
    print("\n1. one student epoch, harness vs RecBole's Trainer (same model, batch, interactions)")
    out = {}
    for model, size, bs in (
        ("bpr", {"embedding_size": 20}, 2048),
        ("neumf", {"mf_embedding_size": 8, "mlp_embedding_size": 8, "mlp_hidden_size": [16, 8]}, 2048),
    ):
        rb_run, n_rb = recbole_epoch(model.upper() if model == "bpr" else "NeuMF", size, bs, 0.001)
        h_run = harness_epoch(data, model, size, bs, 0.001)
        print(
            f" {model} {size} batch {bs}: RecBole trains on {n_rb:,} interactions, "
            f"the harness on {len(data.train):,}"
        )
        times = interleaved({"recbole Trainer": rb_run, "harness": h_run}, repeats)
        summary(times, "recbole Trainer")
        out[f"{model}/harness-vs-recbole"] = ratios_of(times, "recbole Trainer", model)[f"{model}/harness"]
    return out


def bench_distillers(
    data, repeats: int, models: tuple[str, ...] = ("cdae", "bpr")
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians' ratios, and the best (least disturbed) epochs' ratios."""
    print("\n2. distiller cost: one student epoch with each distiller, against none")
    reg = get_registry()
    out, best = {}, {}
    for model, t_size, s_size, bs in (
        ("cdae", {"embedding_size": 100}, {"embedding_size": 10}, 256),
        ("bpr", {"embedding_size": 200}, {"embedding_size": 20}, 2048),
    ):
        if model not in models:
            continue
        teacher = teacher_for(data, model, t_size, bs)
        runs = {"none": harness_epoch(data, model, s_size, bs, 0.001)}
        for name in ("rd", "rd-rank", "cd-base", "cd-tg", "cd-sg", "de-rrd", "de-rrd@e25of50"):
            cls = reg.get("distiller", name.split("@")[0])
            d = cls(**cls.resolve_params({}, "bench"))
            d = mid_training(d) if "@" in name else copy.copy(d)
            runs[name] = harness_epoch(data, model, s_size, bs, 0.001, d, teacher)
        # the two methods whose own definition sets their cost, against the same epoch
        # computed as their reference code would: DE-RRD's experts stacked, every expert on
        # every row at every τ (the official code); CD-SG's sample by sorting every row
        for name, reference in (("de-rrd", OFFICIAL_EXPERTS), ("cd-sg", SORTED_SCAN)):
            cls = reg.get("distiller", name)
            d = cls(**cls.resolve_params({}, "bench"))
            run = harness_epoch(data, model, s_size, bs, 0.001, d, teacher)
            runs[f"{name} (reference form)"] = patched(run, *reference)
        print(f" {model} teacher {t_size} → student {s_size}, batch {bs}")
        times = interleaved(runs, repeats)
        summary(times, "none")
        for stat, into in ((statistics.median, out), (min, best)):
            ratios = ratios_of(times, "none", model, stat)
            for name in ("de-rrd", "cd-sg"):  # ours over the reference form
                ref = ratios.pop(f"{model}/{name} (reference form)")
                ratios[f"{model}/{name}/vs-reference-form"] = round(ratios[f"{model}/{name}"] / ref, 3)
            into.update(ratios)
    return out, best


def patched(run, target, name, value):
    """`run` with `target.name` replaced by `value` while it runs."""

    def go():
        with mock.patch.object(target, name, value):
            run()

    return go


def _official_experts(self, s, t, tau):
    return stacked_experts(self, s, self.gate(t, tau))


def _sort_then_scan(scores, trained, k, law="linear", gamma=1.0, n_unobserved=None):
    from harness_recsys.teacher import algorithm1, rank_unobserved

    order, _, n = rank_unobserved(scores, trained)
    return algorithm1(order, n, k, law, gamma)


OFFICIAL_EXPERTS = (distillers.Experts, "forward", _official_experts)
SORTED_SCAN = (distillers, "algorithm1_by_scores", _sort_then_scan)


def stacked_experts(e, s, z):
    """Σ_m z_m·E_m(s) as the official code computes it (every expert's output stacked)."""
    hidden = torch.relu(torch.einsum("bd,mdh->bmh", s, e.w1) + e.b1)
    return (z[:, :, None] * (torch.einsum("bmh,mht->bmt", hidden, e.w2) + e.b2)).sum(1)


def bench_components(repeats: int) -> dict[str, float]:
    """The optimised pieces against the unoptimised computation, side by side, at BPR's
    sizes (≈ 900 unique users per batch of 2048, 30 experts 20 → 110 → 200, 1,683 items,
    K = 50): DE's experts forward and backward, and CD-SG's sample of one step."""
    from harness_recsys.distillers import Experts
    from harness_recsys.teacher import algorithm1, algorithm1_by_scores, rank_unobserved

    print("\n3. components, unoptimised vs optimised (BPR sizes)")
    torch.manual_seed(0)
    e = Experts(30, 20, 200)
    t, s = torch.randn(900, 200) * 0.1, torch.randn(900, 20, requires_grad=True)
    scores, trained = torch.randn(900, 1683), torch.rand(900, 1683) < 0.06

    def experts(mix, tau):
        return lambda: ((t - mix(s, e.gate(t, tau))) ** 2).sum().backward()

    def sort_scan():
        order, _, n = rank_unobserved(scores, trained)
        algorithm1(order, n, 50)

    fns = {
        "experts stacked, tau 1": experts(lambda x, z: stacked_experts(e, x, z), 1.0),
        "experts two matmuls, tau 1": experts(e.dense, 1.0),
        "experts stacked, tau 1e-5": experts(lambda x, z: stacked_experts(e, x, z), 1e-5),
        "experts selected only, tau 1e-5": experts(e.sparse, 1e-5),
        "cd-sg sample, sort + scan": sort_scan,
        "cd-sg sample, top-k scan": lambda: algorithm1_by_scores(scores, trained, 50),
    }
    times = interleaved(fns, repeats)
    for k, v in times.items():
        print(f"  {k:<34} median {statistics.median(v) * 1000:8.1f} ms  (min {min(v) * 1000:.1f})")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bpr/de-rrd/experts-tau1": round(
            med["experts two matmuls, tau 1"] / med["experts stacked, tau 1"], 3
        ),
        "bpr/de-rrd/experts-tau1e-5": round(
            med["experts selected only, tau 1e-5"] / med["experts stacked, tau 1e-5"], 3
        ),
        "bpr/cd-sg/sample": round(med["cd-sg sample, top-k scan"] / med["cd-sg sample, sort + scan"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--part", choices=("all", "recbole", "distillers", "components"), default="all")
    ap.add_argument("--models", default="cdae,bpr", help="students of part 2 (comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = MovieLens100K(**MovieLens100K.resolve_params({}, "bench")).load("ranking")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ML-100K ranking view")
    ratios, best = {}, {}
    if args.part in ("all", "recbole"):
        ratios.update(bench_recbole(data, args.repeats))
    if args.part in ("all", "distillers"):
        medians, minima = bench_distillers(data, args.repeats, tuple(args.models.split(",")))
        ratios.update(medians)
        best.update(minima)
    if args.part in ("all", "components"):
        ratios.update(bench_components(max(args.repeats, 5)))
    # ratios: of medians; ratios_best: of each variant's fastest epoch (on a shared
    # machine, the epoch least disturbed by other load)
    emit("recsys", ratios, ratios_best=best)


if __name__ == "__main__":
    main()
