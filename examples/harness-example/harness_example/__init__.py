"""Example third-party harness plugin: two models (a transformer and one that is not), a task
and a compression.

It imports only public names: ``harness`` (the API), ``harness.toolkit`` (helpers the built-in
plugins are made of) and ``harness.errors``. See README.md.
"""

from __future__ import annotations

import harness

from .layer_drop import LayerDrop
from .mentions import EntityMentions
from .model import TinyBert
from .word_nb import WordNB

__version__ = "0.1.0"
__all__ = ["EntityMentions", "LayerDrop", "TinyBert", "WordNB"]


@harness.hookimpl
def register_models(register):
    register(TinyBert)
    register(WordNB)


@harness.hookimpl
def register_tasks(register):
    register(EntityMentions)


@harness.hookimpl
def register_compressions(register):
    register(LayerDrop)
