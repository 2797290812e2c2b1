"""Pure Flax linen modules, one file per model family."""
