"""delta: DELTA swap-or-recompute scheduling and memory-efficient training for science models."""
