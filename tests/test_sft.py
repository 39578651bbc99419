"""SFT trainer: loss vs NumPy, overfitting, exact resume, grain state, HF export, a video batch."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.describe import tiny_checkpoint
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from helpers import sft_config as _config, text_messages as _text
from taskmem_jax.training import (
  DataError,
  collate,
  example_from_messages,
  init_state,
  make_dataset,
  make_optimizer,
  make_train_step,
  masked_cross_entropy,
  model_inputs,
  train,
)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
  return tiny_checkpoint(str(tmp_path_factory.mktemp("sft")))


@pytest.fixture(scope="module")
def processor(ckpt_dir):
  return Qwen3VLProcessor.from_pretrained(ckpt_dir)


@pytest.fixture(scope="module")
def examples(processor):
  return [example_from_messages(processor, _text("the red box is left"), "</think>\n\nred then blue"),
          example_from_messages(processor, _text("a green cat sat"), "</think>\n\ncat green sat down")]


def test_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  ids = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
  loss, tokens = masked_cross_entropy(jnp.asarray(logits, jnp.bfloat16), ids, mask)  # upcast inside
  x = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), np.float64)
  nll, n = 0.0, 0
  for b in range(2):
    for t in range(4):
      if mask[b, t + 1]:
        row = x[b, t]
        nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[b, t + 1]]
        n += 1
  assert int(tokens) == n == 5
  np.testing.assert_allclose(float(loss), nll / n, rtol=1e-6)


def test_example_masks_only_the_target(processor, examples):
  e = examples[0]
  target = processor.tokenizer("</think>\n\nred then blue", add_special_tokens=False)["input_ids"]
  assert e["loss_mask"].sum() == len(target) + 1  # + <|im_end|>
  assert e["input_ids"][-1] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
  assert e["loss_mask"][-(len(target) + 1):].all() and not e["loss_mask"][:-(len(target) + 1)].any()


def test_grain_state_round_trip(examples):
  dataset = make_dataset(examples * 3, batch_size=2, buckets=(48, 96), pad_id=0, seed=3)
  it = iter(dataset)
  for _ in range(4):  # crosses an epoch boundary (3 batches per epoch)
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  resumed = iter(dataset)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
  assert expected[0]["input_ids"].shape == (2, 48)


def test_collate_rejects_mixed_grids_and_long_examples(examples):
  video = dict(examples[0], pixel_values_videos=np.zeros((16, 1), np.float32), video_grid_thw=np.array([[1, 4, 4]]))
  with pytest.raises(DataError, match="share the video grid"):
    collate([video, examples[1]], (48, 96), 0)
  with pytest.raises(DataError, match="largest bucket"):
    collate(examples, (8,), 0)


@pytest.mark.slow
def test_overfit_and_export(ckpt_dir, processor, examples, tmp_path):
  cfg = _config(tmp_path / "run", export_dir=str(tmp_path / "export"), log_every=1)
  model = qwen3_vl.from_pretrained(ckpt_dir, dtype=jnp.float32)
  result = train(cfg, model, examples, processor.pad_token_id, tokenizer_dir=ckpt_dir, progress=False)
  losses = [h["loss"] for h in result["history"]]
  assert len(losses) == 30 and losses[-1] < 0.5 * losses[0], losses
  reloaded = qwen3_vl.from_pretrained(cfg.export_dir, dtype=jnp.float32)
  assert os.path.isfile(os.path.join(cfg.export_dir, "tokenizer.json"))
  Qwen3VLProcessor.from_pretrained(cfg.export_dir)
  batch = collate(examples, cfg.buckets, processor.pad_token_id)
  args = (batch["input_ids"], batch["attention_mask"])
  np.testing.assert_allclose(np.asarray(reloaded(*args)), np.asarray(result["model"](*args)), atol=1e-6, rtol=0)
  # Logs: TensorBoard scalars of every history row, metrics.jsonl, and the curves page with its PNG.
  from PIL import Image

  from taskmem_jax.tensorboard import read_scalars

  scalars = read_scalars(os.path.join(cfg.workdir, "tb"))
  assert set(scalars) == {"loss", "tokens", "grad_norm", "lr"}
  assert [s for s, _ in scalars["loss"]] == list(range(1, 31))
  np.testing.assert_allclose([v for _, v in scalars["loss"]], losses, rtol=1e-6)
  with open(os.path.join(cfg.workdir, "metrics.jsonl")) as f:
    assert [json.loads(line) for line in f] == result["history"]
  assert '<img src="curves.png"' in open(os.path.join(cfg.workdir, "curves.html")).read()
  with Image.open(os.path.join(cfg.workdir, "curves.png")) as image:
    assert image.format == "PNG" and image.size[0] > 400


@pytest.mark.slow
def test_resume_is_exact(ckpt_dir, processor, examples, tmp_path):
  def run(workdir, stop_at=None):
    cfg = _config(workdir, steps=4, save_every=2, log_every=1)
    model = qwen3_vl.from_pretrained(ckpt_dir, dtype=jnp.float32)
    return train(cfg, model, examples * 2, processor.pad_token_id, progress=False, stop_at=stop_at)

  straight = run(tmp_path / "a")
  first = run(tmp_path / "b", stop_at=2)
  resumed = run(tmp_path / "b")
  assert first["resumed_from"] is None and resumed["resumed_from"] == 2
  assert [h["loss"] for h in straight["history"][2:]] == [h["loss"] for h in resumed["history"]]
  # The logs of the interrupted run continue: metrics.jsonl and the event files cover steps 1-4 once.
  from taskmem_jax.tensorboard import read_scalars

  with open(tmp_path / "b" / "metrics.jsonl") as f:
    assert [json.loads(line) for line in f] == first["history"] + resumed["history"]
  assert [s for s, _ in read_scalars(str(tmp_path / "b" / "tb"))["loss"]] == [1, 2, 3, 4]
  a = jax.tree.leaves(jax.tree.map(np.asarray, straight["model"]))
  b = jax.tree.leaves(jax.tree.map(np.asarray, resumed["model"]))
  assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_video_batch_and_single_compile(ckpt_dir, processor, examples):
  config = processor.config
  rng = np.random.default_rng(0)
  grid = np.array([2, 4, 4])
  item = {"type": "video", "pixel_values": rng.normal(size=(int(grid.prod()), config.vision.patch_dim)),
          "grid_thw": grid, "timestamps": [0.5, 1.5]}
  video = example_from_messages(processor, [{"role": "user", "content": [item, {"type": "text", "text": "what"}]}],
                                "</think>\n\nred box")
  assert video["video_grid_thw"].tolist() == [[2, 4, 4]]
  model = qwen3_vl.from_pretrained(ckpt_dir, dtype=jnp.float32)
  cfg = _config("/unused")
  optimizer = make_optimizer(cfg)
  graphdef, rest, state = init_state(model, optimizer)
  step = make_train_step(graphdef, optimizer)
  bucket = max(48, len(video["input_ids"]))
  state, metrics = step(state, rest, *model_inputs(config, collate([video], (bucket,), processor.pad_token_id)))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
  # Text examples of different lengths in one bucket add one compile (no pixels), not one each.
  for example in examples:
    state, metrics = step(state, rest, *model_inputs(config, collate([example], (48,), processor.pad_token_id)))
  assert step._cache_size() == 2


def test_group_by_grid_batches_share_a_grid(examples):
  grids = ([1, 4, 4], [2, 4, 4])
  videos = [dict(examples[i % 2], pixel_values_videos=np.full((16 * grids[i % 3 == 0][0], 1), i, np.float32),
                 video_grid_thw=np.array([grids[i % 3 == 0]])) for i in range(9)]
  dataset = make_dataset(videos, batch_size=2, buckets=(48, 96), pad_id=0, seed=1, group_by_grid=True)
  # grid [2,4,4]: rows 0,3,6 -> 1 batch (one left over); grid [1,4,4]: 6 rows -> 3 batches.
  assert len(make_dataset(videos, batch_size=2, buckets=(48, 96), pad_id=0, seed=1, group_by_grid=True,
                          num_epochs=1)) == 4
  it = iter(dataset)
  seen = set()
  for _ in range(4):
    batch = next(it)
    t = int(batch["video_grid_thw"][0, 0])
    assert (batch["video_grid_thw"][:, 0] == t).all() and len(batch["pixel_values_videos"]) == 2 * 16 * t
    seen.update(np.unique(batch["pixel_values_videos"]).astype(int).tolist())
  assert len(seen) == 8  # every batch distinct within the epoch
  state = it.get_state()
  want = next(it)
  again = iter(dataset)
  again.set_state(state)
  assert all(np.array_equal(want[k], v) for k, v in next(again).items())
  with pytest.raises(DataError, match="no video grid has 3 examples"):
    make_dataset(videos[:3], batch_size=3, buckets=(48,), pad_id=0, seed=1, group_by_grid=True)


def _video_examples(processor, seed):
  """Two examples sharing one random 4-frame video."""
  from taskmem_jax.processing.video import VideoClip

  clip = np.random.default_rng(seed).integers(0, 255, (4, 64, 64, 3), np.uint8)
  video = VideoClip(clip, np.arange(4), 2.0, 0.0, 2.0, 0)
  messages = [{"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "what"}]}]
  return [example_from_messages(processor, messages, "</think>\n\nred"),
          example_from_messages(processor, messages, "</think>\n\nblue")]


@pytest.mark.slow
def test_frozen_modules_stay_bitwise_fixed(tmp_path, ckpt_dir, processor):
  examples = _video_examples(processor, 0)
  model = qwen3_vl.from_pretrained(ckpt_dir, dtype=jnp.float32)
  before = jax.tree.map(np.array, nnx_state(model))
  cfg = _config(tmp_path, steps=3, frozen=("visual",), buckets=(128, 256), batch_size=2, weight_decay=0.1)
  trained = train(cfg, model, examples, processor.pad_token_id, progress=False)["model"]
  after = jax.tree.map(np.array, nnx_state(trained))
  flat_before = dict(jax.tree_util.tree_leaves_with_path(before))
  changed = {jax.tree_util.keystr(p): not np.array_equal(flat_before[p], x)
             for p, x in jax.tree_util.tree_leaves_with_path(after)}
  assert not any(v for k, v in changed.items() if k.startswith("['visual']"))
  assert changed["['lm_head']['weight'].value"] if "['lm_head']['weight'].value" in changed else any(
      v for k, v in changed.items() if k.startswith("['language_model']"))
  with pytest.raises(ValueError, match="no module 'vision'"):
    train(_config(tmp_path / "x", steps=1, frozen=("vision",)), trained, examples, processor.pad_token_id,
          progress=False)


def nnx_state(model):
  from flax import nnx
  return nnx.state(model, nnx.Param)


@pytest.mark.slow
def test_precomputed_vision_features_give_the_same_loss(ckpt_dir, processor):
  from taskmem_jax.training import with_vision_features
  from taskmem_jax.training.data import batch_features
  from taskmem_jax.training.sft import loss_fn

  examples = _video_examples(processor, 1)
  model = qwen3_vl.from_pretrained(ckpt_dir, dtype=jnp.float32)
  cached = with_vision_features(examples, model, progress=False)
  assert "pixel_values_videos" not in cached[0] and cached[0]["video_deepstack"].shape[0] == 3
  from flax import nnx
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  direct = collate(examples, (128, 256), processor.pad_token_id)
  fast = collate(cached, (128, 256), processor.pad_token_id)
  want = loss_fn(graphdef, params, rest, *model_inputs(model.config, direct))[0]
  got = loss_fn(graphdef, params, rest, *model_inputs(model.config, fast), (), batch_features(fast))[0]
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
  assert batch_features(direct) is None
