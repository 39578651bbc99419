r"""Phase Two: task adapters on a SynthWorld stream (taskmem_jax/phase_two).

  python -m experiments.phase_two --output_dir=DIR [--config=taskmem_jax/configs/phase_two_synthworld.py \
      --config.checkpoint=PHASE_ONE_EXPORT --config.update_positions=10,30,50 ...]

Writes DIR/phase_two.json (before/after per task, cross-task matrix, fact mentions, drift, the ceiling of
task focus), DIR/phase_two.png, DIR/adapters/<task>@<N>.safetensors (the steer made after N questions of the
task, loadable with taskmem_jax.adapters.steer.load; its stats beside it as .json), DIR/memories/<tag>/ (the
plain memory under "base", each adapter's under its key), and TensorBoard events of each adapter's DPO run
in DIR/tb (tags dpo/<task>/loss, .../delta, .../accuracy, .../grad_norm, .../steer_norm). Adapters and
memories are saved as they are made: a rerun into the same DIR continues from them.

Several processes (--coordinator_address/--num_processes/--process_id, taskmem_jax/distributed.py): every
process runs the same command; the adapters' rollouts and DPO are split over them, the rest is repeated
on each process's own copy, and process 0 writes the outputs.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
from absl import flags

from taskmem_jax import cli, configs
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = configs.path("phase_two_synthworld")


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  from taskmem_jax import distributed

  config_flags.DEFINE_config_file("config", _CONFIG, "Phase-Two config.")
  flags.DEFINE_string("output_dir", "/tmp/taskmem_phase_two", "Results, figure and adapters.")
  distributed.define_flags()  # --coordinator_address, --num_processes, --process_id (multi-host runs)


def run(cfg, output_dir: str, progress=print) -> dict:
  import jax

  from taskmem_jax import sharding
  from taskmem_jax.envs import synthworld as sw
  from taskmem_jax.envs.synthworld import phase_two as experiment
  from taskmem_jax.io import atomic_write_json
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.memory.prompt import read_window_prompt
  from taskmem_jax.prompt_file import load_prompt_template

  os.makedirs(output_dir, exist_ok=True)
  # The backbone is read straight into its shards (with several processes, each its own copy).
  mesh, preset = sharding.mesh_from_config(cfg.get("mesh", None), per_process=True)
  model = qwen3_vl.from_pretrained(cfg.checkpoint, dtype=jnp.float32, mesh=mesh, preset=preset)
  processor = Qwen3VLProcessor.from_pretrained(cfg.checkpoint)
  prompt = load_prompt_template(cfg.get("prompt_template", "")).window_prompt(read_window_prompt(cfg.checkpoint))
  with cfg.unlocked():
    cfg.render = cfg.render or sw.policy_render(cfg.checkpoint)
  stream = sw.generate(cfg.seed, sw.policy_world_config(cfg.checkpoint, num_clips=cfg.clips, render=cfg.render))
  tasks = sw.make_tasks(stream, seed=cfg.seed, tasks=experiment.task_names(cfg))
  results = experiment.run(cfg, model, processor, stream, tasks, prompt=prompt, workdir=output_dir,
                           progress=progress)
  if jax.process_index() != 0:  # every process holds the same results; one writes them
    return results
  atomic_write_json(os.path.join(output_dir, "phase_two.json"), experiment.public(results))
  experiment.plot(results, os.path.join(output_dir, "phase_two.png"))
  experiment.write_dpo_events(results, os.path.join(output_dir, "tb"))
  return results


def main(argv):
  del argv
  import jax

  from taskmem_jax import distributed
  from taskmem_jax.envs.synthworld import phase_two as experiment

  distributed.initialize_from_flags()  # a no-op for one process

  results = run(FLAGS.config, FLAGS.output_dir)
  if jax.process_index() != 0:
    return
  print(experiment.format_tables(results))
  print(f"\nresults: {os.path.join(FLAGS.output_dir, 'phase_two.json')}; figure: "
        f"{os.path.join(FLAGS.output_dir, 'phase_two.png')}; DPO curves: tensorboard --logdir "
        f"{os.path.join(FLAGS.output_dir, 'tb')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
