"""Generation with a preallocated KV cache: jitted prefill + lax.while_loop decode."""

from taskmem_jax.sampling.sampler import (THINK_END_TOKEN_ID, TRACE_COUNTS, GenerateOutput, SamplingParams,
                                          geometric_bucket, generate)

__all__ = ["THINK_END_TOKEN_ID", "TRACE_COUNTS", "GenerateOutput", "SamplingParams", "geometric_bucket", "generate"]
