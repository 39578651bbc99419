"""The jitted scan rollout against the Python-loop reference, and its buffer prompts against the
compact prompts."""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import describe
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.prompt import DEFAULT, read_window_prompt, window_messages
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.sampling import SamplingParams

from helpers import CLIP_GRID

POLICY = os.path.join(os.path.dirname(__file__), "..", "assets", "synthworld_policy")
N_CLIPS, STREAMS, WIDTH, STEPS = 7, 2, 6, 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  checkpoint = describe.tiny_checkpoint(str(tmp_path_factory.mktemp("rollout")))
  model = qwen3_vl.from_pretrained(checkpoint, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  templates = R.build_templates(processor, CLIP_GRID, [2.5, 7.5], WIDTH, prompt=DEFAULT)
  rng = np.random.default_rng(0)
  pixels = rng.standard_normal((STREAMS, N_CLIPS, int(np.prod(CLIP_GRID)), 1536)).astype(np.float32)
  features, deepstack = R.encode_clips(model, pixels, CLIP_GRID)
  stop = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
  params = SamplingParams(STEPS, stop_token_ids=(stop,), pad_token_id=processor.pad_token_id)
  return model, processor, templates, features, deepstack, params


def format_from_first_window(setup):
  """A token format that the random model's greedy first response satisfies (row 0): its once-only
  token plays </think>, and a later token plays the closing quote, so memories flow into the ring."""
  model, _, templates, features, deepstack, params = setup
  probe = R.rollout_reference(model, templates[-1], features[:1, :1], [d[:1, :1] for d in deepstack], params,
                              R.TokenFormat(-1, (), (-1,)))
  row = probe.tokens[0, 0]
  values, counts = np.unique(row[:4], return_counts=True)
  once = [v for v in row[:4] if counts[values == v][0] == 1 and (row == v).sum() == 1]
  end = int(np.argmax(row == once[0]))
  close = next(int(v) for v in row[end + 3:] if v != once[0])
  return R.TokenFormat(int(once[0]), (), (close,))


@pytest.mark.slow
def test_scan_equals_python_loop(setup):
  """Bucketed windows (the first 4 in buffers of their own size), chunks of 3 windows, streams of 7 and 5
  clips: the same tokens as the loop over compact prompts, stream by stream; resuming at clip 5 from the ring
  gives the same windows again."""
  model, _, templates, features, deepstack, params = setup
  fmt = format_from_first_window(setup)
  chunks = []
  scan = R.rollout(model, templates, features, deepstack, params, fmt, num_clips=[N_CLIPS, 5], chunk=3,
                   on_chunk=lambda clips, out: chunks.append(clips))
  loop = R.rollout_reference(model, templates[-1], features, deepstack, params, fmt)
  short = R.rollout_reference(model, templates[-1], features[1:, :5], [d[1:, :5] for d in deepstack], params, fmt)
  assert (scan.memory_lengths > 0).any(), "no memory was ever written: the test would not exercise the ring"
  assert chunks == [[0], [1], [2], [3], [4, 5, 6]]
  np.testing.assert_array_equal(scan.tokens[:, 0], loop.tokens[:, 0])
  np.testing.assert_array_equal(scan.tokens[:5, 1], short.tokens[:, 0])
  assert not scan.tokens[5:, 1].any() and not scan.lengths[5:, 1].any()  # the short stream has ended
  np.testing.assert_array_equal(scan.lengths[:, 0], loop.lengths[:, 0])
  np.testing.assert_array_equal(scan.memories[:, 0], loop.memories[:, 0])
  np.testing.assert_array_equal(scan.memory_lengths[:, 0], loop.memory_lengths[:, 0])
  np.testing.assert_allclose(scan.logprobs[:, 0], loop.logprobs[:, 0], atol=1e-4)
  # Resumed at clip 5 from the ring the first 5 windows left (row 0 only: the short stream is done).
  ring = np.zeros((1, 4, WIDTH), np.int32), np.zeros((1, 4), np.int32)
  for k in range(5):
    ring = tuple(np.asarray(x) for x in R.push(*ring, scan.memories[k, :1], scan.memory_lengths[k, :1]))
  resumed = R.rollout(model, templates, features[:1], [d[:1] for d in deepstack], params, fmt, first_clip=5,
                      ring=ring, chunk=3)
  np.testing.assert_array_equal(resumed.tokens, scan.tokens[5:, :1])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official", "video_last"])
def test_buffer_step_logits_equal_the_compact_prompt(setup, layout):
  model, processor, templates, features, deepstack, params = setup
  template = templates[-1]
  if layout != DEFAULT.layout:
    template = R.build_template(processor, CLIP_GRID, [2.5, 7.5], WIDTH,
                                prompt=dataclasses.replace(DEFAULT, layout=layout))
  ring = np.zeros((1, 4, WIDTH), np.int32)
  ring[0, 2, :3], ring[0, 3, :5] = [11, 12, 13], [21, 22, 23, 24, 25]  # two memories, right-aligned
  lengths = np.array([[0, 0, 3, 5]], np.int32)
  for step in (1, 6):  # window filling up, and full
    inputs, clip_of_slot = R.window_inputs(template, step, jnp.asarray(ring), jnp.asarray(lengths))
    feats, ds = R.gather_features(features[:1], [d[:1] for d in deepstack], clip_of_slot)
    buffer_logits = np.asarray(model.forward_from_features(inputs, feats, ds))[0, -1]
    ids, clips = R.compact_prompt(template, step, ring[0], lengths[0])
    compact_features = jnp.concatenate([features[0, c] for c in clips])
    compact_ds = [jnp.concatenate([d[0, c] for c in clips]) for d in deepstack]
    compact = qwen3_vl.prepare_inputs(model.config, ids[None], video_grid_thw=[CLIP_GRID] * len(clips),
                                      require_pixels=False)
    expected = np.asarray(model.forward_from_features(compact, compact_features, compact_ds))[0, -1]
    np.testing.assert_allclose(buffer_logits, expected, rtol=1e-5, atol=1e-5)
    assert len(clips) == min(step + 1, 5)
    # The compact prompt holds both memories, joined by the template's separator.
    joined = [11, 12, 13] + template.ids[template.separator_of == 3].tolist() + [21, 22, 23, 24, 25]
    assert any(ids[i:i + len(joined)].tolist() == joined for i in range(len(ids)))


def test_cut_memory():
  fmt = R.TokenFormat(think_end=9, prefix=(7, 8), close=(5, 6), stops=(2,))
  tokens = jnp.asarray([
      [1, 9, 7, 8, 3, 4, 5, 6, 2],   # ok: memory [3, 4]
      [1, 9, 7, 8, 5, 6, 2, 0, 0],   # empty memory
      [9, 9, 7, 8, 3, 5, 6, 2, 0],   # two think ends
      [1, 9, 7, 2, 3, 5, 6, 2, 0],   # prefix broken
      [1, 9, 7, 8, 3, 4, 4, 4, 4],   # never closed
      [9, 7, 8, 1, 2, 3, 4, 5, 6],   # too long for width 3
      [1, 9, 7, 8, 3, 5, 2, 0, 0],   # half a close (cut by the budget): not JSON
      [1, 9, 7, 8, 3, 5, 6, 3, 2],   # text after the close
      [0, 1, 9, 7, 8, 3, 3, 5, 6],   # closed at the very end: ok
  ])
  memory, length = R.cut_memory(tokens, fmt, 3)
  assert np.asarray(length).tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 2]
  assert np.asarray(memory)[0].tolist() == [3, 4, 0] and np.asarray(memory)[8].tolist() == [3, 3, 0]


@pytest.mark.slow
def test_samples_per_stream_are_independent_trajectories(setup):
  model, _, templates, features, deepstack, params = setup
  fmt = format_from_first_window(setup)
  sampled = SamplingParams(STEPS, temperature=1.0, stop_token_ids=params.stop_token_ids,
                           pad_token_id=params.pad_token_id)
  out = R.rollout(model, templates, features[:, :3], [d[:, :3] for d in deepstack], sampled, fmt, seed=4,
                  num_samples=3)
  assert out.tokens.shape == (3, STREAMS * 3, STEPS)
  assert len({out.tokens[0, r].tobytes() for r in range(3)}) > 1  # one stream's samples differ
  again = R.rollout(model, templates, features[:, :3], [d[:, :3] for d in deepstack], sampled, fmt, seed=4,
                    num_samples=3, chunk=1)
  np.testing.assert_array_equal(again.tokens, out.tokens)  # reproducible, however it is chunked
  greedy = R.rollout(model, templates, features[:, :3], [d[:, :3] for d in deepstack], params, fmt, num_samples=2)
  np.testing.assert_array_equal(greedy.tokens[:, 0::2], greedy.tokens[:, 1::2])  # and agree when greedy


@pytest.mark.parametrize("layout", ["official", "video_last"])
def test_compact_prompt_is_the_checkpoints_window_prompt(layout):
  """Both layouts, with the shipped SynthWorld tokenizer (word-level, so splicing memories as token ids is
  exact): the buffer template with its masked slots removed tokenizes exactly as the processor renders
  memory.window_messages with the same memories and clips."""
  processor = Qwen3VLProcessor.from_pretrained(POLICY)
  prompt = dataclasses.replace(read_window_prompt(POLICY), layout=layout)
  grid, stamps = (2, 6, 6), [2.5, 7.5]
  template = R.build_template(processor, grid, stamps, 16, prompt=prompt)
  memories = ["person 2 appears in the north-west.", "the sign changes from 3 to 5."]
  encode = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]
  for step in (0, 2, 6):
    shown = memories if step else []
    ring, lengths = np.zeros((4, 16), np.int32), np.zeros(4, np.int32)
    for slot, text in zip((2, 3), shown):
      ring[slot, :len(encode(text))], lengths[slot] = encode(text), len(encode(text))
    ids, clips = R.compact_prompt(template, step, ring, lengths)
    n = len(clips)
    video = {"type": "video", "pixel_values": np.zeros((int(np.prod(grid)) * n, processor.config.vision.patch_dim),
                                                       np.float32),
             "grid_thw": [grid[0] * n, *grid[1:]], "timestamps": [10.0 * j + s for j in range(n) for s in stamps]}
    expected = processor([window_messages(video, shown, None, prompt=prompt)], thinking=True)["input_ids"][0]
    assert ids.tolist() == np.asarray(expected).tolist(), f"{layout} step {step}"
  first_video, first_memory = (int(np.argmax(x)) for x in (template.clip_slot >= 0, template.memory_slot >= 0))
  assert (first_video < first_memory) == (layout == "official")
