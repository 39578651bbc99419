"""Flash attention (forward + custom-VJP backward): causal, GQA, segment ids; see api.flash_attention."""

from taskmem_jax.kernels.flash_attention.api import flash_attention, resolve_impl  # noqa: F401
