from __future__ import annotations

from harness.hookspecs import hookimpl

from .cifar import Cifar100
from .wrn import WRNFactory


@hookimpl
def harness_register_datasets(register):
    register(Cifar100)


@hookimpl
def harness_register_models(register):
    register(WRNFactory)
