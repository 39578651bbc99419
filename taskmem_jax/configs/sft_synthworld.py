"""SFT config of the shipped SynthWorld policy (experiments/make_sft_data.py --train); fields as in sft.py.

Batch size 1: windows near the stream start show fewer frames (video grids [10..50, 4, 4]), and a batch
must share one grid. The buckets are chosen so that each grid lands in one bucket (one compile each).
"""

from taskmem_jax.configs import sft


def get_config():
  c = sft.get_config()
  c.workdir = "/tmp/taskmem_sw_sft/train"
  c.batch_size = 1
  c.buckets = (512, 768, 1024, 1280)
  c.steps = 500
  c.lr = 2e-3
  c.warmup_steps = 30
  c.end_lr_ratio = 0.05
  c.log_every = 25
  c.save_every = 200
  c.keep_checkpoints = 1
  return c
