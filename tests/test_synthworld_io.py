"""SynthWorld through the code real videos and checkpoints use: mp4 files read by read_video (decord)
against the in-memory clips, and the word-level tokenizer through load_tokenizer, check_tokenizer and
Qwen3VLProcessor."""

import json
import os

import numpy as np
import pytest

from taskmem_jax.envs.synthworld import (build_synthworld_tokenizer, generate, make_tasks, render_clip,
                                         synthworld_model_config, write_stream)
from taskmem_jax.envs.synthworld.tokenizer import (CONTROL_TOKENS, DETOKENIZE_RULES, UNK, detokenize, pre_tokenize,
                                                   token_ids, vocabulary)
from taskmem_jax.envs.synthworld.world import WorldConfig
from taskmem_jax.envs.synthworld.prompt import PROMPT
from taskmem_jax.memory.prompt import DEFAULT, PREAMBLE, read_window_prompt, window_messages
from taskmem_jax.models.qwen3_vl.config import PRESETS
from taskmem_jax.processing import MediaError, Qwen3VLProcessor, check_tokenizer, load_tokenizer, read_video
from taskmem_jax.processing.tokenizer import QWEN_SPECIAL_IDS, TokenizerError
from test_synthworld import read_frame

# Codec loss of write_stream's crf-0 H.264 (yuv420p). Luma is lossless, so pixels away from colour edges
# only carry RGB <-> YUV rounding (measured <= 2 levels). Chroma is stored at half resolution and
# interpolated back by the decoder, so within 2 px of a colour edge pixels move by up to ~40 levels
# (measured 39, e.g. blue next to the dark floor); few pixels are that close, so the mean stays ~1.5.
INTERIOR_MAX, EDGE_MAX, MEAN_MAX = 3, 48, 2.5


@pytest.fixture(scope="module")
def stream():
  return generate(4, WorldConfig(num_clips=6))


@pytest.fixture(scope="module")
def mp4(stream, tmp_path_factory):
  return write_stream(stream, tmp_path_factory.mktemp("synthworld") / "stream.mp4")


def _interior(frames: np.ndarray) -> np.ndarray:
  """bool [T, H, W]: pixels with no colour change within 2 px."""
  padded = np.pad(frames, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  h, w = frames.shape[1:3]
  same = np.ones(frames.shape[:3], bool)
  for dy in range(5):
    for dx in range(5):
      same &= (padded[:, dy:dy + h, dx:dx + w] == frames).all(-1)
  return same


@pytest.mark.parametrize("start, end, fps", [
    (0, 10, 2), (40, 50, 2), (0, 50, 2), (30, 60, 2), (55, 60, 2), (None, None, 2), (10, 60, 1), (3.3, 17.1, 2),
    (20, 30, 0.7), (50, 70, 2),
])
def test_mp4_read_back_equals_the_in_memory_clip(stream, mp4, start, end, fps):
  decoded = read_video(mp4, start=start, end=end, fps=fps)
  rendered = render_clip(stream, start, end, fps=fps)
  np.testing.assert_array_equal(decoded.frame_indices, rendered.frame_indices)
  assert (decoded.source_fps, decoded.start, decoded.end, decoded.first_frame) == (
      rendered.source_fps, rendered.start, rendered.end, rendered.first_frame)
  assert decoded.timestamps() == rendered.timestamps()
  assert decoded.timestamps(absolute=True) == rendered.timestamps(absolute=True)
  assert decoded.frames.shape == rendered.frames.shape and decoded.frames.dtype == np.uint8
  diff = np.abs(decoded.frames.astype(int) - rendered.frames.astype(int))
  assert diff[_interior(rendered.frames)].max() <= INTERIOR_MAX
  assert diff.max() <= EDGE_MAX and diff.mean() <= MEAN_MAX
  # Despite the loss, every frame still shows the same objects, people, loads and sign digit.
  for got, want in zip(decoded.frames, rendered.frames):
    assert read_frame(got) == read_frame(want)


def test_render_clip_rejects_windows_as_read_video_does(stream, mp4):
  for start, end in ((60, 70), (-1, 5), (5, 5), (float("nan"), 3)):
    for read in (lambda: read_video(mp4, start=start, end=end), lambda: render_clip(stream, start, end)):
      with pytest.raises(MediaError, match="not inside"):
        read()


# --- tokenizer ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("synthworld_tokenizer")
  build_synthworld_tokenizer(path)
  return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
  return load_tokenizer(tokenizer_dir)


def test_ids_config_and_checkpoint_files(tokenizer, tokenizer_dir, tmp_path):
  config = synthworld_model_config()
  ids = token_ids()
  words = vocabulary()
  assert words[0] == UNK and words[1:] == sorted(words[1:])
  assert list(ids)[len(words):] == list(CONTROL_TOKENS) == list(QWEN_SPECIAL_IDS)
  assert config.text.vocab_size == len(ids) == len(tokenizer.get_vocab())
  assert (config.image_token_id, config.video_token_id) == (ids["<|image_pad|>"], ids["<|video_pad|>"])
  assert config.text.hidden_size == PRESETS["tiny"].text.hidden_size  # only the vocabulary changed
  check_tokenizer(tokenizer, config)
  with pytest.raises(TokenizerError, match="model config"):
    check_tokenizer(tokenizer, PRESETS["tiny"])
  assert tokenizer.get_vocab() == ids
  assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == ("<|im_end|>", "<|endoftext|>", UNK)
  assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
  assert build_synthworld_tokenizer(tmp_path) == {t: ids[t] for t in CONTROL_TOKENS}
  assert (tmp_path / "tokenizer.json").read_text() == (tokenizer_dir / "tokenizer.json").read_text()
  assert read_window_prompt(str(tmp_path)) == PROMPT  # the words this vocabulary covers travel with it
  # Extra words extend the vocabulary, split as encoding splits them.
  extra = ["zebra", "face_3", "<|im_end|>"]
  assert set(vocabulary(extra)) - set(words) == {"zebra", "face", "|", "im"}
  assert synthworld_model_config(extra_words=extra).text.vocab_size == len(ids) + 4


def test_every_generated_text_round_trips_without_unk(tokenizer, stream):
  tasks = make_tasks(stream)
  texts = [f.text for f in stream.facts] + [q.prompt() for questions in tasks.values() for q in questions]
  memory = " ".join(f.text for f in stream.facts[:4])
  texts.append("<think>\nperson 2 moves.\n</think>\n\n" + json.dumps({"description": memory}))
  texts.append(PREAMBLE + PROMPT.instruction_text([memory], [q.text for q in tasks["ocr"][:5]]))
  for text in texts:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids, [p for p in pre_tokenize(text) if p not in token_ids()]
    assert tokenizer.decode(ids) == text
    assert detokenize(tokenizer.convert_ids_to_tokens(ids)) == text


def test_the_vocabulary_holds_synthworld_s_prompt_not_the_project_default():
  # Rewording the project's default prompt must leave SynthWorld's vocabulary (and the shipped policies,
  # trained on it) alone: the vocabulary covers PROMPT, which the assets record, and not DEFAULT's words.
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
  for name in ("synthworld_policy", "synthworld_phase_one"):
    assert read_window_prompt(os.path.join(root, name)) == PROMPT, name
  words = set(vocabulary())
  pieces = lambda prompt: {piece for word in prompt.words() for piece in pre_tokenize(word)}
  assert pieces(PROMPT) <= words
  assert pieces(DEFAULT) - words, "DEFAULT's own rules are expected to hold words SynthWorld never sees"


def test_unknown_words_and_the_detokenization_rules(tokenizer):
  ids = tokenizer.encode("person 2 juggles the red circle", add_special_tokens=False)
  assert ids.count(tokenizer.unk_token_id) == 1 and tokenizer.decode(ids) == "person 2 [UNK] the red circle"
  cases = {  # tokens -> text, one case per rule
      ("the", "sign", ".", "who", "?", "[", "a", "]", "(", "the", ")"): "the sign. who? [a] (the)",
      ("<", "1", "2", ".", "5", "seconds", ">", "0", "0", ":", "1", "0"): "<12.5 seconds> 00:10",
      ("north", "-", "west", "\n", "-", "a", "`", "`", "`", "json"): "north-west\n- a```json",
      ("<|im_start|>", "user", "\n", "<think>", "a", "</think>"): "<|im_start|>user\n<think>a</think>",
      ("{", '"', "description", '"', ":", '"', "a", ".", '"', "}"): '{"description": "a."}',
      ("say", '"', "the", "video", '"', "to", "person", "2"): 'say "the video" to person 2',
  }
  for tokens, text in cases.items():
    assert detokenize(list(tokens)) == text
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids(list(tokens))) == text
  assert len(DETOKENIZE_RULES) == 7


def test_saved_decoder_applies_the_documented_rules(tokenizer):
  """tokenizer.json's decoder (Oniguruma regexes in Rust) and detokenize (Python re) agree on random
  token sequences, punctuation-heavy ones included."""
  rng = np.random.default_rng(0)
  tokens = list(token_ids())
  marks = [t for t in tokens if len(t) == 1 and not t.isalnum()] + list(CONTROL_TOKENS)
  for _ in range(300):
    pool = marks if rng.random() < 0.5 else tokens
    seq = [pool[i] for i in rng.integers(len(pool), size=int(rng.integers(1, 25)))]
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids(seq)) == detokenize(seq), seq


def test_processor_builds_a_window_prompt_without_unk(tokenizer, stream):
  config = synthworld_model_config()
  processor = Qwen3VLProcessor(tokenizer, config)
  clip = render_clip(stream, 10, 30)
  questions = [q.text for q in make_tasks(stream, 3)["spatial"]]
  messages = window_messages({"type": "video", "video": clip}, [stream.facts[0].text], questions,
                              prompt=PROMPT)
  batch = processor(messages, thinking=True)
  ids = batch["input_ids"][0]
  assert tokenizer.unk_token_id not in ids.tolist()
  groups = len(clip.frame_indices) // config.vision.temporal_patch_size
  tokens_per_group = (64 // 16) ** 2 // 4  # 64x64 frames: 4x4 patches, merged 2x2
  assert (ids == config.video_token_id).sum() == groups * tokens_per_group
  assert batch["video_grid_thw"].tolist() == [[groups, 4, 4]]
  assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n<think>\n")
