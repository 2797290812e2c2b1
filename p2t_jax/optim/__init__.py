"""Optimisers: the standard Optax chains built from configs (and, per chapter, hand-written transforms)."""
