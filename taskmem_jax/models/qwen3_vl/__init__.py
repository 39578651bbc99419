"""Qwen3-VL and Qwen3-VL-MoE in Flax NNX, exact against transformers.

Read top to bottom: config -> layers -> positions -> vision -> moe -> text -> model -> params.
"""

from taskmem_jax.models.qwen3_vl.config import PRESETS, ConfigError, Qwen3VLConfig, TextConfig, VisionConfig, preset
from taskmem_jax.models.qwen3_vl.model import ModelInputs, Qwen3VLForConditionalGeneration, prepare_inputs
from taskmem_jax.models.qwen3_vl.params import (CheckpointError, count_params, from_pretrained, init_random,
                                                param_table, save_pretrained)
from taskmem_jax.models.qwen3_vl.positions import InputError, VisionMetadata, get_rope_index, vision_metadata

__all__ = [
    "PRESETS", "CheckpointError", "ConfigError", "InputError", "ModelInputs", "Qwen3VLConfig",
    "Qwen3VLForConditionalGeneration", "TextConfig", "VisionConfig", "VisionMetadata", "count_params",
    "from_pretrained", "get_rope_index", "init_random", "param_table", "prepare_inputs", "preset",
    "save_pretrained", "vision_metadata",
]
