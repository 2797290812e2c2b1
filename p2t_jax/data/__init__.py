"""Data: offline-first sources, tokenizers and deterministic batching."""
