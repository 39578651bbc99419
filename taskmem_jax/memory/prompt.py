"""The window prompt: what the memorization policy sees at each step of the stream.

Same structure and content as the official prompt (TaskMem memory/memory_process.py
``construct_episodic_input``; taskmem-spec.md §1.3), in our own words. One user turn, no system turn:
1. a preamble naming the two inputs (the video window and the preceding-description field);
2. the video window: up to 4 previous clips plus the new one;
3. the instruction: what to describe, the rules, the output format, an optional task-hint paragraph
   with up to 5 example questions (Phase Two), the previous memories joined by single spaces under
   ``[Description of the preceding part]:`` (possibly empty), and a closing request to describe only
   what is new, in one or two sentences.

Two layouts (``LAYOUTS``), chosen per checkpoint (``processor.window_layout``, from the checkpoint's
``window_prompt.json``; official when absent):
- "official": preamble, video, instruction (with the previous memories), as above.
- "video_last": preamble and the whole instruction (with the previous memories) first, then the video,
  then ``NEW_CLIP_REQUEST``. Same content; only the order differs, so the new clip sits at a fixed
  distance before the response instead of behind a variable-length block of memories. The tiny
  SynthWorld policy uses it: it learns to read single clips, and in the official layout it could not
  learn, on a CPU budget, to find the last 10 s behind the memories (experiments/train_synthworld_policy.py
  has the measurements). Real checkpoints keep the official layout.

All fixed text is ASCII, so even the tiny byte-level test tokenizer (printable ASCII only) keeps every
character. ``prompt_words()`` lists its words for word-level tokenizers.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from taskmem_jax.io import atomic_write_json
from taskmem_jax.memory.store import MAX_PREVIOUS
from taskmem_jax.processing.processor import item_kind

MAX_TASK_QUESTIONS = 5  # example questions in the task hint, as in the official Phase-Two data

PREAMBLE = ("You are given a video window in which people wear on-screen identity tags, and a field "
            "[Description of the preceding part] that may be empty.\n")

INSTRUCTION = """
Write a detailed, cohesive description of the video, naming people by their on-screen identity tags. \
Cover their appearance, their actions and movements, what they say, and how they behave towards each other.

Rules:
- Refer to a person only by the identity tag shown on screen; skip people without a tag.
- Keep the description continuous with the preceding description.
- Describe the events directly; do not begin with "The video".
- Skip an event or sentence that is cut off at the end of the video.
- After thinking, output a JSON object with the single key "description".

Output format:
```json
{"description": "..."}
```"""

TASK_HINT_HEADER = ("Task focus: your descriptions will be used to answer questions like the ones below. "
                    "Include what such questions need:")
TASK_HINT_BULLET = "- "

PRECEDING_HEADER = "[Description of the preceding part]:"

CLOSING = ("Describe only what the preceding description does not already cover, stay coherent with it, and "
           "do not repeat it. If it is empty, describe the video from the start. Write one or two sentences.")

NEW_CLIP_REQUEST = "Describe the last 10 seconds of the video."

LAYOUTS = ("official", "video_last")
LAYOUT_FILE = "window_prompt.json"  # {"layout": "video_last"} in a checkpoint directory

# Words and single punctuation marks: how prompt_words() splits text.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")


def task_hint(questions: list[str]) -> str:
  """The task-hint paragraph: the header, then one "- question" line per example question."""
  return "\n".join([TASK_HINT_HEADER] + [TASK_HINT_BULLET + q for q in questions])


def instruction_text(previous_memories: list[str], task_questions: list[str] | None = None) -> str:
  """The text after the video: instruction, [task hint], preceding descriptions, closing request.

  previous_memories: at most MAX_PREVIOUS non-empty descriptions, oldest first (EpisodicMemory.previous).
  task_questions: None or [] for no hint; else 1..MAX_TASK_QUESTIONS non-empty questions. More is an
  error rather than a silent truncation: which questions the policy sees is the caller's sampling
  decision (the official pipeline samples 5), and dropping some here would hide a bug in it.
  """
  previous = _check_list(previous_memories, "previous_memories", MAX_PREVIOUS)
  parts = [INSTRUCTION]
  if task_questions:
    parts.append(task_hint(_check_list(task_questions, "task_questions", MAX_TASK_QUESTIONS)))
  parts.append(PRECEDING_HEADER + "\n" + " ".join(previous))
  parts.append(CLOSING)
  return "\n\n".join(parts)


def window_messages(video_item: dict[str, Any], previous_memories: list[str],
                    task_questions: list[str] | None = None, *, layout: str) -> list[dict[str, Any]]:
  """One user turn for Qwen3VLProcessor: the preamble, the window's video item and the instruction, in
  the order of `layout` (LAYOUTS). Pass processor.window_layout, the layout the checkpoint was trained
  with; it has no default, so that a caller cannot silently get the wrong order.

  video_item: any video item the processor takes (a path with "video_start" / "video_end", a VideoClip,
  or a preprocessed {"pixel_values", "grid_thw", "timestamps"} item). Render it with thinking=True for
  the Thinking checkpoints, whose template opens the reply with <think>.
  """
  if item_kind(video_item) != "video":
    keys = sorted(video_item) if isinstance(video_item, dict) else type(video_item).__name__
    raise ValueError(f"video_item: expected a video message item ({{'type': 'video', ...}}), got {keys}")
  instruction = instruction_text(previous_memories, task_questions)
  if layout == "official":
    content = [{"type": "text", "text": PREAMBLE}, video_item, {"type": "text", "text": instruction}]
  elif layout == "video_last":
    content = [{"type": "text", "text": PREAMBLE + instruction + "\n"}, video_item,
               {"type": "text", "text": NEW_CLIP_REQUEST}]
  else:
    raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")
  return [{"role": "user", "content": content}]


def read_layout(checkpoint_dir: str) -> str:
  """The window layout a checkpoint was trained with: LAYOUT_FILE's "layout", or "official" without one."""
  path = os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE)
  if not os.path.isfile(path):
    return "official"
  try:
    with open(path, encoding="utf-8") as f:
      layout = json.load(f).get("layout")
  except (OSError, ValueError, AttributeError) as e:
    raise ValueError(f"{path}: expected a JSON object {{\"layout\": ...}} ({e})") from e
  if layout not in LAYOUTS:
    raise ValueError(f"{path}: layout={layout!r}, expected one of {LAYOUTS}")
  return layout


def write_layout(checkpoint_dir: str, layout: str) -> None:
  """Records the window layout in a checkpoint directory (nothing written for "official")."""
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")
  path = os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE)
  if layout == "official":
    if os.path.isfile(path):
      os.remove(path)
    return
  atomic_write_json(path, {"layout": layout})


def window_video_item(path: str, start: float, end: float) -> dict[str, Any]:
  """The video item for the window [start, end) seconds of the stream at `path` (see store.schedule)."""
  if not 0 <= start < end:
    raise ValueError(f"window [{start}, {end}): need 0 <= start < end")
  return {"type": "video", "video": path, "video_start": float(start), "video_end": float(end)}


def prompt_words() -> frozenset[str]:
  """Every word and punctuation mark (split by WORD_PATTERN) of the fixed prompt text, so a word-level
  tokenizer's vocabulary can cover the prompt. Memories and questions bring their own words."""
  fixed = (PREAMBLE, INSTRUCTION, TASK_HINT_HEADER, TASK_HINT_BULLET, PRECEDING_HEADER, CLOSING, NEW_CLIP_REQUEST)
  return frozenset(word for text in fixed for word in WORD_PATTERN.findall(text))


def _check_list(values: list[str], name: str, limit: int) -> list[str]:
  if isinstance(values, str) or not isinstance(values, (list, tuple)):
    raise ValueError(f"{name}: expected a list of strings, got {type(values).__name__}")
  if len(values) > limit:
    raise ValueError(f"{name}: {len(values)} given, at most {limit} allowed")
  for i, value in enumerate(values):
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f"{name}[{i}]={value!r}: must be a non-empty string")
  # Used verbatim: a rollout that splices stored memory tokens into the prompt must see the same text.
  return list(values)
