"""The few entry points of RecBole 1.2.1 this plugin uses, and nothing else of it.

RecBole's `quick_start` is never imported (it imports Ray, which breaks here); its
Trainer is not used either (the harness trains with its own loop and saves with
`weights_only` loading). What is used: `Config` (the model's default hyper-parameters
from its YAML), `create_dataset` (reading atomic files and remapping ids) and the
model classes. RecBole needs numpy<2 and pandas<2.3 (pinned in pyproject.toml).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: the interaction columns read from a .inter file
INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def wheel_datasets() -> Path:
    """The folder of the datasets RecBole ships in its wheel (ml-100k)."""
    import recbole

    return Path(recbole.__file__).parent / "dataset_example"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Undo what RecBole does to the process. Its loaders log to the root logger and
    trip pandas' FutureWarnings on their in-place fillna; its Config sets
    CUDA_VISIBLE_DEVICES from its gpu_id option; and importing its models (which Config
    and get_model do) runs `torch.autograd.set_detect_anomaly(True)` at the top of
    recbole/model/sequential_recommender/sine.py, which slows every backward pass of
    the process several-fold. Everything RecBole is called through here."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    anomaly = torch.is_anomaly_enabled()
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.autograd.set_detect_anomaly(anomaly)
        logging.getLogger().setLevel(level)
        if cvd is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cvd


def make_config(model: str, folder: Path, options: dict[str, Any] | None = None):
    """A RecBole Config for `model` on the atomic dataset in `folder` (named after it).

    Ratings and timestamps are kept as they are (RecBole normalises float columns by
    default), every user and item is kept (no k-core filter) and nothing is saved."""
    from recbole.config import Config

    base = {
        "data_path": str(folder.parent),
        "load_col": {"inter": list(INTER_COLUMNS)},
        "normalize_all": False,
        "normalize_field": None,
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "rm_dup_inter": None,
        "save_dataset": False,
        "save_dataloaders": False,
        "use_gpu": False,
        "show_progress": False,
        "log_wandb": False,
        "reproducibility": True,
    }
    base.update(options or {})
    with quiet():
        config = Config(model=model, dataset=folder.name, config_dict=base)
    return config


def load_interactions(folder: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """RecBole's dataset of `folder`/NAME.inter and its columns as tensors (ids
    remapped by RecBole to 1..n; 0 is its padding id)."""
    from recbole.data import create_dataset

    inter = folder / f"{folder.name}.inter"
    header = inter.open(encoding="utf-8").readline().rstrip("\n").split("\t")
    present = [c for c in INTER_COLUMNS if any(h.split(":")[0] == c for h in header)]
    config = make_config("BPR", folder, {"load_col": {"inter": present}})
    with quiet():
        dataset = create_dataset(config)
    # read the columns while RecBole still holds them in pandas: its tensors store float
    # fields as float32, which rounds Unix timestamps to multiples of 64 s and would
    # invent ties in the leave-one-out order
    frame = dataset.inter_feat
    cols = {
        "user": torch.from_numpy(frame[dataset.uid_field].to_numpy().astype("int64")),
        "item": torch.from_numpy(frame[dataset.iid_field].to_numpy().astype("int64")),
    }
    if "rating" in frame.columns:
        cols["rating"] = torch.from_numpy(frame["rating"].to_numpy().astype("float32"))
    if "timestamp" in frame.columns:
        cols["timestamp"] = torch.from_numpy(frame["timestamp"].to_numpy().astype("float64"))
    with quiet():
        # its tables are pandas until build(), which would also split them by RecBole's
        # rules; the harness splits itself, so only the conversion to tensors is wanted
        dataset._change_feat_format()
    return dataset, cols


def model_class(name: str):
    with quiet():
        from recbole.utils import get_model

        return get_model(name)
