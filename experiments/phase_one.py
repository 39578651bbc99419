r"""Phase One: learn how to memorize with GSPO and the multi-objective reward (taskmem_jax/rl).

  python -m experiments.phase_one --config=taskmem_jax/configs/phase_one_synthworld.py --workdir=DIR \
      [--config.steps=40 --config.reward.usefulness_scale=0 ...]

Loads the policy (--config.checkpoint, HF format), trains on streams from --config.env with the
configured judge, writes DIR/metrics.jsonl, TensorBoard events in DIR/tb (`tensorboard --logdir DIR/tb`),
the curves in DIR/curves.html and DIR/curves.png, and orbax checkpoints in DIR/checkpoints (a rerun
resumes where the last one stopped), and exports the trained policy to --config.export_dir (default
DIR/export) in HF format, which experiments.demo --policy_dir can load.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from taskmem_jax import cli, configs
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.prompt_file import load_prompt_template
from taskmem_jax.rl.trainer import train

FLAGS = flags.FLAGS
_CONFIG = configs.path("phase_one_synthworld")


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  from taskmem_jax import distributed

  config_flags.DEFINE_config_file("config", _CONFIG, "ml_collections config (taskmem_jax/configs/phase_one_*.py).")
  flags.DEFINE_string("workdir", None, "Overrides --config.workdir.")
  distributed.define_flags()  # --coordinator_address, --num_processes, --process_id (multi-host runs)


def make_source(cfg):
  """The stream source named by cfg.env."""
  if cfg.env == "synthworld":
    from taskmem_jax.envs.synthworld import policy_world_config
    from taskmem_jax.envs.synthworld.source import SynthWorldSource
    overrides = {"render": cfg.render} if cfg.get("render", "") else {}
    world = policy_world_config(cfg.checkpoint, num_clips=cfg.world_clips, **overrides)
    return SynthWorldSource(world, seed_base=cfg.seed_base,
                            teacher_budget=cfg.teacher_budget, teacher_seed=cfg.seed)
  if cfg.env == "videos":
    from taskmem_jax.rl.streams import VideoFilesSource
    if not cfg.get("manifest"):
      raise ValueError("config.env='videos' needs config.manifest (JSONL of {\"video\": PATH, \"memory\": PATH})")
    return VideoFilesSource(cfg.manifest)
  raise ValueError(f"config.env={cfg.env!r}: expected synthworld or videos")


def make_judge(cfg):
  """The judge named by cfg.judge."""
  if cfg.judge == "ground_truth":
    from taskmem_jax.envs.synthworld.judge import GroundTruthJudge
    return GroundTruthJudge(cfg.get("judge_scope", "window"))
  if cfg.judge == "local":
    from taskmem_jax.rewards import LocalLLMJudge
    if not cfg.judge_checkpoint:
      raise ValueError("config.judge='local' needs config.judge_checkpoint (an HF Qwen3-VL folder)")
    model = qwen3_vl.from_pretrained(cfg.judge_checkpoint, dtype=jnp.float32)
    return LocalLLMJudge(model, Qwen3VLProcessor.from_pretrained(cfg.judge_checkpoint),
                         texts=load_prompt_template(cfg.get("prompt_template", "")).judges)
  if cfg.judge == "http":
    from taskmem_jax.rewards import HTTPJudge
    if not cfg.judge_base_url or not cfg.judge_model:
      raise ValueError("config.judge='http' needs config.judge_base_url and config.judge_model")
    return HTTPJudge(cfg.judge_base_url, cfg.judge_model, api_key_env=cfg.judge_api_key_env,
                     texts=load_prompt_template(cfg.get("prompt_template", "")).judges)
  raise ValueError(f"config.judge={cfg.judge!r}: expected ground_truth, local or http")


def identity_tags(cfg):
  from taskmem_jax.rewards import FACE_TAGS, SYNTHWORLD_TAGS
  return SYNTHWORLD_TAGS if cfg.env == "synthworld" else FACE_TAGS


def load_policy(cfg):
  """(model, processor) of cfg.checkpoint. Under a multi-device cfg.mesh each tensor is read straight into
  its shards on the mesh the trainer builds (rl/population.make_mesh), so no device holds the whole model."""
  from taskmem_jax.rl import population as pop
  from taskmem_jax.rl.trainer import reward_configs

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[cfg.dtype]
  if not os.path.isfile(os.path.join(cfg.checkpoint, "config.json")):
    raise FileNotFoundError(f"config.checkpoint={cfg.checkpoint!r}: no config.json there")
  mesh_cfg = dict(cfg.get("mesh", None) or {})
  mesh = pop.make_mesh(len(reward_configs(cfg)), mesh_cfg)
  model = qwen3_vl.from_pretrained(cfg.checkpoint, dtype=dtype, mesh=mesh, preset=pop.mesh_preset(mesh_cfg),
                                   attention_impl=cfg.get("attention_impl", None), remat=cfg.get("remat", None))
  processor = Qwen3VLProcessor.from_pretrained(cfg.checkpoint)
  prompt = load_prompt_template(cfg.get("prompt_template", "")).window_prompt(read_window_prompt(cfg.checkpoint))
  return model, processor, prompt


def run(cfg, progress: bool = True, **kwargs) -> dict:
  """Loads the policy, source and judge named by cfg and trains; returns trainer.train's dict."""
  model, processor, prompt = load_policy(cfg)
  return train(cfg, model, processor, make_source(cfg), make_judge(cfg), prompt=prompt, tags=identity_tags(cfg),
               progress=progress, **kwargs)


def main(argv):
  del argv
  from taskmem_jax import distributed

  distributed.initialize_from_flags()  # a no-op for one process
  cfg = FLAGS.config
  if FLAGS.workdir:
    with cfg.unlocked():
      cfg.workdir = FLAGS.workdir
  result = run(cfg)
  history = result["history"]
  keys = ("reward", "pass_rate", "faithfulness", "redundancy", "format_failure", "memory_tokens", "step_s")
  for h in (history[:1] + history[-1:]) if history else []:
    print(json.dumps({"step": h["step"], **{k: round(h[k], 4) for k in keys if k in h}}))
  print(f"metrics: {os.path.join(cfg.workdir, 'metrics.jsonl')}; curves: {os.path.join(cfg.workdir, 'curves.png')}; "
        f"exported policy: {cfg.export_dir or os.path.join(cfg.workdir, 'export')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
