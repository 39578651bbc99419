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
# # A real Qwen3-VL checkpoint: load it sharded, describe a video, memorise it
#
# On a Colab TPU or GPU runtime: put a Hugging Face Qwen3-VL checkpoint folder (config.json,
# *.safetensors, tokenizer files; e.g. Qwen3-VL-2B-Instruct downloaded with `huggingface-cli download`)
# and a video where the runtime can read them, and set `CHECKPOINT` and `VIDEO` below (or the
# environment variables `TASKMEM_CHECKPOINT`, `TASKMEM_VIDEO`).
#
# In Colab, the first code cell clones the repository (set `REPO`) and installs it with the runtime's extra (TPU or GPU).
#
# Setup: with the checkout's root as working directory (`%cd taskmem-jax`), `pip install -e '.[tpu]'` on a TPU runtime or `pip install -e '.[gpu]'`
# on a GPU runtime, then restart the runtime. Without a checkpoint the notebook uses a tiny random one
# and a synthetic clip, so every cell runs anywhere (the words are then random).

# %%
REPO = ""  # @param {type:"string"} Colab: taskmem-jax's git URL. Where the project is importable (a checkout, CI), nothing runs.
import importlib.util, subprocess  # noqa: E401
if importlib.util.find_spec("taskmem_jax") is None:
  subprocess.run(["git", "clone", "-q", "--depth=1", REPO or "set-REPO-above", "taskmem-jax"], check=True)
  exec(open("taskmem-jax/colab/install.py").read())

# %%
import os

OUT = os.environ.get("TASKMEM_NOTEBOOK_OUT", "/tmp/taskmem_real_checkpoint_nb")
os.makedirs(OUT, exist_ok=True)
CHECKPOINT = os.environ.get("TASKMEM_CHECKPOINT", "")  # a local Hugging Face Qwen3-VL folder
VIDEO = os.environ.get("TASKMEM_VIDEO", "")            # a local video file

# %%
import jax
import jax.numpy as jnp

from experiments import describe
from taskmem_jax import sharding
from taskmem_jax.memory.loop import RolloutConfig, memorize_stream
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.processing.video import video_duration

if not CHECKPOINT:
  CHECKPOINT = describe.tiny_checkpoint(OUT)
  print(f"no checkpoint given: a tiny random one at {CHECKPOINT}")
if not VIDEO:
  VIDEO = describe.synthetic_clip(os.path.join(OUT, "synthetic_clip.mp4"), seconds=20.0)
  print(f"no video given: a synthetic clip at {VIDEO}")
print("devices:", jax.devices())

# %% [markdown]
# ## Load it sharded
# `from_pretrained(..., mesh=)` builds the abstract model and reads each device's slice of every tensor
# straight into its sharding, so the whole model is never on one device. Presets: `single`, `fsdp`,
# `fsdp_tensor`, `expert` (MoE experts); see `python -m experiments.plan` for the memory each needs.

# %%
mesh = sharding.make_mesh("fsdp")
dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
model = qwen3_vl.from_pretrained(CHECKPOINT, dtype=dtype, mesh=mesh, preset="fsdp")
processor = Qwen3VLProcessor.from_pretrained(CHECKPOINT)
print("mesh:", dict(mesh.shape))
print("parameters:", qwen3_vl.count_params(model.config)["total"])
embed = model.language_model.embed_tokens.weight[...]
print("embedding", embed.shape, embed.sharding.spec)

# %% [markdown]
# ## Describe the video
# The processor samples frames with decord as the official pipeline does (2 fps), the model generates
# with its thinking turned on; `describe` is `python -m experiments.describe` as a function.

# %%
result = describe.describe(CHECKPOINT, VIDEO, prompt="Describe what happens in the video.", model=model,
                           max_new_tokens=64, dtype="float32" if dtype == jnp.float32 else "bfloat16")
print({k: v for k, v in result.items() if k != "text"})
print(result["text"])

# %% [markdown]
# ## Memorise it clip by clip
# TaskMem's window prompt: up to 4 earlier 10-s clips with the memories already written, plus the new
# clip; the response is `<think>...</think>{"description": ...}` and the description is the clip's memory.
# An untrained checkpoint may not follow the format: those windows get no memory, and the records say why.

# %%
memory, records = memorize_stream(model, processor, VIDEO, video_duration(VIDEO), RolloutConfig(max_new_tokens=64),
                                  prompt=read_window_prompt(CHECKPOINT))
print(memory.to_string() or "(no memory parsed)")
for record in records:
  parse = record.parses[0]
  print(f"clip {record.window.clip}: {'ok' if parse.ok else parse.reason}")
