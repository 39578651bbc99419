"""Helpers that several test files share: plain functions and classes, importable by pytest (tests/ is on
its path) and by the JAX subprocesses the tests start (they put tests/ on PYTHONPATH, or run a file from
it). No fixtures here: conftest-free, so that a subprocess can import them too."""

from __future__ import annotations

from taskmem_jax.rewards import Judge, Ranking, Verdict

# The video grid of one clip in the rollout tests: two frame groups of 4 tokens.
CLIP_GRID = (2, 4, 4)


class LengthJudge(Judge):
  """Passes memories of an even number of words and ranks longer ones first: a judge whose rewards vary
  with the policy's output whatever the policy writes, so that updates happen even when its memories
  are not faithful."""
  name = "length"

  def faithfulness(self, ctx, descriptions):
    return [Verdict(len(d.split()) % 2 == 0) for d in descriptions]

  def non_redundancy(self, ctx, descriptions):
    return [Verdict(True)] * len(descriptions)

  def rank(self, ctx, descriptions):
    return Ranking(tuple(sorted(range(len(descriptions)), key=lambda i: -len(descriptions[i]))))


def phase_one_config(workdir):
  """Phase One of the shipped policy, CPU-sized: 2 streams x 4 samples, 1 off-policy step of 4, streams of
  2-3 clips; LengthJudge's rewards vary, so steps update."""
  from taskmem_jax.configs import phase_one_synthworld

  cfg = phase_one_synthworld.get_config()
  cfg.workdir = str(workdir)
  cfg.num_streams, cfg.group_size, cfg.steps, cfg.off_policy_steps = 2, 4, 4, 1
  cfg.n_min, cfg.n_max, cfg.world_clips = 1, 2, 3
  cfg.max_new_tokens = 64  # the shipped policy writes ~50-token responses; a cut one fails the format check
  cfg.reward.memory_token_threshold = 60  # all within budget: LengthJudge makes the rewards vary
  cfg.lr = 1e-4  # larger steps break the shipped policy's response format within one update
  cfg.save_every = 1
  cfg.temperature = 1.0
  return cfg


def text_messages(text):
  """One user turn of plain text, as the processor's chat messages."""
  return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def sft_config(workdir, **overrides):
  """training/sft.train's config for the tiny model's text examples (30 steps unless overridden)."""
  from taskmem_jax.configs.sft import get_config

  cfg = get_config()
  cfg.update({"workdir": str(workdir), "export_dir": "", "buckets": (48, 96), "batch_size": 2, "steps": 30,
              "lr": 3e-3, "warmup_steps": 3, "log_every": 10, "save_every": 100, "keep_checkpoints": 2})
  cfg.update(overrides)
  return cfg


def dpo_config(steps=6):
  """phase_two.dpo.train_steer's config: 2 pairs per step in one mini-batch."""
  import ml_collections

  c = ml_collections.ConfigDict()
  c.steps, c.pairs_per_step, c.num_minibatches = steps, 2, 1
  c.beta, c.kl_coef, c.lr, c.b1, c.b2, c.weight_decay, c.grad_clip = 0.1, 0.0, 1e-2, 0.9, 0.999, 0.01, 1.0
  c.temperature, c.buckets, c.seed = 1.0, (32, 64), 0
  return c


def dpo_pairs(config, count=3):
  """`count` random text-only DPO pairs (a 12-token prompt, 6- and 7-token responses) for a model of this
  config."""
  import numpy as np

  from taskmem_jax.phase_two.dpo import PairExample

  rng = np.random.default_rng(0)
  v = config.text.vocab_size - 10
  return [PairExample(rng.integers(0, v, 12), None, None, rng.integers(0, v, 6), rng.integers(0, v, 7))
          for _ in range(count)]
