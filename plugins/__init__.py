"""Built-in harness plugins, shipped as the import package ``harness_plugins``, laid out by axis:

* ``models/``, ``tasks/``, ``compressions/``, ``executors/``: the plugins, one module per entry
  point of ``[project.entry-points.harness]`` in pyproject.toml, named after it (``low-rank`` is
  ``compressions/low_rank.py``). Each is registered exactly as a third-party plugin would be;
  ``harness --disable-plugin NAME`` turns any of them off.
* ``runtimes/``: the OpenVINO and ONNX Runtime libraries (predictors, export) the compressions
  build on.
* ``_lib/``: the private library the plugins share (data readers, metrics, torch helpers).

``ner.py`` and ``classification.py`` here are deprecated re-exports of ``tasks.ner`` and
``tasks.classification`` (they warn on import, and go away in the next release).
"""
