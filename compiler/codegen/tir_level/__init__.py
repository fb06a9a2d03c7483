"""Rewrites of lowered TIR kernels and the finalized module."""
