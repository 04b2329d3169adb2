"""The private library the built-in plugins share (no entry points, no hooks): CoNLL and text
data readers, metrics, layer helpers, int8 weight files and the torch helpers. Not an API for
third-party plugins: ``harness.toolkit`` is; names here may change in any release."""
