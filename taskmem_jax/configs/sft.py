"""Config of supervised fine-tuning (experiments/sft.py); override fields with --config.NAME=VALUE."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.checkpoint = ""          # HF Qwen3-VL checkpoint to start from; empty = a tiny random one built in workdir
  c.data = ""                # JSONL of {"messages", "target"} (taskmem_jax/training/data.py); empty = a toy file
  c.workdir = "/tmp/taskmem_sft"  # orbax checkpoints in workdir/checkpoints; a rerun resumes from the latest
  c.export_dir = ""          # HF export of the trained model; empty = workdir/export
  c.dtype = "float32"        # float32 | bfloat16: parameter dtype (the loss is float32 either way)
  c.seed = 0                 # data order
  c.batch_size = 2
  c.buckets = (64, 128, 256, 512, 1024, 2048)  # padded lengths: one compile per bucket used
  c.steps = 100
  c.lr = 1e-3
  c.warmup_steps = 10
  c.end_lr_ratio = 0.1       # cosine decays to lr * end_lr_ratio at `steps`
  c.weight_decay = 0.01
  c.b1 = 0.9
  c.b2 = 0.95
  c.grad_clip = 1.0          # global norm
  c.log_every = 10
  c.save_every = 50
  c.keep_checkpoints = 2
  # preset "" = the default device; else single | fsdp | fsdp_tensor | expert over every device (sharding.py;
  # tensor / expert: those axes' sizes, 0 = the preset's default): the checkpoint is read straight into its
  # shards and every batch split over the batch axes. With several processes (--num_processes ...) each feeds
  # its rows of every batch.
  c.mesh = ml_collections.ConfigDict(dict(preset="", tensor=0, expert=0))
  return c
