from __future__ import annotations

from harness.hookspecs import hookimpl

from .pruners import LotteryTicket, LotteryTicketUnstructured, SparseStudent, StructuredPruning


@hookimpl
def harness_register_pruners(register):
    for cls in (StructuredPruning, LotteryTicket, LotteryTicketUnstructured, SparseStudent):
        register(cls)
