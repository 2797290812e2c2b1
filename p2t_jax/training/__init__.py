"""The one training engine: state, pure steps (and the older ``pmap`` step), the loop, checkpoints and metrics."""
