"""Running one cell, stage by stage; each stage is a module, read in this order:

1. prepare data      `data.load_data`: the dataset, loaded once per process, on the device
2. get teacher       `teacher.get_teacher`: trained once, cached on disk (when the
                     distiller needs one)
3. build student     `models.build_model`
4. train             `train.train_model` under the pruner's schedule (`cell.CellFit`),
                     with the distiller's loss
5. measure           `measure.measure`: metrics, per-example outcomes, size, inference
                     energy; the training window's energy
6. record            `records.new_record` / `method_label`: the cell's `harness.record.Record`

`cell.run_cell` runs them in one pass and never raises (a failure is a record with
status "failed"). `options` holds what every stage shares (RunOptions, the device).
"""

from ..api import FeatureTap, copy_model
from .cell import CellFit, run_cell
from .data import load_data
from .measure import INFERENCE_ENERGY_KEYS, MAX_INFERENCE_PASSES, _inference_energy, meter_maker
from .models import build_model
from .options import RunOptions, resolve_device, seed_everything, worker_name
from .records import base_record, method_label, new_record
from .teacher import get_teacher, prepare_teacher, teacher_key
from .train import as_regime, loss_diagnostics, lr_at, make_optimizer, train_model

__all__ = [
    "INFERENCE_ENERGY_KEYS",
    "MAX_INFERENCE_PASSES",
    "CellFit",
    "FeatureTap",
    "RunOptions",
    "_inference_energy",
    "as_regime",
    "base_record",
    "build_model",
    "copy_model",
    "get_teacher",
    "load_data",
    "loss_diagnostics",
    "lr_at",
    "make_optimizer",
    "meter_maker",
    "method_label",
    "new_record",
    "prepare_teacher",
    "resolve_device",
    "run_cell",
    "seed_everything",
    "teacher_key",
    "train_model",
    "worker_name",
]
