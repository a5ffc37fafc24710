"""Building blocks of the paper's models, one concept per module (paper §3)."""
