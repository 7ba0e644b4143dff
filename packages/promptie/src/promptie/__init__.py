"""promptie."""
