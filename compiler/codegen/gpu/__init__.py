"""GPU (CUDA) codegen: the `gpu` pipeline (pipeline.py), kernels compiled by nvcc at build time
(nvcc.py) and the checks a GPU build must pass (checks.py)."""
