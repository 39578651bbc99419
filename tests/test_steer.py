"""The steer adapter: its own parameter tree, exact placement, files, swaps without recompiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from taskmem_jax.adapters import steer as S
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl.text import SteerParam


@pytest.fixture()
def model():
  return qwen3_vl.init_random(qwen3_vl.preset("tiny"), seed=0)


def _ids(cfg, b=2, length=12, seed=0):
  return np.random.default_rng(seed).integers(0, cfg.text.vocab_size - 10, (b, length)).astype(np.int32)


def test_30b_a3b_has_exactly_2048_trainable_parameters():
  cfg = qwen3_vl.preset("30B-A3B")
  abstract = nnx.eval_shape(lambda: S.add_steer(qwen3_vl.Qwen3VLForConditionalGeneration(
      cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))))
  assert abstract.language_model.steer_layers == (22,)
  assert S.num_trainable(abstract) == 2048


def test_default_layers_and_bad_layers(model):
  assert S.default_layers(48) == (22,) and S.default_layers(36) == (16,) and S.default_layers(4) == (2,)
  for bad in ([], [4], [1, 1], [-1]):
    with pytest.raises(S.SteerError, match="steer layers"):
      S.add_steer(model, bad)
  with pytest.raises(S.SteerError, match="no steer adapter"):
    S.get_steer(model)


def test_zero_steer_is_the_backbone_and_a_steer_adds_after_its_layer(model):
  cfg = model.config
  ids = _ids(cfg)
  before = np.asarray(model(ids))
  S.add_steer(model, [1, 3])
  np.testing.assert_array_equal(np.asarray(model(ids)), before)  # zero init
  graphdef, steer, backbone, rest = S.split(model)
  assert [x.shape for x in jax.tree.leaves(steer)] == [(2, cfg.text.hidden_size)]
  assert not any(isinstance(v, SteerParam) for v in jax.tree.leaves(backbone, is_leaf=lambda x: isinstance(
      x, nnx.Variable)))
  # Reference: run the decoder layer by layer with hooks, adding the vectors after layers 1 and 3.
  values = np.random.default_rng(1).normal(0, 0.5, (2, cfg.text.hidden_size)).astype(np.float32)
  S.set_steer(model, values)
  got = np.asarray(model(ids))
  lm = model.language_model
  inputs = qwen3_vl.prepare_inputs(cfg, ids)
  x = lm.embed_tokens(jnp.asarray(inputs.input_ids))
  from taskmem_jax.models.qwen3_vl.text import text_rotary
  cos, sin = text_rotary(jnp.asarray(inputs.position_ids), cfg.text, x.dtype)
  length = ids.shape[1]
  mask = (jnp.arange(length)[None, :] <= jnp.arange(length)[:, None])[None] & jnp.ones((2, 1, length), bool)
  for i, layer in enumerate(lm.layers):
    x, _ = layer(x, cos, sin, mask)
    if i == 1:
      x = x + values[0]
    if i == 3:
      x = x + values[1]
  expected = np.asarray(model.logits(lm.norm(x)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.abs(got - before).max() > 1e-3


def test_non_finite_steer_is_refused(model):
  S.add_steer(model)
  bad = np.zeros((1, model.config.text.hidden_size), np.float32)
  bad[0, 5] = np.nan
  with pytest.raises(S.SteerError, match=r"non-finite value nan at index \[0, 5\]"):
    S.set_steer(model, bad)
  with pytest.raises(S.SteerError, match="shape"):
    S.set_steer(model, np.zeros((2, 3)))


def test_save_load_scale_and_swap_without_recompiling(model, tmp_path):
  from taskmem_jax.sampling import TRACE_COUNTS, generate

  cfg = model.config
  S.add_steer(model, [2])
  a = np.full((1, cfg.text.hidden_size), 0.3, np.float32)
  S.set_steer(model, a)
  S.save(model, tmp_path / "task_a.safetensors", metadata={"task": "counting"})
  other = qwen3_vl.init_random(cfg, seed=0)
  meta = S.load(other, tmp_path / "task_a.safetensors")
  assert meta["task"] == "counting" and S.steer_layers(other) == (2,)
  np.testing.assert_array_equal(S.get_steer(other), a)
  np.testing.assert_allclose(S.scale(a), 0.45)
  # The HF export leaves the steer out: transformers' layout has no place for it.
  qwen3_vl.save_pretrained(model, tmp_path / "hf")
  reloaded = qwen3_vl.from_pretrained(tmp_path / "hf", dtype=jnp.float32)
  assert S.steer_layers(reloaded) == ()
  # Swapping steers changes values only: generate compiles once.
  inputs = {"input_ids": _ids(cfg, 1, 8), "attention_mask": np.ones((1, 8), np.int32)}
  generate(model, inputs, max_new_tokens=4)
  before = dict(TRACE_COUNTS)
  outs = []
  for values in (a, -a, np.zeros_like(a)):
    S.set_steer(model, values)
    outs.append(generate(model, inputs, max_new_tokens=4).logprobs)
  assert dict(TRACE_COUNTS) == before
  assert not np.allclose(outs[0], outs[1])
  (tmp_path / "junk.safetensors").write_bytes(b"not a file")
  with pytest.raises(Exception):
    S.load(other, tmp_path / "junk.safetensors")
  with pytest.raises(S.SteerError, match="not found"):
    S.load(other, tmp_path / "missing.safetensors")


def test_official_phase_two_checkpoint_round_trips_and_matches_transformers(tmp_path):
  """The released Phase-Two checkpoint layout (every decoder layer's adapter.steer, zero but the trained one):
  save_pretrained(steer=True) writes it, from_pretrained reads it back into the steer tree, and the logits
  equal transformers' with the same vector added to that layer's output (a forward hook)."""
  import json

  import torch
  from safetensors.numpy import load_file

  from hf_fixtures import hf_model
  from taskmem_jax.models.qwen3_vl.params import CheckpointError, from_pretrained, save_pretrained

  reference = hf_model(moe=True)
  reference.save_pretrained(tmp_path / "hf")
  ours = from_pretrained(tmp_path / "hf", dtype=jnp.float32)
  hidden, layers = ours.config.text.hidden_size, ours.config.text.num_hidden_layers
  vector = np.random.default_rng(2).normal(0, 0.5, hidden).astype(np.float32)
  S.add_steer(ours, [1])
  S.set_steer(ours, vector[None])
  save_pretrained(ours, tmp_path / "phase_two", steer=True)
  tensors = load_file(tmp_path / "phase_two" / "model.safetensors")
  steers = {i: tensors[f"model.language_model.layers.{i}.adapter.steer"] for i in range(layers)}
  assert all(not steers[i].any() for i in (0, 2, 3)) and np.array_equal(steers[1], vector)
  config = json.loads((tmp_path / "phase_two" / "config.json").read_text())
  assert config["text_config"]["adapter_layers"] == "all"

  loaded = from_pretrained(tmp_path / "phase_two", dtype=jnp.float32)
  assert S.steer_layers(loaded) == (1,) and np.array_equal(S.get_steer(loaded)[0], vector)
  ids = np.random.default_rng(0).integers(1, 240, (2, 16)).astype(np.int64)
  got = np.asarray(loaded(ids.astype(np.int32)))

  def add_steer(module, args, output):
    if isinstance(output, tuple):
      return (output[0] + torch.from_numpy(vector),) + output[1:]
    return output + torch.from_numpy(vector)

  handle = reference.model.language_model.layers[1].register_forward_hook(add_steer)
  with torch.no_grad():
    want = reference(input_ids=torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids))).logits
  handle.remove()
  want = want.float().numpy()
  assert np.abs(got - want).max() / np.abs(want).max() < 2e-5
  with torch.no_grad():
    plain = reference(input_ids=torch.from_numpy(ids)).logits.float().numpy()
  assert np.abs(plain - want).max() > 1e-3  # the steer moved the logits

  # A steer that does not fit the model is named; other unknown keys still fail as before.
  tensors["model.language_model.layers.7.adapter.steer"] = np.zeros(hidden, np.float32)
  tensors["model.language_model.layers.0.adapter.bias"] = np.zeros(hidden, np.float32)
  from safetensors.numpy import save_file
  save_file(tensors, tmp_path / "phase_two" / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=r"layers\.7\.adapter\.steer.*at layer 7.*(?s:.*)unknown keys.*adapter\.bias"):
    from_pretrained(tmp_path / "phase_two", dtype=jnp.float32)
