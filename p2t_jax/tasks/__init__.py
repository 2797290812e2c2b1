"""Tasks: a chapter's model, loss and data, packaged for the one training loop."""
