from __future__ import annotations

from harness.hookspecs import hookimpl

from .data import ImdbMovies
from .dcnn import DCNNFactory


@hookimpl
def harness_register_datasets(register):
    register(ImdbMovies)


@hookimpl
def harness_register_models(register):
    register(DCNNFactory)
