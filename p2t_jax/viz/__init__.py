"""Matplotlib figures shared by the experiments (PNG files, no display needed)."""
