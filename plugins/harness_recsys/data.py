"""Datasets in RecBole's atomic format: `movielens-100k` (shipped in RecBole's wheel) and
`recbole-atomic` (any folder NAME/NAME.inter, by path).

RecBole reads the .inter file and remaps user and item ids to 1..n (0 is padding).
Two views:

rating: explicit ratings; rows x = [user, item], y = the rating standardised on the
  training rows; a random 80/10/10 split of the interactions (the `split_seed` param).
  Metrics MAE, MSE, RMSE on the star scale.
ranking: implicit feedback (every interaction is a positive), leave-one-out by time as
  in the CD paper (Lee et al., ICDM 2019): per user, the latest interaction is the test item and the
  one before it the validation item; the rest train. Users with fewer than 3
  interactions only train. Candidates are every item the user has not interacted with
  in training (for the test, also not the validation item). Splits:
  train   one row per training interaction: user, item, seq (the `history_length`
          items the user had before it, oldest first, left-padded with 0)
  users   one row per user with training data: user, seq (the user's latest training
          items): auto-encoders train on it; teachers score users through it
  val     user, item (held out), seq (latest training items)
  test    user, item (held out), seq (latest items before it, the validation item
          included), seen (the validation item, excluded from the candidates)
  history one row per user id (row 0 is padding): items (the training items, padded
          with 0) and mask [n_items] (True where the user trained on the item)
Ties in time keep the file's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import DataBundle, Dataset, Param, TensorSplit
from harness.errors import UsageError

from . import rb


def leave_one_out(user: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per interaction: its split (0 train, 1 val, 2 test) and its position in its
    user's timeline (0 = earliest). Sorting is stable, so ties keep the file's order."""
    order = np.lexsort((np.arange(len(user)), time, user))
    u_sorted = user[order]
    starts = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1]
    counts = np.diff(np.r_[starts, len(u_sorted)])
    pos_sorted = np.arange(len(u_sorted)) - np.repeat(starts, counts)
    from_end = np.repeat(counts, counts) - 1 - pos_sorted  # 0 = the latest
    split_sorted = np.zeros(len(u_sorted), dtype=np.int64)
    enough = np.repeat(counts >= 3, counts)
    split_sorted[enough & (from_end == 0)] = 2
    split_sorted[enough & (from_end == 1)] = 1
    split = np.empty_like(split_sorted)
    split[order] = split_sorted
    position = np.empty_like(pos_sorted)
    position[order] = pos_sorted
    return split, position


def timelines(user: np.ndarray, item: np.ndarray, time: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Each user's items in time order (index = user id)."""
    order = np.lexsort((np.arange(len(user)), time, user))
    lines = [np.zeros(0, dtype=np.int64) for _ in range(n_users)]
    u_sorted, i_sorted = user[order], item[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(u_sorted)) + 1, len(u_sorted)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b > a:
            lines[u_sorted[a]] = i_sorted[a:b]
    return lines


def windows(line: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """For each end position e: the `length` items of `line` before e, oldest first,
    left-padded with 0."""
    padded = np.r_[np.zeros(length, dtype=np.int64), line]
    idx = ends[:, None] + np.arange(length)[None, :]  # padded index of line[e-length .. e-1]
    return padded[idx]


def ranking_view(
    user: np.ndarray, item: np.ndarray, time: np.ndarray, n_users: int, n_items: int, length: int
):
    split, _ = leave_one_out(user, time)
    lines = timelines(user, item, time, n_users)
    tr_u, tr_i, tr_seq = [], [], []
    us_u, us_seq = [], []
    va, te = [], []
    hist_items: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_users
    mask = np.zeros((n_users, n_items), dtype=bool)
    for u in range(1, n_users):
        line = lines[u]
        if len(line) == 0:
            continue
        n_train = len(line) - 2 if len(line) >= 3 else len(line)
        train_items = line[:n_train]
        hist_items[u] = train_items
        mask[u, train_items] = True
        tr_u.append(np.full(n_train, u))
        tr_i.append(train_items)
        tr_seq.append(windows(line, np.arange(n_train), length))
        us_u.append(u)
        us_seq.append(windows(line, np.array([n_train]), length)[0])
        if len(line) >= 3:
            va.append((u, line[n_train], windows(line, np.array([n_train]), length)[0]))
            te.append(
                (u, line[n_train + 1], windows(line, np.array([n_train + 1]), length)[0], line[n_train])
            )
    width = max(1, max(len(h) for h in hist_items))
    hist = np.zeros((n_users, width), dtype=np.int64)
    for u, h in enumerate(hist_items):
        hist[u, : len(h)] = h
    t = torch.from_numpy

    def rows(entries, with_seen):
        out = {
            "user": t(np.array([e[0] for e in entries], dtype=np.int64)),
            "item": t(np.array([e[1] for e in entries], dtype=np.int64)),
            "seq": t(np.stack([e[2] for e in entries]).astype(np.int64)),
        }
        if with_seen:
            out["seen"] = t(np.array([[e[3]] for e in entries], dtype=np.int64))
        return TensorSplit(out)

    train = TensorSplit(
        {
            "user": t(np.concatenate(tr_u).astype(np.int64)),
            "item": t(np.concatenate(tr_i).astype(np.int64)),
            "seq": t(np.concatenate(tr_seq).astype(np.int64)),
        }
    )
    extra = {
        "users": TensorSplit({"user": t(np.array(us_u, dtype=np.int64)), "seq": t(np.stack(us_seq))}),
        "history": TensorSplit({"items": t(hist), "mask": t(mask)}),
    }
    return train, rows(va, False), rows(te, True), extra, split


def check_inter_file(path: Path) -> None:
    """Refuse, with the file, line and column, an atomic .inter file RecBole would misread:
    empty, no header, no user_id/item_id column, a row with the wrong number of fields
    (e.g. cut mid-line, which RecBole drops silently) or a float column that is not a
    number. Written here because RecBole's own errors name neither file nor line."""
    want = "a header of tab-separated NAME:TYPE fields with user_id:token and item_id:token"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            header = f.readline().rstrip("\r\n")
            if not header:
                raise UsageError(f"{path}:1: empty; expected {want}")
            fields = header.split("\t")
            names = [h.split(":")[0] for h in fields]
            if any(":" not in h for h in fields):
                raise UsageError(f"{path}:1: header field without :TYPE ({header[:80]!r}); expected {want}")
            for col in ("user_id", "item_id"):
                if col not in names:
                    raise UsageError(
                        f"{path}:1: no {col} column (header: {', '.join(names)}); expected {want}"
                    )
            floats = [i for i, h in enumerate(fields) if h.split(":", 1)[1] == "float"]
            rows = 0
            for n, line in enumerate(f, start=2):
                row = line.rstrip("\r\n")
                if not row:
                    continue
                parts = row.split("\t")
                if len(parts) != len(fields):
                    raise UsageError(
                        f"{path}:{n}: {len(parts)} field(s), the header has {len(fields)} "
                        f"({', '.join(names)}); a row cut short or a wrong separator (tabs)?"
                    )
                for i in floats:
                    try:
                        float(parts[i])
                    except ValueError:
                        bad = parts[i][:40]
                        raise UsageError(f"{path}:{n}: {names[i]}: {bad!r} is not a number") from None
                rows += 1
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte offset {e.start})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
    if rows == 0:
        raise UsageError(f"{path}: a header but no interactions")


class AtomicDataset(Dataset):
    """Interactions in RecBole's atomic format, rating or ranking view (module doc)."""

    name = "recbole-atomic"
    label = "RecBole atomic"
    description = "any dataset in RecBole's atomic format (folder NAME/ with NAME.inter), by path"
    tasks = frozenset({"rating", "ranking"})
    params = {
        "path": Param(None, "folder holding NAME.inter (RecBole's atomic format)", type=str),
        "history_length": Param(20, "items of context kept per row for sequential models (seq)"),
        "split_seed": Param(0, "seed of the rating view's random 80/10/10 split"),
    }

    def folder(self) -> Path:
        return Path(self.hparams["path"]).expanduser()

    @classmethod
    def check(cls, params: dict[str, Any], where: str) -> None:
        if cls.name == AtomicDataset.name and not params.get("path"):
            raise UsageError(
                f"{where}.path: recbole-atomic needs the folder of an atomic dataset (NAME/NAME.inter)"
            )
        if params["history_length"] < 1:
            raise UsageError(f"{where}.history_length: must be at least 1, got {params['history_length']}")

    def location(self) -> str:
        return str(self.folder() / f"{self.folder().name}.inter")

    def missing(self) -> str | None:
        f = Path(self.location())
        if not f.is_file():
            return f"{f} does not exist (a RecBole atomic dataset is a folder NAME/ holding NAME.inter)"
        return None

    def load(self, task: str) -> DataBundle:
        folder = self.folder()
        check_inter_file(Path(self.location()))
        dataset, cols = rb.load_interactions(folder)
        n_users, n_items = int(dataset.user_num), int(dataset.item_num)
        info: dict[str, Any] = {
            "n_users": n_users,
            "n_items": n_items,
            "recbole_folder": str(folder),
            "recbole_dataset": dataset,
            "fingerprint": f"{self.name}:{folder}:{task}:{sorted(self.hparams.items())}",
        }
        user, item = cols["user"].numpy(), cols["item"].numpy()
        if task == "rating":
            if "rating" not in cols:
                raise UsageError(f"{self.location()}: no rating column, so no rating view")
            return self._rating(user, item, cols["rating"].numpy(), info)
        if "timestamp" not in cols:
            raise UsageError(f"{self.location()}: no timestamp column, so no leave-one-out by time")
        length = int(self.hparams["history_length"])
        train, val, test, extra, split = ranking_view(
            user, item, cols["timestamp"].numpy(), n_users, n_items, length
        )
        keep = torch.from_numpy(split == 0)
        info["recbole_train_dataset"] = dataset.copy(dataset.inter_feat[keep])
        info["history_length"] = length
        note = (
            f"{n_users - 1} users, {n_items - 1} items, {len(user)} interactions; leave-one-out by time "
            "(each user's latest interaction is the test item, as the CD paper's protocol; unlike the "
            "paper, the one before it is held out for validation, i.e. model selection, and not "
            "trained on), full ranking over the items each user has not trained on"
        )
        return DataBundle("ranking", train, val, test, info, note, extra=extra)

    def _rating(self, user, item, rating, info) -> DataBundle:
        rng = np.random.default_rng(int(self.hparams["split_seed"]))
        order = rng.permutation(len(user))
        n_train, n_val = int(0.8 * len(user)), int(0.1 * len(user))
        parts = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
        mean, std = float(rating[parts[0]].mean()), float(rating[parts[0]].std())
        x = torch.from_numpy(np.stack([user, item], axis=1).astype(np.int64))
        y = torch.from_numpy(((rating - mean) / std).astype(np.float32))
        splits = [TensorSplit({"x": x[p], "y": y[p]}) for p in parts]
        info.update(target_mean=mean, target_std=std, n_features=2)
        note = f"{len(user)} ratings (1-5 stars), random 80/10/10 split (seed {self.hparams['split_seed']})"
        return DataBundle("rating", *splits, info=info, note=note)


class MovieLens100K(AtomicDataset):
    name = "movielens-100k"
    label = "ML-100K"
    description = "MovieLens 100K (943 users, 1,682 films), the copy RecBole ships in its wheel"
    params = {k: v for k, v in AtomicDataset.params.items() if k != "path"}

    def folder(self) -> Path:
        return rb.wheel_datasets() / "ml-100k"
