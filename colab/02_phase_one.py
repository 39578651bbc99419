# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Phase One: learn how to memorize (GSPO with multi-objective rewards)
#
# Starting from the shipped SynthWorld policy, B streams are memorised with G samples per window; each
# sample is rewarded for format, thinking length, quality (faithful to the window, not redundant with the
# previous memories, well-formed identity tags, within the memory budget) and richness; GSPO updates the
# policy with group-normalised advantages. This is `python -m experiments.phase_one` on the same code.
#
# In Colab, the first code cell clones the repository (set `REPO`) and installs it with the runtime's extra (TPU or GPU).
#
# Setup: run with the checkout's root as working directory (`%cd taskmem-jax`; `experiments` is imported from there), the project installed (`pip install -e .`). `TASKMEM_NOTEBOOK_FAST=1`
# runs it at tiny settings (CI does). With the shipped CPU-trained policy, few memories pass the quality
# check, so the curves mostly show the format, thinking and length terms (see the README).

# %%
REPO = ""  # @param {type:"string"} Colab: taskmem-jax's git URL. Where the project is importable (a checkout, CI), nothing runs.
import importlib.util, subprocess  # noqa: E401
if importlib.util.find_spec("taskmem_jax") is None:
  subprocess.run(["git", "clone", "-q", "--depth=1", REPO or "set-REPO-above", "taskmem-jax"], check=True)
  exec(open("taskmem-jax/colab/install.py").read())

# %%
import os

FAST = os.environ.get("TASKMEM_NOTEBOOK_FAST") == "1"
OUT = os.environ.get("TASKMEM_NOTEBOOK_OUT", "/tmp/taskmem_phase_one_nb")
os.makedirs(OUT, exist_ok=True)

# %%
import json

from IPython.display import Image, display

from experiments import demo, phase_one
from taskmem_jax.configs import phase_one_synthworld
from taskmem_jax.eval.metrics import format_table

# %% [markdown]
# ## The run's config
# Every reward weight and threshold is a field (`cfg.reward`); the defaults are the official launch
# values. Here: a short run. Rerunning the cell resumes from `workdir/checkpoints`.

# %%
cfg = phase_one_synthworld.get_config()
cfg.workdir = os.path.join(OUT, "run")
if FAST:
  cfg.num_streams, cfg.group_size, cfg.steps, cfg.off_policy_steps = 1, 2, 2, 1
  cfg.n_min, cfg.n_max, cfg.world_clips, cfg.max_new_tokens = 1, 2, 3, 64
else:
  cfg.steps, cfg.off_policy_steps = 12, 4
print(cfg.reward)
result = phase_one.run(cfg)

# %% [markdown]
# ## Reward curves
# `workdir/metrics.jsonl` has one row per step: the mean reward and each component, the quality
# check's pass rate, faithfulness, redundancy, memory and thinking lengths. TensorBoard reads
# `workdir/tb` (`tensorboard --logdir workdir/tb`); the trainer also draws every metric into
# `workdir/curves.png` (and `curves.html`).

# %%
display(Image(os.path.join(cfg.workdir, "curves.png")))  # the trainer's charts of every metric
with open(os.path.join(cfg.workdir, "metrics.jsonl")) as f:
  last = [json.loads(line) for line in f][-1]
print({k: last[k] for k in ("step", "reward", "reward/format", "reward/quality", "reward/richness", "pass_rate")})

# %% [markdown]
# ## Before and after, on the demo stream
# The trained policy is exported in Hugging Face format; the demo loads it like the shipped one.

# %%
export = cfg.export_dir or os.path.join(cfg.workdir, "export")
clips = 4 if FAST else 12
for name, policy_dir in (("shipped SFT policy", demo.POLICY_DIR), ("after Phase One", export)):
  scores = demo.run(os.path.join(OUT, name.split()[0]), policy_dir=policy_dir, clips=clips,
                    max_new_tokens=cfg.max_new_tokens, questions_per_task=2 if FAST else 0, progress=False)
  q = scores["memory_quality"]
  print(f"\n{name}: faithfulness {q['faithfulness']:.3f}, redundancy {q['redundancy']:.3f}")
  print(format_table(scores))
