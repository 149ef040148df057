"""Recommender training speed (run by hand; not a test).

1. Epoch time of a student under the harness against the same RecBole model, batch
   size and training interactions under RecBole's own Trainer (`Trainer._train_epoch`,
   its dataloader drawing the negatives), interleaved epochs, medians. RecBole is given
   the same leave-one-out split (eval_args LS valid_and_test, ordered by time), so both
   train on the same 98,114 interactions of ML-100K. Aim: ratio <= 1.0.
2. The cost of each ranking distiller over plain student training (one epoch each,
   interleaved), for CDAE (user rows) and BPR (interaction rows).

    python benchmarks/bench_recsys.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, summary, train_cfg  # noqa: E402
from harness.plugins import get_registry  # noqa: E402
from harness.runner import seed_everything, train_model  # noqa: E402
from harness.tasks import get_task  # noqa: E402
from harness_recsys import rb  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = MovieLens100K(**MovieLens100K.resolve_params({}, "bench")).load("ranking")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ML-100K ranking view")

    print("\n1. one student epoch, harness vs RecBole's Trainer (same model, batch, interactions)")
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
        times = interleaved({"recbole Trainer": rb_run, "harness": h_run}, args.repeats)
        summary(times, "recbole Trainer")

    print("\n2. distiller cost: one student epoch with each distiller, against none")
    reg = get_registry()
    for model, t_size, s_size, bs in (
        ("cdae", {"embedding_size": 100}, {"embedding_size": 10}, 256),
        ("bpr", {"embedding_size": 200}, {"embedding_size": 20}, 2048),
    ):
        teacher = teacher_for(data, model, t_size, bs)
        runs = {"none": harness_epoch(data, model, s_size, bs, 0.001)}
        for name in ("rd", "rd-rank", "cd-base", "cd-tg", "cd-sg", "de-rrd"):
            cls = reg.get("distiller", name)
            d = cls(**cls.resolve_params({}, "bench"))
            runs[name] = harness_epoch(data, model, s_size, bs, 0.001, copy.copy(d), teacher)
        print(f" {model} teacher {t_size} → student {s_size}, batch {bs}")
        summary(interleaved(runs, args.repeats), "none")


if __name__ == "__main__":
    main()
