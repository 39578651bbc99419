"""Tiny tokenizer ids and round trip, the chat templates against hand-written prompts, and the errors of
load_tokenizer / check_tokenizer."""

import json
import shutil

import numpy as np
import pytest

from taskmem_jax.models.qwen3_vl import preset
from taskmem_jax.models.qwen3_vl.config import TextConfig
from taskmem_jax.processing.tokenizer import (CHAT_TEMPLATE, QWEN_SPECIAL_IDS, THINKING_CHAT_TEMPLATE, TokenizerError,
                                              apply_chat_template, build_tiny_tokenizer, check_tokenizer,
                                              load_tokenizer)

TINY = preset("tiny")
TINY_IDS = {"<|endoftext|>": 255, "<|im_start|>": 254, "<|im_end|>": 249, "<|vision_start|>": 252,
            "<|vision_end|>": 253, "<|vision_pad|>": 248, "<|image_pad|>": 250, "<|video_pad|>": 251,
            "<think>": 247, "</think>": 246}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tiny_tokenizer")
  assert build_tiny_tokenizer(TINY, path) == TINY_IDS
  return path


@pytest.fixture
def tokenizer(tiny_dir):
  return load_tokenizer(tiny_dir)


def test_tiny_tokenizer_ids(tokenizer, tiny_dir):
  assert {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_IDS} == TINY_IDS
  # The BPE fills every other id below vocab_size.
  assert sorted(tokenizer.get_vocab().values()) == list(range(TINY.text.vocab_size))
  assert tokenizer.pad_token_id == 255 and tokenizer.eos_token_id == 249
  assert tokenizer.chat_template == CHAT_TEMPLATE
  check_tokenizer(tokenizer, TINY)
  with open(tiny_dir / "tokenizer.json") as f:
    first = f.read()
  build_tiny_tokenizer(TINY, tiny_dir)
  with open(tiny_dir / "tokenizer.json") as f:
    assert f.read() == first  # deterministic


def test_round_trip_and_single_token_specials(tokenizer):
  text = 'The quick brown fox, 3.5 years old, said: "Hello\tworld!"\n(ok) [x] {y} ~`@#$%^&*_+=|\\/<>?\'  end'
  ids = tokenizer.encode(text, add_special_tokens=False)
  assert tokenizer.decode(ids) == text
  assert len(ids) < len(text)  # the merges do something
  prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<think>\n</think>"
  ids = tokenizer.encode(prompt, add_special_tokens=False)
  assert ids[0] == 254 and [252, 250, 253] == ids[ids.index(252):ids.index(252) + 3] and ids[-1] == 246
  for token, token_id in TINY_IDS.items():
    assert tokenizer.encode(f"a{token}b", add_special_tokens=False)[1:-1] == [token_id]
  assert tokenizer.decode(ids) == prompt
  # Qwen keeps the think tags when special tokens are skipped.
  assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi\n<think>\n</think>"


def test_qwen_layout_uses_the_hub_ids(tmp_path):
  config = preset("2B")
  assert build_tiny_tokenizer(config, tmp_path) == QWEN_SPECIAL_IDS
  tokenizer = load_tokenizer(tmp_path)
  check_tokenizer(tokenizer, config)
  text = "Über café – naïve 東京"  # room for all 256 bytes here
  assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_too_small_vocab():
  config = TINY.replace(text=TextConfig(**{**TINY.text.__dict__, "vocab_size": 100}), image_token_id=90,
                        video_token_id=91, vision_start_token_id=92, vision_end_token_id=93)
  with pytest.raises(TokenizerError, match="vocab_size=100 is too small.*needs 107 ids"):
    build_tiny_tokenizer(config, "/nonexistent")


IMAGE = {"type": "image", "image": np.zeros((4, 4, 3), np.uint8)}
VIDEO = {"type": "video", "video": "clip.mp4"}
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": [IMAGE, {"type": "text", "text": "What is on the table?"}]},
    {"role": "assistant", "content": "A red cup."},
    {"role": "user", "content": [{"type": "text", "text": "And here?"}, VIDEO]},
]


def test_instruct_template(tokenizer):
  expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is on the table?<|im_end|>\n"
              "<|im_start|>assistant\nA red cup.<|im_end|>\n"
              "<|im_start|>user\nAnd here?<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
              "<|im_start|>assistant\n")
  assert apply_chat_template(tokenizer, CONVERSATION) == expected
  assert apply_chat_template(tokenizer, CONVERSATION[:3], add_generation_prompt=False) == expected[:expected.index(
      "<|im_start|>user\nAnd")]
  # No default system prompt; add_vision_id numbers the items.
  assert apply_chat_template(tokenizer, CONVERSATION[1:2], add_vision_id=True) == (
      "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>What is on the table?<|im_end|>\n"
      "<|im_start|>assistant\n")


def test_thinking_template(tokenizer):
  # The tiny checkpoint ships the Instruct template; thinking=True switches to the Thinking one.
  assert apply_chat_template(tokenizer, CONVERSATION[1:2]).endswith("<|im_end|>\n<|im_start|>assistant\n")
  turns = [
      {"role": "user", "content": [IMAGE, {"type": "text", "text": "Count the cups."}]},
      {"role": "assistant", "content": "<think>\nOne red cup.\n</think>\n\nOne."},
      {"role": "user", "content": "Sure?"},
  ]
  assert apply_chat_template(tokenizer, turns, thinking=True) == (
      "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Count the cups.<|im_end|>\n"
      "<|im_start|>assistant\nOne.<|im_end|>\n"  # reasoning of earlier turns is dropped
      "<|im_start|>user\nSure?<|im_end|>\n"
      "<|im_start|>assistant\n<think>\n")
  # After the last user turn the reasoning stays, from reasoning_content or from the content.
  reply = {"role": "assistant", "content": "Yes.", "reasoning_content": "Looked again."}
  assert apply_chat_template(tokenizer, turns + [reply], add_generation_prompt=False, thinking=True).endswith(
      "<|im_start|>assistant\n<think>\nLooked again.\n</think>\n\nYes.<|im_end|>\n")
  assert THINKING_CHAT_TEMPLATE != CHAT_TEMPLATE


def test_shipped_template_wins_unless_thinking_is_forced(tokenizer):
  tokenizer.chat_template = "{{ messages[0].role }}:{{ messages[0].content }}"
  messages = [{"role": "user", "content": "hi"}]
  assert apply_chat_template(tokenizer, messages) == "user:hi"
  expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  assert apply_chat_template(tokenizer, messages, thinking=False) == expected


def test_chat_template_json_is_picked_up(tiny_dir, tmp_path):
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tiny_dir / name, tmp_path / name)
  with open(tmp_path / "chat_template.json", "w") as f:
    json.dump({"chat_template": "shipped {{ messages | length }}"}, f)
  assert apply_chat_template(load_tokenizer(tmp_path), [{"role": "user", "content": "x"}]) == "shipped 1"


def test_check_tokenizer_errors(tokenizer):
  with pytest.raises(TokenizerError, match=r"<\|image_pad\|>: the tokenizer gives id 250 but the model config's "
                                           r"image_token_id is 249"):
    check_tokenizer(tokenizer, TINY.replace(image_token_id=249))
  with pytest.raises(TokenizerError, match=r"<\|vision_end\|>: .*gives id 253 .*vision_end_token_id is 200"):
    check_tokenizer(tokenizer, TINY.replace(vision_end_token_id=200))
  small = TINY.replace(text=TextConfig(**{**TINY.text.__dict__, "vocab_size": 255}))
  with pytest.raises(TokenizerError, match="id 255, beyond the model's text_config.vocab_size=255"):
    check_tokenizer(tokenizer, small)


def test_load_tokenizer_errors(tmp_path):
  missing = tmp_path / "nope"
  with pytest.raises(FileNotFoundError, match=f"{missing}: checkpoint directory not found"):
    load_tokenizer(missing)
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: no tokenizer files \(looked for tokenizer.json or "
                                              r"vocab.json \+ merges.txt\)"):
    load_tokenizer(tmp_path)
  (tmp_path / "vocab.json").write_text("{}")  # half of the slow pair is not enough
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    load_tokenizer(tmp_path)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(TokenizerError, match=f"{tmp_path}: transformers could not load the tokenizer"):
    load_tokenizer(tmp_path)
