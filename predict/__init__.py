"""predict package."""
