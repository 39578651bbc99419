"""SynthWorld SFT data (experiments/make_sft_data.py) and the shipped policy folder."""

import os

import numpy as np
import pytest

from experiments.make_sft_data import LazyVideoExample, make_examples, window_records
from taskmem_jax.envs.synthworld import (
  WorldConfig,
  build_synthworld_tokenizer,
  generate,
  policy_render,
  synthworld_model_config,
)
from taskmem_jax.envs.synthworld.prompt import PROMPT
from taskmem_jax.envs.synthworld.teacher import count_tokens, teacher_memory
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.processing.tokenizer import check_tokenizer, load_tokenizer

POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "synthworld_policy")


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
  path = tmp_path_factory.mktemp("sw_tok")
  build_synthworld_tokenizer(path)
  assert read_window_prompt(str(path)) == PROMPT  # the prompt make_examples writes the windows in
  return Qwen3VLProcessor(load_tokenizer(path), synthworld_model_config())


def test_examples_train_on_the_teacher_response_only(processor):
  _, memory, records = window_records(3, num_clips=4)
  examples = make_examples(processor, [3], prompt=PROMPT, num_clips=4)
  assert len(examples) == len(records) == len(memory) >= 3
  tokenizer = processor.tokenizer
  im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
  for example, (window, _, target) in zip(examples, records):
    mask = example["loss_mask"].astype(bool)
    n = int(mask.sum())
    assert mask[-n:].all() and not mask[:-n].any()  # one contiguous span at the end
    ids = example["input_ids"][mask]
    assert ids[-1] == im_end
    assert tokenizer.decode(ids[:-1].tolist(), skip_special_tokens=False) == target
    prompt = tokenizer.decode(example["input_ids"][~mask].tolist(), skip_special_tokens=False)
    previous = memory.previous(window.clip)
    assert target.endswith('"}') and memory.get(window.clip) in target
    if previous:
      assert "[Description of the preceding part]:\n" + " ".join(previous) in prompt
    assert example["video_grid_thw"].shape == (1, 3)
    assert np.isfinite(example["pixel_values_videos"]).all()
  assert any(memory.previous(w.clip) for w, _, _ in records)


def test_shipped_policy_loads():
  from taskmem_jax.models import qwen3_vl

  assert os.path.isfile(os.path.join(POLICY, "config.json")), "assets/synthworld_policy is missing"
  size = sum(os.path.getsize(os.path.join(POLICY, f)) for f in os.listdir(POLICY))
  assert size < 12 * 1024**2
  model = qwen3_vl.from_pretrained(POLICY)
  processor = Qwen3VLProcessor.from_pretrained(POLICY)
  check_tokenizer(processor.tokenizer, model.config)
  assert model.config.text.vocab_size == synthworld_model_config().text.vocab_size
  # The policy's world is recorded, and its vision tower puts one token on each region of that world.
  render = policy_render(POLICY)
  assert model.config.vision.spatial_merge_size == synthworld_model_config(render=render).vision.spatial_merge_size


def test_time_order_teacher_keeps_the_earliest_facts_that_fit():
  stream = generate(5, WorldConfig(num_clips=3))
  for clip in range(3):
    facts = stream.facts_in(clip)
    expected, used = [], 0
    for fact in facts:  # greedy in time order: a fact that does not fit is skipped, later ones may fit
      if used + count_tokens(fact.text) <= 25:
        expected.append(fact.text)
        used += count_tokens(fact.text)
    for seed in (0, 1):  # the rng is not used
      got = teacher_memory(stream, clip, budget_tokens=25, rng=np.random.default_rng(seed), order="time")
      assert got == " ".join(expected)
  # The default stays the random subset.
  a = teacher_memory(stream, 1, budget_tokens=25, rng=np.random.default_rng(3))
  assert a == teacher_memory(stream, 1, budget_tokens=25, rng=np.random.default_rng(3), order="random")
  with pytest.raises(ValueError, match="order"):
    teacher_memory(stream, 0, budget_tokens=25, rng=np.random.default_rng(0), order="sorted")


def test_lazy_examples_equal_the_eager_ones(processor):
  eager = make_examples(processor, [3, 4], prompt=PROMPT, num_clips=3, teacher_order="time")
  lazy = make_examples(processor, [3, 4], prompt=PROMPT, num_clips=3, teacher_order="time", lazy=True)
  assert len(eager) == len(lazy) and all(isinstance(e, LazyVideoExample) for e in lazy)
  for e, z in zip(eager, lazy):
    assert set(e) == set(z)
    for key in e:
      np.testing.assert_array_equal(e[key], z[key])


def test_schematic_render_examples(processor):
  (example,) = make_examples(processor, [3], prompt=PROMPT, num_clips=1, render="schematic")
  assert example["video_grid_thw"].tolist() == [[10, 6, 6]]  # 96x96 frames: one 16-px patch per cell


def test_vision_probe_clips_show_the_target_colour():
  from experiments.vision_probe import probe_clip
  from taskmem_jax.envs.synthworld import WorldConfig, generate
  from taskmem_jax.envs.synthworld.render import COLOURS

  for seed in range(40):
    made = probe_clip(generate(seed, WorldConfig(num_clips=1)), "cell", seed, random_cell=True)
    if made is None:
      continue
    clip, colour = made
    hit = np.all(clip.frames == np.array(COLOURS[colour], np.uint8), axis=-1)
    assert hit.sum(axis=(1, 2)).tolist() == [100] * len(clip.frames)  # one 10x10 block per frame
    fill, same = probe_clip(generate(seed, WorldConfig(num_clips=1)), "fill", seed)
    assert same == colour and np.all(fill.frames == np.array(COLOURS[colour], np.uint8))
    return
  raise AssertionError("no clip starting with an object appearing in 40 seeds")
