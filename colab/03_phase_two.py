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
# # Phase Two: adapt what the policy memorises to a task
#
# After deployment, the recent questions of one task type (never their answers) define a pairwise
# reward model. Memories of cached rollouts are compared in pairs, a preference graph picks one pair per
# context, and DPO trains a steer adapter (one vector of the hidden size added after one decoder layer)
# with the backbone frozen. Per task: the first questions are answered with Phase One memory, then that
# task's adapter writes the memory for the rest of the stream. This is `python -m experiments.phase_two`.
#
# In Colab, the first code cell clones the repository (set `REPO`) and installs it with the runtime's extra (TPU or GPU).
#
# Setup: run with the checkout's root as working directory (`%cd taskmem-jax`; `experiments` is imported from there), the project installed (`pip install -e .`). `TASKMEM_NOTEBOOK_FAST=1`
# runs it at tiny settings (CI does). It starts from the Phase-One policy in assets/synthworld_phase_one
# (results/synthworld_2026-12-06/README.md says how it was made and what Phase Two gains from it).

# %%
REPO = ""  # @param {type:"string"} Colab: taskmem-jax's git URL. Where the project is importable (a checkout, CI), nothing runs.
import importlib.util, subprocess  # noqa: E401
if importlib.util.find_spec("taskmem_jax") is None:
  subprocess.run(["git", "clone", "-q", "--depth=1", REPO or "set-REPO-above", "taskmem-jax"], check=True)
  exec(open("taskmem-jax/colab/install.py").read())

# %%
import os

FAST = os.environ.get("TASKMEM_NOTEBOOK_FAST") == "1"
OUT = os.environ.get("TASKMEM_NOTEBOOK_OUT", "/tmp/taskmem_phase_two_nb")
os.makedirs(OUT, exist_ok=True)

# %%
import numpy as np
from IPython.display import Image, display

from experiments import phase_two
from taskmem_jax.configs import phase_two_synthworld
from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.envs.synthworld import phase_two as experiment

# %% [markdown]
# ## Adapt to every task of one stream
# The config holds the official values where a CPU allows (DPO: beta 0.1, KL 0.1, AdamW 1e-3, 10 steps);
# `update_positions=(10, 30, 50)` gives the official retraining schedule.

# %%
cfg = phase_two_synthworld.get_config("demo")
if FAST:
  cfg.clips, cfg.tasks, cfg.drift_from, cfg.drift_to = 4, "counting,spatial", "counting", "spatial"
  cfg.num_contexts, cfg.cache.num_samples, cfg.cache.max_new_tokens, cfg.max_new_tokens = 1, 2, 64, 64
  cfg.dpo.steps, cfg.dpo.pairs_per_step, cfg.dpo.num_minibatches = 1, 1, 1
  cfg.drift_ks = (1, 2)
results = phase_two.run(cfg, OUT)
print(experiment.format_tables(results))

# %% [markdown]
# ## Before / after and the cross-task matrix
# Row i, column j of the matrix: Acc on task j's questions with memory written by task i's adapter
# (the paper's Table 4). The figure: per-task Acc before/after, that matrix, the drift experiment (the
# task switches mid-stream), and each task's gain beside the ceiling of task focus: what a teacher that
# reads every fact right gains by keeping the facts the hint's questions need.

# %%
display(Image(os.path.join(OUT, "phase_two.png")))
cross = results["cross_task"]
diagonal = [cross[t][t] for t in cross]
off_diagonal = [cross[i][j] for i in cross for j in cross if i != j]
print(f"cross-task Acc: diagonal mean {100 * np.mean(diagonal):.1f}, off-diagonal mean "
      f"{100 * np.mean(off_diagonal) if off_diagonal else float('nan'):.1f}")

# %% [markdown]
# ## Adapters are small files, swapped per task
# Each task's steer is saved alone (`OUT/adapters/<task>@<N>.safetensors`, made after the task's first N
# questions; its stats beside it as .json); loading one into the model changes the memory it writes without
# recompiling. The paper deploys it scaled by 1.5.

# %%
paths = sorted(os.path.join(OUT, "adapters", name) for name in os.listdir(os.path.join(OUT, "adapters"))
               if name.endswith(".safetensors"))
for path in paths:
  print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes")
first = paths[0]
from taskmem_jax.models import qwen3_vl

model = qwen3_vl.from_pretrained(cfg.checkpoint, dtype=np.float32)  # load() adds the adapter at its layers
print("metadata:", steer_lib.load(model, first))
values = steer_lib.get_steer(model)
steer_lib.set_steer(model, steer_lib.scale(values, 1.5))
print(f"steer layers {steer_lib.steer_layers(model)}; {steer_lib.num_trainable(model)} trainable parameters; "
      f"norm {np.linalg.norm(values):.4f} -> {np.linalg.norm(steer_lib.get_steer(model)):.4f} after x1.5")
