from __future__ import annotations

from harness.hookspecs import hookimpl

from .kd import KnowledgeDistillation, NoDistillation


@hookimpl
def harness_register_distillers(register):
    register(NoDistillation)
    register(KnowledgeDistillation)
