"""Custom Pallas kernels, one folder per op (see kernels/README.md)."""
