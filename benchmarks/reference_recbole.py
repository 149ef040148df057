"""The reference level of a recommender baseline: RecBole 1.2.1's own Trainer on the
harness's leave-one-out split of MovieLens-100K (run by hand; not a test).

A student trained below the level the reference library reaches makes every distiller
look like noise, so the harness's baselines are checked against this. The split is the
harness's own (plugins/harness_recsys/data.py: per user, the latest interaction is the
test item and the one before it the validation item), written out as RecBole's
pre-split atomic files (`benchmark_filename`: NAME.train.inter, .valid.inter,
.test.inter) with each interaction's position in its user's timeline as the timestamp
(RecBole keeps float fields as float32, which rounds Unix times and would reorder ties),
so both libraries train and score exactly the same interactions. RecBole then does
everything its own way: its dataloaders, negative sampling, Trainer (Adam, early
stopping on the validation metric), and its full-ranking evaluator (Hit@K, NDCG@K over
every item the user has not interacted with before the held-out one).

    python benchmarks/reference_recbole.py --model CDAE --size 10 --lr 0.001 --epochs 300
    python benchmarks/reference_recbole.py --model Caser --size 5 --seeds 0 1 2

RecBole's checkpoint loading calls torch.load without weights_only, which torch >= 2.6
refuses for its pickled config; the best epoch's weights are kept in memory here
instead (RecBole's `saved=False`, and the best state restored before the test).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness_recsys import rb  # noqa: E402
from harness_recsys.data import leave_one_out  # noqa: E402

SIZE_KEYS = {"CDAE": "embedding_size", "Caser": "embedding_size", "BPR": "embedding_size"}


def write_split(out: Path, context: int = 0) -> Path:
    """The harness's leave-one-out split of ML-100K as RecBole's pre-split atomic files.

    context > 0 (sequential models): each row also carries `item_id_list`, the up to
    `context` items the user had before it, oldest first, as RecBole's own data
    augmentation builds them (an interaction with no earlier item is no instance)."""
    folder = out / "ml100k-loo"
    folder.mkdir(parents=True, exist_ok=True)
    _, cols = rb.load_interactions(rb.wheel_datasets() / "ml-100k")
    user, item = cols["user"].numpy(), cols["item"].numpy()
    split, position = leave_one_out(user, cols["timestamp"].numpy())
    order = np.lexsort((position, user))
    timeline: dict[int, list[int]] = {}
    for k in order:
        timeline.setdefault(int(user[k]), []).append(int(item[k]))
    header = "user_id:token\titem_id:token\ttimestamp:float"
    header += "\titem_id_list:token_seq\n" if context else "\n"
    for code, name in ((0, "train"), (1, "valid"), (2, "test")):
        lines = []
        for k in np.flatnonzero(split == code):
            u, p = int(user[k]), int(position[k])
            row = f"{u}\t{item[k]}\t{p}"
            if context:
                before = timeline[u][max(0, p - context) : p]
                if not before:
                    continue
                row += "\t" + " ".join(map(str, before))
            lines.append(row + "\n")
        (folder / f"ml100k-loo.{name}.inter").write_text(header + "".join(lines))
    return folder


def run(model: str, size: int, seed: int, folder: Path, args: argparse.Namespace) -> dict:
    with rb.quiet():
        from recbole.data import create_dataset, data_preparation
        from recbole.trainer import Trainer
        from recbole.utils import init_seed

    options = {
        SIZE_KEYS[model]: size,
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {
            "inter": ["user_id", "item_id", "timestamp"] + (["item_id_list"] if model == "Caser" else [])
        },
        "eval_args": {"order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": [10, 50],
        "valid_metric": "NDCG@50",
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "learning_rate": args.lr,
        "seed": seed,
        "checkpoint_dir": str(folder.parent / "saved"),
    }
    if args.batch:
        options["train_batch_size"] = args.batch
    if model == "Caser":
        options["MAX_ITEM_LIST_LENGTH"] = args.L
        # RecBole's Caser trains with softmax CE over every item (its default), which
        # draws no negatives; its Config insists that the sampling arguments say so
        options["train_neg_sample_args"] = None
    config = rb.make_config(model, folder, options)
    with rb.quiet():
        init_seed(seed, True)
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        net = rb.model_class(model)(config, train.dataset).to(config["device"])
        trainer = Trainer(config, net)
        best = {"score": -1.0, "state": None, "epoch": 0}
        stale = 0
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            trainer._train_epoch(train, epoch, show_progress=False)
            score = trainer._valid_epoch(valid, show_progress=False)[0]
            if score > best["score"]:
                best = {"score": score, "state": copy.deepcopy(net.state_dict()), "epoch": epoch + 1}
                stale = 0
            else:
                stale += 1
                if stale >= args.stopping_step:
                    break
        train_s = time.perf_counter() - t0
        net.load_state_dict(best["state"])
        val = trainer.evaluate(valid, load_best_model=False, show_progress=False)
        res = trainer.evaluate(test, load_best_model=False, show_progress=False)
    return {
        "model": model,
        "size": size,
        "seed": seed,
        "lr": args.lr,
        "best_epoch": best["epoch"],
        "epochs_run": epoch + 1,
        "train_s": round(train_s, 1),
        "val": {k: float(v) for k, v in val.items()},
        "test": {k: float(v) for k, v in res.items()},
        "n_train": len(train.dataset.inter_feat),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="CDAE", choices=sorted(SIZE_KEYS))
    ap.add_argument("--size", type=int, default=10, help="embedding/hidden size")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=0.001, help="RecBole's default 0.001")
    ap.add_argument("--epochs", type=int, default=300, help="RecBole's default 300")
    ap.add_argument("--stopping-step", type=int, default=10, help="RecBole's default 10")
    ap.add_argument("--batch", type=int, default=0, help="train batch size (default: RecBole's)")
    ap.add_argument("--L", type=int, default=5, help="Caser's context length (the CD paper's 5)")
    args = ap.parse_args()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # RecBole writes log/ and log_tensorboard/ into the current folder
        try:
            folder = write_split(Path(tmp), args.L if args.model == "Caser" else 0)
            results = [run(args.model, args.size, s, folder, args) for s in args.seeds]
        finally:
            os.chdir(here)
    for r in results:
        print(json.dumps(r))
    for split in ("val", "test"):
        for metric in ("hit@50", "ndcg@50"):
            vals = [r[split][metric] for r in results]
            sd = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
            print(
                f"{args.model} {args.size} {split} {metric}: {np.mean(vals):.4f} ± {sd:.4f}",
                f"(seeds {args.seeds})",
            )


if __name__ == "__main__":
    main()
