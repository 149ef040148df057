"""CIFAR-100 from its python-pickle release, read without torchvision.

Layout (Krizhevsky 2009): <root>/cifar-100-python/{train,test,meta}, each a pickle whose
b"data" is an N×3072 uint8 array (1024 red, 1024 green, 1024 blue values of a 32×32
image, row-major), with b"fine_labels" (0..99) and b"coarse_labels"; meta holds
b"fine_label_names". The MD5 checksums are those published with the release (as listed by
torchvision's CIFAR100 dataset class): archive eb9058c3..., train 16019d7e..., test
f0ef6b0a..., meta 7973b151....

Images stay uint8 tensors on the device; augmentation (random 32×32 crop of the
4-pixel zero-padded image, horizontal flip with probability 1/2) and normalisation run
on whole batches there, with no per-sample Python (`augment_batch`, `normalise_batch`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import DataBundle, Dataset, Param, TensorSplit, data_root
from harness.errors import UsageError

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
#: Per-channel mean and std of the CIFAR-100 training images (the values
#: commonly used in CIFAR-100 training code).
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_pickle(path: Path) -> dict[bytes, Any]:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise UsageError(f"{path}: not a CIFAR-100 pickle: {e}") from None


def images_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    try:
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"fine_labels"], dtype=np.int64)
    except KeyError as e:
        raise UsageError(f"{path}: not a CIFAR-100 pickle (no {e.args[0]!r})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UsageError(f"{path}: expected N×3072 images and N labels, got {data.shape}, {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def per_class(labels: np.ndarray, n: int | None, offset: int = 0) -> np.ndarray:
    """Indices of the first n images of every class after skipping `offset` of each
    (deterministic: the file's order)."""
    if n is None:
        idx = np.arange(len(labels))
        if offset:
            keep = np.zeros(len(labels), bool)
            for c in np.unique(labels):
                keep[np.flatnonzero(labels == c)[offset:]] = True
            idx = np.flatnonzero(keep)
        return idx
    out = [np.flatnonzero(labels == c)[offset : offset + n] for c in np.unique(labels)]
    return np.sort(np.concatenate(out))


def crop_flip(
    x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int = 4
) -> torch.Tensor:
    """Crop each zero-padded image at (oy, ox) and mirror it where `flip`, on x's device.

    x: [B, C, H, W] (uint8 or float). One gather builds every crop: the row and column
    indices of each image's window index the padded batch at once.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def augment_batch(x: torch.Tensor, generator: torch.Generator | None, pad: int = 4) -> torch.Tensor:
    """Random crop of the 4-pixel zero-padded images and horizontal flip (p = 1/2)."""
    b, dev = x.shape[0], x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    flip = torch.rand(b, device=dev, generator=generator) < 0.5
    return crop_flip(x, oy, ox, flip, pad)


def normalise_batch(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def transform_batch(x: torch.Tensor, train: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Augmented (in training) and normalised images, in the channels_last memory
    format the WRN factory builds its models in (see harness_vision.wrn)."""
    if train:
        x = augment_batch(x, generator)
    return normalise_batch(x).contiguous(memory_format=torch.channels_last)


def transform(
    batch: dict[str, torch.Tensor], train: bool, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    return {**batch, "x": transform_batch(batch["x"], train, generator)}


class Cifar100(Dataset):
    name = "cifar100"
    label = "CIFAR-100"
    description = (
        "CIFAR-100 (python-pickle release, checksummed), 32×32 images of 100 "
        "classes; augmentation on the device"
    )
    tasks = frozenset({"classification"})
    params = {
        "root": Param(
            None,
            "folder holding cifar-100-python/ (default: $HARNESS_DATA or ./datasets, then cifar100/)",
            type=str,
        ),
        "train_per_class": Param(
            None, "training images per class (default: all 500, less the validation ones)", type=int
        ),
        "val_per_class": Param(
            50,
            "training images per class held out for validation "
            "(0: the paper's protocol, validation = the test split)",
        ),
        "test_per_class": Param(None, "test images per class (default: all 100)", type=int),
        "verify": Param(True, "check the files against the release's MD5 checksums"),
    }

    @classmethod
    def check(cls, params: dict[str, Any], where: str) -> None:
        for key in ("train_per_class", "test_per_class"):
            if params[key] is not None and params[key] < 1:
                raise UsageError(f"{where}.{key}: must be at least 1")
        if params["val_per_class"] < 0:
            raise UsageError(f"{where}.val_per_class: must be 0 or more")
        if params["root"] and Path(params["root"]).expanduser().is_file():
            raise UsageError(f"{where}.root: is a file, expected a folder: {params['root']}")

    @property
    def root(self) -> Path:
        r = self.hparams.get("root")
        return Path(r).expanduser() if r else data_root() / "cifar100"

    def location(self) -> str:
        return str(self.root / FOLDER)

    def missing(self) -> str | None:
        folder = self.root / FOLDER
        absent = [n for n in FILE_MD5 if not (folder / n).is_file()]
        if not absent:
            return None
        fix = "harness datasets download cifar100"
        if self.hparams.get("root"):
            fix += f" --root {self.root}"
        return (
            f"CIFAR-100 not found: {folder} lacks {', '.join(absent)}; run `{fix}` "
            f"(or unpack {ARCHIVE} there)"
        )

    def verify_files(self) -> None:
        folder = self.root / FOLDER
        for name, expected in FILE_MD5.items():
            got = md5(folder / name)
            if got != expected:
                raise UsageError(
                    f"{folder / name}: checksum mismatch (md5 {got}, the release has "
                    f"{expected}); the file is corrupt or not the official release "
                    "(set verify: false to use it anyway)"
                )

    def load(self, task: str) -> DataBundle:
        p = self.hparams
        why = self.missing()
        if why:
            raise UsageError(why)
        if p["verify"]:
            self.verify_files()
        folder = self.root / FOLDER
        x_tr, y_tr = images_labels(folder / "train")
        x_te, y_te = images_labels(folder / "test")
        meta = read_pickle(folder / "meta")
        names = [n.decode() for n in meta.get(b"fine_label_names", [])]
        n_val = p["val_per_class"]
        if n_val:
            val_idx = per_class(y_tr, n_val)
            train_idx = per_class(y_tr, p["train_per_class"], offset=n_val)
        else:
            train_idx = per_class(y_tr, p["train_per_class"])
        test_idx = per_class(y_te, p["test_per_class"])

        def split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorSplit:
            return TensorSplit({"x": torch.from_numpy(x[idx].copy()), "y": torch.from_numpy(y[idx].copy())})

        test = split(x_te, y_te, test_idx)
        val = split(x_tr, y_tr, val_idx) if n_val else test
        train = split(x_tr, y_tr, train_idx)
        n_classes = int(max(y_tr.max(), y_te.max()) + 1)
        note = (
            f"CIFAR-100 from {folder}: {len(train)} train / "
            f"{len(val) if n_val else 0} validation / {len(test)} test images"
        )
        note += (
            ", MD5 verified against the official release"
            if p["verify"]
            else ", checksums NOT verified (verify: false): not necessarily the real CIFAR-100"
        )
        if not n_val:
            note += "; validation uses the test split (the paper's protocol)"
        if p["train_per_class"] is not None or p["test_per_class"] is not None:
            note += "; a subset: figures are not comparable with full-data results"
        return DataBundle(
            task="classification",
            train=train,
            val=val,
            test=test,
            info={"n_classes": n_classes, "image_shape": (3, 32, 32), "class_names": names},
            note=note,
            transform=transform,
        )

    def download(self) -> str:
        """Fetch the archive, check its MD5, unpack it beside, then move it into place:
        nothing half-written is left behind on any failure."""
        url = os.environ.get("HARNESS_CIFAR100_URL", URL)
        root = self.root
        if not self.missing():
            return f"already present: {root / FOLDER}"
        made = [p for p in (root, *root.parents) if not p.exists()]
        root.mkdir(parents=True, exist_ok=True)
        try:
            return self._fetch(url, root)
        except BaseException:
            for p in made:  # folders this command created, innermost first
                try:
                    p.rmdir()
                except OSError:
                    break
            raise

    def _fetch(self, url: str, root: Path) -> str:
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            archive = Path(tmp) / ARCHIVE
            try:
                with urllib.request.urlopen(url, timeout=30) as resp, open(archive, "wb") as f:
                    shutil.copyfileobj(resp, f)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise UsageError(
                    f"cannot download CIFAR-100 from {url}: {reason}; nothing was written. "
                    f"On a machine with internet, run this command there, or put "
                    f"{ARCHIVE} unpacked under {root}"
                ) from None
            got = md5(archive)
            if got != ARCHIVE_MD5:
                raise UsageError(
                    f"downloaded {ARCHIVE} has md5 {got}, expected {ARCHIVE_MD5}; nothing was written"
                )
            try:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError) as e:
                raise UsageError(f"cannot unpack {ARCHIVE}: {e}; nothing was written") from None
            target = root / FOLDER
            if target.exists():
                shutil.rmtree(target)
            os.replace(Path(tmp) / FOLDER, target)
        return str(root / FOLDER)
