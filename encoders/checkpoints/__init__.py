"""Bundled checkpoints; `default/` is the tiny preset trained on phantom cases (see README.md)."""
