"""SFT examples and the grain pipeline that batches them.

An example is a dict of NumPy arrays:
  input_ids [L] int32: prompt tokens followed by target tokens;
  loss_mask [L] int32: 1 on target tokens only;
  pixel_values_videos [N, C*T*P*P] float32 and video_grid_thw [n, 3] int64: optional, the prompt's videos.

Batches are right-padded to the smallest fixed length bucket that holds the batch's longest example,
so the jitted step compiles once per bucket (and once per distinct video grid, see `collate`).

JSONL source (`load_jsonl`): one object per line,
  {"messages": [chat messages; content items {"type": "text", "text": ...} or
                {"type": "video", "video": PATH, optional "video_start", "video_end", "fps", ...}],
   "target": "text the assistant should produce"}
The prompt is the processor's render of the messages with the Thinking template and its generation
prompt (it ends in "<|im_start|>assistant\\n<think>\\n"), so a target is the rest of the turn, e.g.
"...reasoning...\\n</think>\\n\\n{\\"description\\": ...}". <|im_end|> is appended to the target and
trained on, so the model learns to stop. Relative video paths are read from the JSONL file's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from taskmem_jax.models.qwen3_vl import ModelInputs, Qwen3VLConfig, prepare_inputs

IM_END = "<|im_end|>"


class DataError(ValueError):
  """A malformed example, JSONL line or batch."""


def make_example(prompt_ids, target_ids, pixel_values_videos=None, video_grid_thw=None) -> dict[str, np.ndarray]:
  """Prompt [Lp] + target [Lt] token ids -> an example with loss on the Lt target tokens."""
  prompt_ids, target_ids = np.asarray(prompt_ids, np.int32), np.asarray(target_ids, np.int32)
  if prompt_ids.ndim != 1 or target_ids.ndim != 1 or not len(target_ids):
    raise DataError(f"prompt and target ids must be non-empty 1-D; got {prompt_ids.shape}, {target_ids.shape}")
  example = {"input_ids": np.concatenate([prompt_ids, target_ids]),
             "loss_mask": np.concatenate([np.zeros(len(prompt_ids), np.int32), np.ones(len(target_ids), np.int32)])}
  if (pixel_values_videos is None) != (video_grid_thw is None):
    raise DataError("pixel_values_videos and video_grid_thw must be given together")
  if pixel_values_videos is not None:
    example["pixel_values_videos"] = np.asarray(pixel_values_videos, np.float32)
    example["video_grid_thw"] = np.asarray(video_grid_thw, np.int64).reshape(-1, 3)
  return example


def example_from_messages(processor, messages: list[dict[str, Any]], target: str) -> dict[str, np.ndarray]:
  """One conversation + target text -> an example (Thinking template, <|im_end|> appended to the target)."""
  batch = processor([messages], thinking=True)
  prompt = batch["input_ids"][0][batch["attention_mask"][0] > 0]
  tokenizer = processor.tokenizer
  im_end = tokenizer.convert_tokens_to_ids(IM_END)
  if not isinstance(im_end, int):
    raise DataError(f"the tokenizer has no {IM_END} token")
  # The end token is appended by id: tokenizing it as text depends on the tokenizer's special-token setup.
  target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"]) + [im_end]
  return make_example(prompt, target_ids, batch.get("pixel_values_videos"), batch.get("video_grid_thw"))


def load_jsonl(path: str, processor) -> list[dict[str, np.ndarray]]:
  """Reads a JSONL file of {"messages", "target"} (module docstring) into examples, in file order."""
  folder = os.path.dirname(os.path.abspath(path))
  examples = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        messages, target = record["messages"], record["target"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}:{number}: expected a JSON object with 'messages' and 'target' ({e!r})") from e
      if not isinstance(target, str) or not isinstance(messages, list):
        raise DataError(f"{path}:{number}: 'messages' must be a list and 'target' a string")
      try:
        examples.append(example_from_messages(processor, _resolve_paths(messages, folder), target))
      except ValueError as e:
        raise DataError(f"{path}:{number}: {e}") from e
  if not examples:
    raise DataError(f"{path}: no examples")
  return examples


def _resolve_paths(messages: list[dict], folder: str) -> list[dict]:
  out = []
  for message in messages:
    content = message.get("content")
    if isinstance(content, list):
      content = [dict(item, video=os.path.join(folder, item["video"]))
                 if isinstance(item, dict) and isinstance(item.get("video"), str) else item for item in content]
    out.append(dict(message, content=content))
  return out


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length."""
  for bucket in sorted(buckets):
    if bucket >= length:
      return bucket
  raise DataError(f"an example of {length} tokens is longer than the largest bucket {max(buckets)}; "
                  "add a larger bucket (examples are never truncated: that could cut a video's placeholders)")


def collate(examples: Sequence[dict[str, np.ndarray]], buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
  """Examples -> a batch: input_ids, attention_mask, loss_mask [B, bucket] (right-padded), and the videos.

  Vision is kept simple: either no example has a video, or all have videos with the same
  video_grid_thw (batch size 1 admits any grid). Pixels are concatenated in batch order, so each
  distinct grid is one more compile of the step, and mixed batches would double the compiles.
  """
  length = bucket_length(max(len(e["input_ids"]) for e in examples), buckets)
  batch = {"input_ids": np.full((len(examples), length), pad_id, np.int32),
           "attention_mask": np.zeros((len(examples), length), np.int32),
           "loss_mask": np.zeros((len(examples), length), np.int32)}
  for b, e in enumerate(examples):
    n = len(e["input_ids"])
    batch["input_ids"][b, :n] = e["input_ids"]
    batch["attention_mask"][b, :n] = 1
    batch["loss_mask"][b, :n] = e["loss_mask"]
  grids = [e["video_grid_thw"].tolist() if "video_grid_thw" in e else None for e in examples]
  if any(g != grids[0] for g in grids):
    raise DataError(f"a batch mixes video grids {grids}: examples of one batch must share the video grid "
                    "(or all have none); use batch_size=1 for variable grids")
  if grids[0] is not None:
    for key in ("pixel_values_videos", "video_features"):
      if key in examples[0]:
        batch[key] = np.concatenate([e[key] for e in examples])
    if "video_deepstack" in examples[0]:
      batch["video_deepstack"] = np.concatenate([e["video_deepstack"] for e in examples], axis=1)
    batch["video_grid_thw"] = np.concatenate([e["video_grid_thw"] for e in examples])
  return batch


def with_vision_features(examples, model, *, progress: bool = True) -> list[dict[str, np.ndarray]]:
  """Examples with their videos replaced by the model's vision features (for a frozen tower: computed
  once here instead of at every step): "video_features" [n, H] and "video_deepstack" [k, n, H] float32
  instead of "pixel_values_videos". One jitted encode per distinct video grid; examples are read one at
  a time, so lazy examples (pixels rendered on access) never all sit in memory."""
  from tqdm import tqdm

  out = []
  for e in tqdm(examples, desc="vision features", unit="example", disable=not progress):
    e = dict(e)
    if "pixel_values_videos" in e:
      features, deepstack = model.vision_features(e.pop("pixel_values_videos"), e["video_grid_thw"])
      e["video_features"] = np.asarray(features, np.float32)
      e["video_deepstack"] = np.stack([np.asarray(d, np.float32) for d in deepstack]) if deepstack else (
          np.zeros((0, *e["video_features"].shape), np.float32))
    out.append(e)
  return out


def batch_features(batch: dict[str, np.ndarray]):
  """(features [n, H], DeepStack features list of [n, H]) of a batch built from with_vision_features
  examples, or None for a batch with pixels or without video."""
  if "video_features" not in batch:
    return None
  return batch["video_features"], list(batch["video_deepstack"])


def make_dataset(examples: Sequence[dict[str, np.ndarray]], *, batch_size: int, buckets: Sequence[int],
                 pad_id: int, seed: int, num_epochs: int | None = None, group_by_grid: bool = False) -> grain.MapDataset:
  """Shuffled (reshuffled every epoch), repeated (None = forever), batched and padded examples.

  Iterate with iter(dataset); the iterator's get_state() / set_state() is a small JSON-able dict,
  saved with each model checkpoint. The last partial batch of the whole run is dropped.

  group_by_grid: batches are formed once, from a seeded shuffle, among examples of one video grid (each
  grid's leftover examples that cannot fill a batch are dropped); the batches are then shuffled every
  epoch. Batches of mixed grids would otherwise force batch_size=1.
  """
  if batch_size < 1:
    raise DataError(f"batch_size must be >= 1, got {batch_size}")
  if len(examples) < batch_size:
    raise DataError(f"{len(examples)} examples cannot fill a batch of {batch_size}")
  if not group_by_grid:
    return (grain.MapDataset.source(list(examples)).shuffle(seed=seed).repeat(num_epochs)
            .batch(batch_size, drop_remainder=True, batch_fn=lambda xs: collate(xs, buckets, pad_id)))
  groups: dict[tuple, list[int]] = {}
  for i in np.random.default_rng(seed).permutation(len(examples)).tolist():
    grid = examples[i]["video_grid_thw"].tolist() if "video_grid_thw" in examples[i] else None
    groups.setdefault(repr(grid), []).append(i)
  batches = [rows[k:k + batch_size] for rows in groups.values() for k in range(0, len(rows) - batch_size + 1, batch_size)]
  if not batches:
    raise DataError(f"no video grid has {batch_size} examples: group_by_grid cannot fill a batch")
  return (grain.MapDataset.source(batches).shuffle(seed=seed).repeat(num_epochs)
          .map(lambda rows: collate([examples[i] for i in rows], buckets, pad_id)))


def model_inputs(config: Qwen3VLConfig, batch: dict[str, np.ndarray]) -> tuple[ModelInputs, np.ndarray]:
  """Host-side index work for one batch -> (ModelInputs, loss_mask [B, L]) for the jitted step."""
  inputs = prepare_inputs(config, batch["input_ids"], batch["attention_mask"],
                          pixel_values_videos=batch.get("pixel_values_videos"),
                          video_grid_thw=batch.get("video_grid_thw"), require_pixels="video_features" not in batch)
  # Fixed dtypes, so equal shapes always hit the same compiled step.
  inputs = inputs._replace(position_ids=np.asarray(inputs.position_ids, np.int32),
                           rope_deltas=np.asarray(inputs.rope_deltas, np.int32))
  return inputs, batch["loss_mask"]
