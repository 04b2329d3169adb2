"""Compression plugins, one module per entry point, named after it (``-`` becomes ``_``):
``torch-compressions``, ``nncf``, ``ort``, ``prune``, ``low-rank``, ``share-layers``,
``palettize``, ``distill``, ``finetune``, ``vocab-trim``."""
