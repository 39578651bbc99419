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
# # TaskMem quickstart: memorise a SynthWorld stream and answer from memory
#
# The shipped SynthWorld policy (a tiny Qwen3-VL trained by `experiments/train_synthworld_policy.py`)
# watches a procedurally generated video stream in 50-s windows and writes one memory per 10-s clip. The
# questions are then answered from those memories only, and scored with the paper's Acc / Cov / Prec.
# This is the README's demo (`python -m experiments.demo`), step by step, on the same functions.
#
# In Colab, the first code cell clones the repository (set `REPO`) and installs it with the runtime's extra (TPU or GPU).
#
# Setup: run this notebook with the checkout's root as working directory (`%cd taskmem-jax`), the project installed
# (`pip install -e .` in the checkout; in Colab, clone or upload the checkout first).
# `TASKMEM_NOTEBOOK_FAST=1` runs it at tiny settings (CI does).

# %%
REPO = ""  # @param {type:"string"} Colab: taskmem-jax's git URL. Where the project is importable (a checkout, CI), nothing runs.
import importlib.util, subprocess  # noqa: E401
if importlib.util.find_spec("taskmem_jax") is None:
  subprocess.run(["git", "clone", "-q", "--depth=1", REPO or "set-REPO-above", "taskmem-jax"], check=True)
  exec(open("taskmem-jax/colab/install.py").read())

# %%
import os

FAST = os.environ.get("TASKMEM_NOTEBOOK_FAST") == "1"
OUT = os.environ.get("TASKMEM_NOTEBOOK_OUT", "/tmp/taskmem_quickstart")
os.makedirs(OUT, exist_ok=True)

# %%
import matplotlib.pyplot as plt
import numpy as np

from experiments.demo import POLICY_DIR, memorise
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.qa import evaluate_memory, memory_quality
from taskmem_jax.envs.synthworld.reader import answer
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory
from taskmem_jax.eval.metrics import format_table

# %% [markdown]
# ## A stream with known ground truth
# SynthWorld renders a top-down room: objects, regions, people with identity tags, a sign with a digit.
# Every event is an atomic fact with its time. The world's render settings come from the policy's
# `synthworld.json`, so the stream looks like the ones the policy was trained on.

# %%
CLIPS = 4 if FAST else 12
stream = sw.generate(1000, sw.policy_world_config(POLICY_DIR, num_clips=CLIPS))
video_path = sw.write_stream(stream, os.path.join(OUT, "stream.mp4"))
print(f"{stream.num_clips} clips of 10 s -> {video_path}")

fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
for ax, clip in zip(axes, range(2)):
  frames = list(stream.clip_frames(clip))
  for a, image in zip(ax, stream.render_frames(frames[:: max(len(frames) // 4, 1)][:4])):
    a.imshow(image)
    a.axis("off")
  ax[0].set_title(f"clip {clip}", loc="left")
plt.tight_layout()
plt.show()
for clip in range(2):
  print(f"clip {clip} facts:", *[f"  {f.text}" for f in stream.facts_in(clip)], sep="\n")

# %% [markdown]
# ## Memorise it
# The policy reads each window back from the mp4 through the decord / processor path real videos use,
# and writes `<think>...</think>{"description": ...}`; the description becomes the clip's memory.

# %%
memory = memorise(stream, video_path, "shipped", max_new_tokens=64 if FAST else 96)
teacher = teacher_episodic_memory(stream, budget_tokens=40, rng=np.random.default_rng(0))
for clip in range(min(3, stream.num_clips)):
  print(f"clip {clip}\n  policy : {memory.get(clip) if clip in memory else None}\n  teacher: {teacher.get(clip)}")

# %% [markdown]
# ## Answer from memory only
# Questions arrive after the clip they ask about, grouped by task type. The deterministic SynthWorld
# reader parses the memory's sentences into facts and answers, or abstains when the memory does not say.

# %%
questions = sw.make_tasks(stream, 2 if FAST else None, seed=1000)
tables = {}
for name, mem in (("policy", memory), ("teacher", teacher)):
  _, scores = evaluate_memory(stream, mem, questions, answer)
  tables[name] = scores
  quality = memory_quality(stream, mem) if len(mem) else {"faithfulness": float("nan"), "redundancy": float("nan")}
  print(f"\n{name}: faithfulness {quality['faithfulness']:.3f}, redundancy {quality['redundancy']:.3f}")
  print(format_table(scores))

# %%
tasks = list(tables["teacher"]["tasks"])
x = np.arange(len(tasks))
fig, ax = plt.subplots(figsize=(8, 3))
for k, name in enumerate(tables):
  ax.bar(x + 0.4 * k, [100 * tables[name]["tasks"][t]["acc"] for t in tasks], 0.4, label=name)
ax.set_xticks(x + 0.2, tasks)
ax.set_ylabel("Acc (%)")
ax.legend()
plt.show()
