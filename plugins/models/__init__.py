"""Model plugins: ``hf`` (``hf.py``)."""
