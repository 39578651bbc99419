r"""Reward-weight sweeps over Phase One (taskmem_jax/rl/sweep.py).

  python -m experiments.sweep --config=taskmem_jax/configs/phase_one_synthworld.py --workdir=DIR \
      --spec='reward.usefulness_scale=0,0.1;reward.memory_token_threshold=40,60' [--random=N] \
      [--mode=separate|population] [--config.steps=20 ...]

--spec lists dotted config fields and their values; without --random every combination runs (a grid),
with --random=N, N settings are drawn ("lo:hi" draws uniformly from a range). --mode=separate runs
each setting in DIR/run_K one after another (a rerun skips finished runs and resumes an interrupted one);
--mode=population trains all settings (reward.* fields only) as one population job in DIR/population.
At the end DIR/curves.html charts every run's metrics (DIR/curves.png holds the same charts), DIR/sweep.md
holds a table of the settings and the final metrics (means over the last 3 steps), also printed, and
DIR/sweep.json the same data.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from taskmem_jax import cli, configs
from taskmem_jax.rl import sweep

FLAGS = flags.FLAGS
_CONFIG = configs.path("phase_one_synthworld")


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", _CONFIG, "Phase-One config the sweep varies.")
  flags.DEFINE_string("workdir", "/tmp/taskmem_sweep", "One subfolder per run, and the summary.")
  flags.DEFINE_string("spec", "reward.usefulness_scale=0,0.1", "field=v1,v2;field2=... (dotted config fields).")
  flags.DEFINE_integer("random", 0, "0 = grid; N = N random settings.")
  flags.DEFINE_integer("sweep_seed", 0, "Seed of the random search.")
  flags.DEFINE_enum("mode", "separate", ["separate", "population"], "Separate runs, or one population job.")


def run(cfg, settings: list[dict], workdir: str, mode: str, progress: bool = True) -> str:
  """Runs the sweep; returns the summary table."""
  from experiments.phase_one import run as run_phase_one

  os.makedirs(workdir, exist_ok=True)
  runs = []
  if mode == "population":
    job = sweep.apply(cfg, {})
    with job.unlocked():
      job.workdir = os.path.join(workdir, "population")
      job.export_dir = ""
      job.population = sweep.population_overrides(settings)
    run_phase_one(job, progress=progress)
    for k, setting in enumerate(settings):
      runs.append({"name": f"member_{k}", "setting": setting, "workdir": job.workdir,
                   "final": sweep.final_metrics(sweep.read_history(job.workdir, member=k))})
  else:
    for k, setting in enumerate(settings):
      job = sweep.apply(cfg, setting)
      with job.unlocked():
        job.workdir = os.path.join(workdir, f"run_{k}")
        job.export_dir = ""
      if progress:
        print(f"run_{k}: {setting}")
      run_phase_one(job, progress=progress)
      runs.append({"name": f"run_{k}", "setting": setting, "workdir": job.workdir,
                   "final": sweep.final_metrics(sweep.read_history(job.workdir))})
  from taskmem_jax.eval.curves import write_curves

  write_curves(os.path.join(workdir, "curves.html"),
               {f"{r['name']}: {r['setting']}": sweep.read_history(r["workdir"], member=k if mode == "population"
                                                                   else None) for k, r in enumerate(runs)},
               title=f"Sweep {workdir}")
  return sweep.summarise(runs, os.path.join(workdir, "sweep"))


def main(argv):
  del argv
  fields = sweep.parse_spec(FLAGS.spec)
  settings = sweep.sample(fields, FLAGS.random, FLAGS.sweep_seed) if FLAGS.random else sweep.grid(fields)
  print(f"{len(settings)} settings, mode {FLAGS.mode}")
  print(run(FLAGS.config, settings, FLAGS.workdir, FLAGS.mode))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
