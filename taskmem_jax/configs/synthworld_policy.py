"""The shipped SynthWorld policy's recipe (experiments/train_synthworld_policy.py): three stages.

1. vision: the tower learns per-token labels (envs/synthworld/vision_labels.py) through a linear probe;
2. reading: with the tower frozen, the language model learns to write all of one clip's facts, in time
   order, from that clip's video and a one-line request (a dense target the video alone determines);
3. windows: the real task (the streaming window prompt, the teacher's memory as target), tower frozen.
Each stage resumes from its own orbax checkpoints in workdir/<stage>.
"""

import ml_collections

from taskmem_jax.configs import sft


def _sft(**overrides) -> ml_collections.ConfigDict:
  c = sft.get_config()
  c.update(dict(frozen=("visual",), group_by_grid=True, keep_checkpoints=1, log_every=50, save_every=100))
  c.update(overrides)
  return c


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.workdir = "/tmp/taskmem_sw_policy"
  c.export_dir = ""          # "" = workdir/export
  c.init_seed = 0            # random init of the tiny model
  # The world the policy is trained on (WorldConfig fields), recorded in the export's synthworld.json.
  c.world = ml_collections.ConfigDict(dict(render="schematic", patch_aligned=True, max_facts=10))
  # The window prompt's order (memory.prompt.LAYOUTS), written to the export's window_prompt.json.
  c.window_layout = "video_last"
  c.num_clips = 8            # clips per training stream
  c.budget = 40              # teacher memory budget (tokens)
  c.eval_seeds = "100:102"   # held-out streams the exported policy is rolled out on
  c.vision = ml_collections.ConfigDict(dict(
      seeds="1000:1150", steps=1500, batch_size=8, lr=2e-3, warmup_steps=50, end_lr_ratio=0.05, weight_decay=0.0,
      grad_clip=1.0, seed=0, log_every=50, save_every=250))
  c.reading = _sft(seeds="0:200", steps=1500, batch_size=32, lr=1e-3, warmup_steps=50, end_lr_ratio=0.05,
                   weight_decay=0.0, buckets=(256, 320))
  c.windows = _sft(seeds="200:600", steps=500, batch_size=8, lr=5e-4, warmup_steps=20, end_lr_ratio=0.1,
                   weight_decay=0.0, buckets=(512, 768, 1024, 1152), teacher_order="random")
  return c
