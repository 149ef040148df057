"""`kd` (Hinton, Vinyals & Dean 2015). (The `none` distiller, the plain task loss, is the
core's: harness/default_plugins.py.)

kd, classification: L = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)),
  KL summed over classes and averaged over the batch; T^2 keeps the soft term's gradient
  scale independent of T, as in the paper.
kd, rating: a regression output has no class distribution to soften, so the soft-target
  term becomes the squared distance to the teacher's prediction:
  L = (1 - alpha) * MSE(s, y) + alpha * MSE(s, t). T is not used there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.api import Distiller, Param, Step
from harness.errors import UsageError


def kd_term(student: torch.Tensor, teacher: torch.Tensor, task: str, T: float) -> torch.Tensor:
    """The soft-target term of KD (T^2-scaled KL for logits, MSE for ratings)."""
    if task == "classification":
        log_p_s = F.log_softmax(student / T, dim=1)
        p_t = F.softmax(teacher / T, dim=1)
        return F.kl_div(log_p_s, p_t, reduction="batchmean") * (T * T)
    return F.mse_loss(student, teacher)


class KnowledgeDistillation(Distiller):
    name = "kd"
    label = "KD"
    description = "Hinton soft-target distillation (T, alpha); teacher MSE for ratings"
    tasks = frozenset({"classification", "rating"})
    needs = frozenset({"teacher", "logits"})
    params = {
        "T": Param(4.0, "softmax temperature (classification)"),
        "alpha": Param(0.9, "weight of the soft-target term; 1 - alpha weighs the task loss"),
    }

    @classmethod
    def check(cls, params, where):
        if params["T"] <= 0:
            raise UsageError(f"{where}.T: must be positive")
        if not 0 <= params["alpha"] <= 1:
            raise UsageError(f"{where}.alpha: must be in [0, 1]")

    def loss(self, step: Step) -> torch.Tensor:
        a, T = self.hparams["alpha"], self.hparams["T"]
        soft = kd_term(step.student_out, step.teacher_out, step.task, T)
        task, kd = (1 - a) * step.task_loss, a * soft
        step.log_terms(task=task, kd=kd)
        return task + kd
