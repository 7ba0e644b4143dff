"""Merak: automated 3D parallelism for unmodified HF transformers models."""

__version__ = "0.1.0"
