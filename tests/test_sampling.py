"""generate(): greedy tokens and log-probs against transformers' generate, stopping, sampling
warpers against transformers' logits warpers, num_samples groups, the thinking budget, and
compilation counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

import hf_fixtures as fx
from taskmem_jax.models.qwen3_vl import from_pretrained
from taskmem_jax.sampling import TRACE_COUNTS, SamplingParams, geometric_bucket, generate
from taskmem_jax.sampling.sampler import _warp

STEPS = 10


@pytest.fixture(scope="module", params=["dense", "moe"])
def pair(request, tmp_path_factory):
  moe = request.param == "moe"
  ref = fx.hf_model(moe=moe, seed=1 if moe else 0)
  ref.generation_config.pad_token_id = fx.PAD
  path = tmp_path_factory.mktemp(request.param)
  ref.save_pretrained(path)
  return ref, from_pretrained(path, dtype=jnp.float32)


def hf_greedy(ref, batch, steps=STEPS):
  """transformers' greedy tokens [B, steps] and log-softmax of its raw logits at those tokens."""
  kwargs = {k: torch.from_numpy(v) for k, v in batch.items()}
  kwargs["mm_token_type_ids"] = torch.from_numpy(fx.mm_token_type_ids(batch["input_ids"]))
  with torch.no_grad():
    out = ref.generate(**kwargs, max_new_tokens=steps, do_sample=False, output_logits=True,
                       return_dict_in_generate=True)
  tokens = out.sequences[:, batch["input_ids"].shape[1]:].numpy()
  logprobs = np.stack([torch.log_softmax(l.float(), -1).numpy() for l in out.logits], 1)
  return tokens, np.take_along_axis(logprobs, tokens[..., None], -1)[..., 0]


def test_greedy_matches_transformers_generate(pair):
  """Image + two-frame-group video prompt and a left-padded row, dense and MoE."""
  ref, ours = pair
  batch = fx.inputs()
  expected_tokens, expected_logprobs = hf_greedy(ref, batch)
  out = generate(ours, batch, max_new_tokens=STEPS)
  np.testing.assert_array_equal(out.tokens, expected_tokens)
  np.testing.assert_allclose(out.logprobs, expected_logprobs, atol=1e-4)
  assert out.lengths.tolist() == [STEPS, STEPS]


@pytest.mark.slow
def test_stop_tokens_end_rows_and_pad(pair):
  _, ours = pair
  batch = fx.inputs()
  full = generate(ours, batch, max_new_tokens=STEPS)
  stop = int(full.tokens[0, 3])
  first = int(np.argmax(full.tokens[0] == stop))  # the token may already occur before step 3
  out = generate(ours, batch, max_new_tokens=STEPS, stop_token_ids=[stop], pad_token_id=7)
  assert out.lengths[0] == first + 1
  np.testing.assert_array_equal(out.tokens[0, : first + 1], full.tokens[0, : first + 1])
  assert (out.tokens[0, first + 1:] == 7).all() and (out.logprobs[0, first + 1:] == 0).all()
  row1_stops = np.flatnonzero(full.tokens[1] == stop)
  assert out.lengths[1] == (row1_stops[0] + 1 if len(row1_stops) else STEPS)


@pytest.mark.slow
def test_num_samples_share_a_prefill_and_group_by_prompt(pair):
  _, ours = pair
  batch = fx.inputs()
  out = generate(ours, batch, max_new_tokens=6, temperature=1.0, num_samples=4, seed=3)
  assert out.tokens.shape == (8, 6) and out.logprobs.shape == (8, 6) and out.lengths.shape == (8,)
  again = generate(ours, batch, max_new_tokens=6, temperature=1.0, num_samples=4, seed=3)
  np.testing.assert_array_equal(out.tokens, again.tokens)  # seeded
  assert len({tuple(r) for r in out.tokens[:4]}) > 1  # samples differ
  assert (out.logprobs <= 0).all()
  # top_k=1 sampling is greedy, for every sample of every prompt.
  greedy = generate(ours, batch, max_new_tokens=6)
  top1 = generate(ours, batch, max_new_tokens=6, temperature=0.7, top_k=1, num_samples=3)
  np.testing.assert_array_equal(top1.tokens, np.repeat(greedy.tokens, 3, axis=0))


@pytest.mark.slow
def test_sampled_logprobs_are_the_policy_logprobs(pair):
  """A sampled row's log-probs equal log_softmax(logits / T) of a full forward over its tokens."""
  _, ours = pair
  batch = fx.inputs(padded_row=False)
  batch = {k: v for k, v in batch.items() if k != "attention_mask"}
  temperature = 0.8
  out = generate(ours, batch, max_new_tokens=5, temperature=temperature, seed=1)
  ids = np.concatenate([batch["input_ids"], out.tokens.astype(np.int64)], axis=1)
  logits = np.asarray(ours(**dict(batch, input_ids=ids)))[0, batch["input_ids"].shape[1] - 1:-1]
  expected = jax.nn.log_softmax(logits / temperature, axis=-1)[np.arange(5), out.tokens[0]]
  np.testing.assert_allclose(out.logprobs[0], expected, atol=1e-4)


@pytest.mark.slow
def test_thinking_budget_forces_think_end(pair):
  _, ours = pair
  batch = fx.inputs()
  free = generate(ours, batch, max_new_tokens=STEPS)
  end = 201  # stands in for </think> in the tiny vocab; pick one greedy never emits early
  assert (free.tokens[:, :4] != end).all()
  out = generate(ours, batch, max_new_tokens=STEPS, thinking_budget=4, think_end_token_id=end)
  np.testing.assert_array_equal(out.tokens[:, :4], free.tokens[:, :4])
  assert (out.tokens[:, 4] == end).all() and (out.logprobs[:, 4] == 0).all()
  zero = generate(ours, batch, max_new_tokens=3, thinking_budget=0, think_end_token_id=end)
  assert (zero.tokens[:, 0] == end).all()


@pytest.mark.slow
def test_prompt_buckets_do_not_recompile(pair):
  _, ours = pair
  ids = np.arange(1, 31, dtype=np.int64)[None]
  generate(ours, {"input_ids": ids}, max_new_tokens=4)
  before = dict(TRACE_COUNTS)
  for length in (20, 37, 50):  # all in the 64 bucket
    generate(ours, {"input_ids": np.arange(1, length + 1, dtype=np.int64)[None]}, max_new_tokens=4)
  assert dict(TRACE_COUNTS) == before
  generate(ours, {"input_ids": np.arange(1, 71, dtype=np.int64)[None]}, max_new_tokens=4)  # bucket 96
  assert TRACE_COUNTS["prefill"] == before["prefill"] + 1
  assert TRACE_COUNTS["decode"] == before["decode"] + 1


def test_geometric_buckets():
  assert [geometric_bucket(n) for n in (1, 64, 65, 96, 97, 129, 200, 24576, 24577)] == [
      64, 64, 96, 96, 128, 192, 256, 24576, 32768]


@pytest.mark.parametrize("top_k,top_p", [(5, None), (None, 0.3), (None, 0.9), (7, 0.5)])
def test_warpers_match_transformers(top_k, top_p):
  logits = np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32) * 3
  params = SamplingParams(max_new_tokens=1, temperature=0.7, top_k=top_k, top_p=top_p)
  ours = np.asarray(_warp(jnp.asarray(logits), params))
  expected = torch.from_numpy(logits) / 0.7
  if top_k:
    expected = TopKLogitsWarper(top_k)(None, expected)
  if top_p:
    expected = TopPLogitsWarper(top_p)(None, expected)
  expected = expected.numpy()
  np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
  np.testing.assert_allclose(ours[~np.isinf(ours)], expected[~np.isinf(expected)], rtol=1e-6)


def test_bad_arguments_are_named(pair):
  _, ours = pair
  ids = np.ones((1, 5), np.int64)
  with pytest.raises(ValueError, match="temperature=-1"):
    generate(ours, {"input_ids": ids}, max_new_tokens=2, temperature=-1)
  with pytest.raises(ValueError, match="left-padded"):
    generate(ours, {"input_ids": ids, "attention_mask": np.array([[1, 1, 1, 1, 0]])}, max_new_tokens=2)
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    generate(ours, {"input_ids": ids}, max_new_tokens=0)


def test_chunked_decode_reports_progress_and_matches(pair):
  _, ours = pair
  batch = fx.inputs()
  whole = generate(ours, batch, max_new_tokens=STEPS, temperature=1.0, seed=5)
  reported = []
  generate(ours, batch, max_new_tokens=STEPS, temperature=1.0, seed=5, decode_chunk=3)  # compile once
  before = TRACE_COUNTS["decode"]
  chunked = generate(ours, batch, max_new_tokens=STEPS, temperature=1.0, seed=5, decode_chunk=3,
                     on_tokens=reported.append)
  assert TRACE_COUNTS["decode"] == before  # every chunk reuses one compilation
  assert reported == [3, 3, 3, 1]
  np.testing.assert_array_equal(chunked.tokens, whole.tokens)
  np.testing.assert_allclose(chunked.logprobs, whole.logprobs, atol=1e-6)


def test_cached_vision_features_give_the_same_tokens(pair):
  """Features encoded once per item (here: the image and the video separately) stand in for pixels."""
  _, ours = pair
  batch = fx.inputs()
  expected = generate(ours, batch, max_new_tokens=6)
  image_features, image_deepstack = ours.vision_features(batch["pixel_values"], batch["image_grid_thw"])
  video_features, video_deepstack = ours.vision_features(batch["pixel_values_videos"], batch["video_grid_thw"])
  features = jnp.concatenate([image_features, video_features])
  deepstack = [jnp.concatenate(pair) for pair in zip(image_deepstack, video_deepstack)]
  no_pixels = {k: v for k, v in batch.items() if not k.startswith("pixel_values")}
  out = generate(ours, no_pixels, max_new_tokens=6, vision_features=(features, deepstack))
  np.testing.assert_array_equal(out.tokens, expected.tokens)
  np.testing.assert_allclose(out.logprobs, expected.logprobs, atol=1e-5)
  with pytest.raises(ValueError, match="vision_features: 14 feature rows"):
    generate(ours, no_pixels, max_new_tokens=2, vision_features=(features[:14], [d[:14] for d in deepstack]))


def test_memory_budget_stops_the_span_after_think_end(pair):
  _, ours = pair
  batch = fx.inputs()
  free = generate(ours, batch, max_new_tokens=STEPS)
  think_end = int(free.tokens[0, 2])  # pretend row 0's third greedy token is </think>
  first = int(np.argmax(free.tokens[0] == think_end))
  stop = 199
  assert stop not in free.tokens
  out = generate(ours, batch, max_new_tokens=STEPS, stop_token_ids=[stop], think_end_token_id=think_end,
                 memory_budget=3)
  # </think> and two more tokens make a span of 3; then the stop is forced.
  np.testing.assert_array_equal(out.tokens[0, : first + 3], free.tokens[0, : first + 3])
  assert out.tokens[0, first + 3] == stop and out.lengths[0] == first + 4
  with pytest.raises(ValueError, match="needs stop_token_ids"):
    generate(ours, batch, max_new_tokens=2, memory_budget=3)
