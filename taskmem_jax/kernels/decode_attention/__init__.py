"""Decode attention: one query per row over a KV cache, per-row lengths; see api.decode_attention."""

from taskmem_jax.kernels.decode_attention.api import decode_attention  # noqa: F401
