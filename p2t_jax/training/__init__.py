"""The one training engine: state, pure steps, the loop, checkpoints and metrics."""
