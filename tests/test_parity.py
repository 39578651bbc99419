"""Parity against transformers' PyTorch Qwen3-VL and Qwen3-VL-MoE on tiny random checkpoints.

Inputs hold an image, a video with two frame groups separated by timestamp text, and a left-padded
row; logits are compared on the real (unpadded) positions.
"""

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_fixtures as fx
from taskmem_jax.models.qwen3_vl import InputError, from_pretrained, get_rope_index, prepare_inputs, save_pretrained

FP32_TOL = 1e-4


@pytest.fixture(scope="module", params=["dense", "moe"])
def pair(request, tmp_path_factory):
  """(transformers model, its checkpoint dir, our fp32 model loaded from it)."""
  moe = request.param == "moe"
  ref = fx.hf_model(moe=moe, seed=1 if moe else 0)
  path = tmp_path_factory.mktemp(request.param)
  ref.save_pretrained(path)
  return ref, path, from_pretrained(path, dtype=jnp.float32)


@pytest.fixture(scope="module")
def batch():
  return fx.inputs()


def test_logits_match_transformers(pair, batch):
  ref, _, ours = pair
  expected = fx.hf_logits(ref, batch)
  assert np.abs(expected).max() > 1.0, "reference logits too small to be a sensitive test"
  got = np.asarray(ours(**batch))
  assert got.shape == expected.shape
  assert fx.rel_err(got, expected, batch["attention_mask"]) < FP32_TOL


def test_text_only_matches_transformers(pair):
  ref, _, ours = pair
  ids = np.array([[5, 17, 3, 99, 42, 7, 8, 120]], np.int64)
  with torch.no_grad():
    expected = ref(input_ids=torch.from_numpy(ids)).logits.numpy()
  assert fx.rel_err(ours(ids), expected) < FP32_TOL


def test_vision_and_deepstack_features(pair, batch):
  ref, _, ours = pair
  pixels = np.concatenate([batch["pixel_values"], batch["pixel_values_videos"]])
  grids = np.concatenate([batch["image_grid_thw"], batch["video_grid_thw"]])
  with torch.no_grad():
    out = ref.model.visual(torch.from_numpy(pixels), grid_thw=torch.from_numpy(grids))
  features, deepstack = ours.vision_features(pixels, grids)
  assert features.shape == tuple(out.pooler_output.shape)
  assert fx.rel_err(features, out.pooler_output.numpy()) < FP32_TOL
  assert len(deepstack) == len(out.deepstack_features) == 3
  for got, expected in zip(deepstack, out.deepstack_features):
    assert fx.rel_err(got, expected.numpy()) < FP32_TOL


def test_position_ids_and_rope_deltas(pair, batch):
  ref, _, ours = pair
  ids = batch["input_ids"]
  expected_pos, expected_delta = ref.model.get_rope_index(
      torch.from_numpy(ids), mm_token_type_ids=torch.from_numpy(fx.mm_token_type_ids(ids)),
      image_grid_thw=torch.from_numpy(batch["image_grid_thw"]),
      video_grid_thw=torch.from_numpy(batch["video_grid_thw"]),
      attention_mask=torch.from_numpy(batch["attention_mask"]))
  pos, delta = get_rope_index(ids, ours.config, batch["attention_mask"], batch["image_grid_thw"],
                              batch["video_grid_thw"])
  np.testing.assert_array_equal(pos, expected_pos.numpy())
  np.testing.assert_array_equal(delta, expected_delta.numpy())


def test_rope_index_fixture_vector(pair):
  """The hand-checked vector of qwen3vl-arch.md §5 (image grid 1x4x6, video grid 2x4x4)."""
  _, _, ours = pair
  batch = fx.inputs(padded_row=False)
  pos, delta = get_rope_index(batch["input_ids"], ours.config, None, [[1, 4, 6]], [[2, 4, 4]])
  t = "0 1 2 3 4 4 4 4 4 4 7 8 9 10 11 12 13 13 13 13 15 16 17 18 19 19 19 19 21 22 23 24"
  h = "0 1 2 3 4 4 4 5 5 5 7 8 9 10 11 12 13 13 14 14 15 16 17 18 19 19 20 20 21 22 23 24"
  w = "0 1 2 3 4 5 6 4 5 6 7 8 9 10 11 12 13 14 13 14 15 16 17 18 19 20 19 20 21 22 23 24"
  expected = np.array([[int(x) for x in s.split()] for s in (t, h, w)])
  np.testing.assert_array_equal(pos[:, 0], expected)
  assert delta.tolist() == [[-7]]


def test_bf16_forward_close_to_fp32_reference(pair, batch):
  """bf16 agrees with the fp32 reference as closely as transformers' own bf16 run does.

  In the MoE model a few tokens flip their top-k experts in bf16 (in transformers too), so beyond the
  whole-batch bound, 90% of tokens must each be within 5e-2.
  """
  ref, path, _ = pair
  expected = fx.hf_logits(ref, batch)
  ref_bf16 = fx.hf_logits(copy.deepcopy(ref).to(torch.bfloat16), batch)
  mask = batch["attention_mask"]
  ours_bf16 = from_pretrained(path, dtype=jnp.bfloat16)
  assert ours_bf16.dtype == jnp.bfloat16
  got = np.asarray(ours_bf16(**batch).astype(jnp.float32))
  assert fx.rel_err(got, expected, mask) < max(5e-2, 1.5 * fx.rel_err(ref_bf16, expected, mask))
  per_token = np.abs(got - expected).max(-1)[mask.astype(bool)] / np.abs(expected).max()
  assert np.mean(per_token < 5e-2) >= 0.9


def test_save_pretrained_round_trip(pair, batch, tmp_path):
  ref, _, ours = pair
  save_pretrained(ours, tmp_path)
  reloaded = type(ref).from_pretrained(tmp_path, attn_implementation="eager").eval()
  ours_logits = np.asarray(ours(**batch))
  assert fx.rel_err(fx.hf_logits(reloaded, batch), ours_logits, batch["attention_mask"]) < 1e-5
  ours_again = from_pretrained(tmp_path, dtype=jnp.float32)
  np.testing.assert_array_equal(np.asarray(ours_again(**batch)), ours_logits)


def test_tied_embeddings(tmp_path, batch):
  ref = fx.hf_model(moe=False, seed=2, tie=True)
  ref.save_pretrained(tmp_path)
  ours = from_pretrained(tmp_path, dtype=jnp.float32)
  assert ours.config.tie_word_embeddings and ours.lm_head is None
  assert fx.rel_err(ours(**batch), fx.hf_logits(ref, batch), batch["attention_mask"]) < FP32_TOL


def test_placeholder_count_mismatch_is_a_clear_error(pair, batch):
  _, _, ours = pair
  bad = dict(batch, input_ids=np.where(batch["input_ids"] == fx.IMG, 1, batch["input_ids"]))
  bad["input_ids"][0, 4] = fx.IMG  # one image token left where the grids need 10
  with pytest.raises(InputError, match="image"):
    prepare_inputs(ours.config, **bad)
  with pytest.raises(InputError, match=r"shape \(5, 1536\) does not match"):
    prepare_inputs(ours.config, **dict(batch, pixel_values=batch["pixel_values"][:5]))
