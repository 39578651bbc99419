"""Adapters of the frozen policy: the Phase-Two steer vectors."""

from taskmem_jax.adapters.steer import (SteerError, SteerParam, add_steer, check_finite, default_layers, get_steer,
                                        load, num_trainable, save, scale, set_steer, split, steer_layers)

__all__ = ["SteerError", "SteerParam", "add_steer", "check_finite", "default_layers", "get_steer", "load",
           "num_trainable", "save", "scale", "set_steer", "split", "steer_layers"]
