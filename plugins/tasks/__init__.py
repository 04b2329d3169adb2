"""Task plugins: ``ner`` (``ner.py``) and ``classification`` (``classification.py``)."""
