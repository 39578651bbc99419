"""Turning pixels into the model's inputs. patchify: frames -> merge-block-ordered patch rows."""

from taskmem_jax.processing.patchify import normalize, patchify

__all__ = ["normalize", "patchify"]
