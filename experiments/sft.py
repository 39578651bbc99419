r"""Supervised fine-tuning of a Qwen3-VL checkpoint on (prompt, target) pairs.

  python -m experiments.sft --config=taskmem_jax/configs/sft.py \
      --config.checkpoint=DIR --config.data=FILE.jsonl --config.workdir=WORK [--config.steps=N ...]

FILE.jsonl holds one {"messages": [...], "target": "..."} per line (format: taskmem_jax/training/data.py).
Checkpoints go to WORK/checkpoints (a rerun resumes where the last one stopped, data order included);
the loss, grad norm, lr and tokens of every step to WORK/metrics.jsonl and TensorBoard events in WORK/tb,
and their curves to WORK/curves.html and WORK/curves.png (rewritten at each checkpoint); the trained model
is exported in HF format (config, safetensors, tokenizer files) to --config.export_dir (default
WORK/export), loadable with qwen3_vl.from_pretrained.
Without --config.checkpoint a tiny random checkpoint is built in WORK; without --config.data a toy
JSONL of text examples is written there, so the command runs as is. --config.mesh.preset=fsdp
shards the model over every device (read straight into its shards) and splits each batch; on several
hosts add --coordinator_address/--num_processes/--process_id (taskmem_jax/distributed.py).
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from experiments.describe import tiny_checkpoint
from taskmem_jax import cli, configs
from taskmem_jax import sharding
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.training import load_jsonl, train

FLAGS = flags.FLAGS
_CONFIG = configs.path("sft")


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  from taskmem_jax import distributed

  config_flags.DEFINE_config_file("config", _CONFIG, "ml_collections config file (taskmem_jax/configs/sft.py).")
  distributed.define_flags()  # --coordinator_address, --num_processes, --process_id (multi-host runs)


def toy_jsonl(path: str) -> str:
  """A few text examples: the prompt names two colours, the target repeats them in order."""
  colours = ["red", "blue", "green", "black", "white", "yellow"]
  with open(path, "w", encoding="utf-8") as f:
    for i, a in enumerate(colours):
      b = colours[(i + 2) % len(colours)]
      f.write(json.dumps({"messages": [{"role": "user", "content": [
          {"type": "text", "text": f"the {a} box is left of the {b} box"}]}],
                          "target": f"</think>\n\n{a} then {b}"}) + "\n")
  return path


def run(cfg, progress: bool = True) -> dict:
  """Resolves the defaults of cfg (checkpoint, data, export_dir), loads everything and trains."""
  os.makedirs(cfg.workdir, exist_ok=True)
  checkpoint = cfg.checkpoint or tiny_checkpoint(cfg.workdir)
  data = cfg.data or toy_jsonl(os.path.join(cfg.workdir, "toy_sft.jsonl"))
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.dtype]
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  examples = load_jsonl(data, processor)
  mesh, preset = sharding.mesh_from_config(cfg.mesh)
  model = qwen3_vl.from_pretrained(checkpoint, dtype=dtype, mesh=mesh, preset=preset)  # straight into its shards
  with cfg.unlocked():
    cfg.export_dir = cfg.export_dir or os.path.join(cfg.workdir, "export")
  print(f"{len(examples)} examples from {data}; model {checkpoint}; "
        f"{sum(int(e['loss_mask'].sum()) for e in examples)} target tokens")
  return train(cfg, model, examples, processor.pad_token_id, tokenizer_dir=checkpoint, progress=progress, mesh=mesh,
               preset=preset)


def main(argv):
  del argv
  from taskmem_jax import distributed

  distributed.initialize_from_flags()  # a no-op for one process
  result = run(FLAGS.config)
  history = result["history"]
  if history:
    print(f"loss {history[0]['loss']:.4f} (step {history[0]['step']}) -> {history[-1]['loss']:.4f} "
          f"(step {history[-1]['step']}); first step {result['first_step_s']:.1f} s with compile, "
          f"{result['steps_per_s'] or 0:.2f} steps/s after")
  print(f"exported to {FLAGS.config.export_dir}; curves: {os.path.join(FLAGS.config.workdir, 'curves.png')}; "
        f"tensorboard --logdir {os.path.join(FLAGS.config.workdir, 'tb')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
