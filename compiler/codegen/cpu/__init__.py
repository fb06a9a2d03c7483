"""CPU schedule rules: register-tiled, vectorized, parallel kernels (schedules.py is the entry)."""
