"""Executor plugins: ``ray`` (``ray.py``)."""
