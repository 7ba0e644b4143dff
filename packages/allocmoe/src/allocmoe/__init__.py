"""allocmoe: Alloc-MoE expert-activation budgets for MoE inference."""

__version__ = "0.1.0"
