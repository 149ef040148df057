from __future__ import annotations

from harness.hookspecs import hookimpl

from .data import AtomicDataset, MovieLens100K
from .distillers import DISTILLERS
from .models import BPRFactory, CaserFactory, CDAEFactory, NeuMFFactory


@hookimpl
def harness_register_datasets(register):
    register(MovieLens100K)
    register(AtomicDataset)


@hookimpl
def harness_register_models(register):
    for factory in (CDAEFactory, CaserFactory, BPRFactory, NeuMFFactory):
        register(factory)


@hookimpl
def harness_register_distillers(register):
    for distiller in DISTILLERS:
        register(distiller)
