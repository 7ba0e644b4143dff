"""GRASS."""
