"""Suite-wide settings. JAX's persistent compilation cache is shared by the workers and by the subprocesses
the tests start (they inherit the environment), so a program that many tests compile (the tiny model's
forward, a sampler bucket) is compiled once per run."""

import os
import tempfile

CACHE = os.path.join(tempfile.gettempdir(), f"taskmem_jax_test_xla_cache_{os.getuid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
