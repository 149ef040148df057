from __future__ import annotations

from harness.hookspecs import hookimpl

from .kd import KnowledgeDistillation
from .sad import SAD


@hookimpl
def harness_register_distillers(register):
    register(KnowledgeDistillation)
    register(SAD)
