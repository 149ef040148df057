from __future__ import annotations

import torch.nn as nn

from harness.api import Fit, Pruner
from harness.hookspecs import hookimpl

from .pruners import LotteryTicket, LotteryTicketUnstructured, SparseStudent, StructuredPruning


class NoPruning(Pruner):
    name = "none"
    label = "none"
    description = "no pruning: train the student for the whole budget"
    tasks = frozenset({"classification", "rating", "ranking"})
    structure = None

    def fit(self, fit: Fit) -> nn.Module:
        return fit.train(fit.student)


@hookimpl
def harness_register_pruners(register):
    for cls in (NoPruning, StructuredPruning, LotteryTicket, LotteryTicketUnstructured, SparseStudent):
        register(cls)
