"""taskmem-jax: TaskMem (task-focused memorization for multimodal agents) in JAX/Flax NNX."""

__version__ = "0.1.0"
