"""Custom Pallas kernels, one folder per op (see taskmem_jax/kernels/README.md)."""
