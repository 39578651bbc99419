"""SFT for Qwen3-VL: data (grain pipeline), loss, the jitted step and loop, orbax checkpoints."""

from taskmem_jax.training.checkpoint import export_pretrained, make_manager, restore, save
from taskmem_jax.training.data import (DataError, bucket_length, collate, example_from_messages, load_jsonl,
                                       make_dataset, make_example, model_inputs, with_vision_features)
from taskmem_jax.training.loss import masked_cross_entropy
from taskmem_jax.training.optim import TrainState, add_trees, lr_schedule, make_optimizer
from taskmem_jax.training.sft import init_state, loss_fn, make_train_step, train

__all__ = [
    "DataError", "TrainState", "add_trees", "bucket_length", "collate", "example_from_messages", "export_pretrained",
    "init_state", "load_jsonl", "loss_fn", "lr_schedule", "make_dataset", "make_example", "make_manager",
    "make_optimizer", "make_train_step", "masked_cross_entropy", "model_inputs", "with_vision_features", "restore", "save", "train",
]
