"""The policy recipe (experiments/train_synthworld_policy.py): its vision-stage pixels are the
processor's, its reading examples say what the clip shows, and a tiny run of all three stages resumes,
exports a loadable policy with its world recorded, and rolls it out."""

import json
import os

import numpy as np
import pytest

from taskmem_jax.configs import synthworld_policy
from experiments.make_sft_data import init_checkpoint
from experiments.train_synthworld_policy import READING_REQUEST, VisionClips, reading_accuracy, reading_examples, run
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.vision_labels import LABELS_PER_TOKEN
from taskmem_jax.processing import Qwen3VLProcessor

WORLD = sw.WorldConfig(num_clips=2, render="schematic", patch_aligned=True, max_facts=10)


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
  path = init_checkpoint(str(tmp_path_factory.mktemp("init")), render="schematic")
  return Qwen3VLProcessor.from_pretrained(path)


def test_vision_clips_are_the_processors_pixels(processor):
  clips = VisionClips([3], WORLD, processor.config.vision)
  assert len(clips) == 2
  pixels, grid, labels = clips[1]
  stream = sw.generate(3, WORLD)
  batch = processor([[{"role": "user", "content": [{"type": "video", "video": sw.render_clip(stream, 10, 20)}]}]])
  np.testing.assert_array_equal(grid, batch["video_grid_thw"][0])
  np.testing.assert_allclose(pixels, batch["pixel_values_videos"], atol=1e-6)
  assert labels.shape == (int(grid[0]) * 4, LABELS_PER_TOKEN)


def test_reading_examples_target_every_fact(processor):
  (first, second) = reading_examples(processor, [3], WORLD)
  stream = sw.generate(3, WORLD)
  tokenizer = processor.tokenizer
  target = tokenizer.decode(second["input_ids"][second["loss_mask"] > 0][:-1])
  assert target == " ".join(f.text for f in stream.facts_in(1))
  prompt = tokenizer.decode(second["input_ids"][second["loss_mask"] == 0])
  assert READING_REQUEST in prompt


def test_vision_stage_loss_is_each_columns_cross_entropy_by_hand():
  """The vision stage's probe loss (one masked softmax over all label columns) against NumPy, column by column."""
  from taskmem_jax.training.vision_stage import _column_losses

  classes = (3, 5, 2, 7)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, sum(classes))).astype(np.float32) * 3
  labels = np.stack([rng.integers(0, c, 6) for c in classes], 1).astype(np.int32)
  losses, correct, start = [], [], 0
  for k, c in enumerate(classes):
    column = logits[:, start:start + c].astype(np.float64)
    log_softmax = column - column.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    losses.append(-log_softmax[np.arange(6), labels[:, k]])
    correct.append(column.argmax(1) == labels[:, k])
    start += c
  loss, got = _column_losses(logits, labels, classes)
  np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(got), np.stack(correct, 1))


@pytest.mark.slow
def test_tiny_recipe_runs_resumes_and_exports(tmp_path):
  cfg = synthworld_policy.get_config()
  cfg.workdir = str(tmp_path / "work")
  cfg.num_clips = 2
  cfg.eval_seeds = "100:101"
  cfg.vision.update(dict(seeds="0:3", steps=4, batch_size=2, log_every=2, save_every=2))
  cfg.reading.update(dict(seeds="0:2", steps=2, batch_size=2, log_every=1, save_every=1))
  cfg.windows.update(dict(seeds="2:4", steps=2, batch_size=1, log_every=1, save_every=1))
  result = run(cfg, progress=False)
  export = result["export"]
  assert json.load(open(os.path.join(export, "synthworld.json"))) == {
      "render": "schematic", "patch_aligned": True, "max_facts": 10}
  assert sw.policy_world_config(export, num_clips=2) == WORLD
  assert set(result["stages"]) == {"vision", "reading", "windows"}
  # The reported held-out probe accuracy is the vision stage's export's (recomputed here on the same clips).
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.training.vision_stage import evaluate_vision_stage
  tower = qwen3_vl.from_pretrained(os.path.join(cfg.workdir, "vision", "export"), dtype=np.float32)
  heldout = VisionClips(range(5000, 5004), WORLD, tower.config.vision)
  assert result["stages"]["vision"]["heldout_probe_accuracy"] == evaluate_vision_stage(tower, heldout, heldout.classes)
  # Each stage logs to its workdir: TensorBoard events (vision: loss, accuracy, lr ... per log point) and,
  # for the SFT stages, metrics.jsonl with the curves.
  from taskmem_jax.tensorboard import read_scalars

  vision = read_scalars(os.path.join(cfg.workdir, "vision", "tb"))
  assert [s for s, _ in vision["loss"]] == [1, 2, 3, 4] and {"accuracy", "grad_norm", "lr"} <= set(vision)
  assert [s for s, _ in read_scalars(os.path.join(cfg.workdir, "windows", "tb"))["loss"]] == [1, 2]
  assert os.path.getsize(os.path.join(cfg.workdir, "reading", "curves.png")) > 1000
  (evaluation,) = result["eval"]
  assert evaluation["windows"] == 2
  # The reading check is the final export's, and summary.json records what run returned.
  assert reading_accuracy(export, [100], num_clips=2) == result["reading"]
  summary = json.load(open(os.path.join(cfg.workdir, "summary.json")))
  assert summary["stages"] == result["stages"] and summary["reading"] == result["reading"]
  assert summary["eval"] == [{k: v for k, v in r.items() if k != "texts"} for r in result["eval"]]
  # A rerun finds every stage exported and trains nothing.
  again = run(cfg, progress=False)
  assert again["stages"] == {}
  assert json.load(open(os.path.join(cfg.workdir, "summary.json")))["stages"] == result["stages"]  # still recorded
