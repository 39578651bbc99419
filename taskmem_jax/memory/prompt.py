"""The window prompt: what the memorization policy sees at each step of the stream.

Same structure and content as the official prompt (TaskMem memory/memory_process.py
``construct_episodic_input``; taskmem-spec.md §1.3), in our own words. One user turn, no system turn:
1. a preamble naming the two inputs (the video window and the preceding-description field);
2. the video window: up to 4 previous clips plus the new one;
3. the instruction: what to describe, the rules, then (Phase Two) the task-hint paragraph with up to 5
   example questions, inside the requirements and before the output format, where the official prompt
   puts its ``supplement_prompt``; the output format; the previous memories joined by single spaces
   under ``[Description of the preceding part]:`` (possibly empty); and a closing request to describe
   only what is new, in one or two sentences.

The texts are a ``WindowPrompt``: strings with named slots (``{hint}`` and ``{memories}`` in the
instruction, ``{questions}`` in the hint, ``{question}`` in a question line). Only those exact slot names
are filled; every other brace is text, so a JSON example needs no escaping. ``DEFAULT`` holds our words.
A checkpoint records the prompt it was trained with in its ``window_prompt.json`` (``read_window_prompt``:
the layout, and optionally its own texts), and a run may load another (``taskmem_jax.prompt_file``, the
``--prompt_template=FILE`` flag), e.g. the official wording for the released checkpoints.

Two layouts (``LAYOUTS``):
- "official": preamble, video, instruction (with the previous memories), as above.
- "video_last": preamble and the whole instruction (with the previous memories) first, then the video,
  then the new-clip request. Same content; only the order differs, so the new clip sits at a fixed
  distance before the response instead of behind a variable-length block of memories. The tiny
  SynthWorld policy uses it: it learns to read single clips, and in the official layout it could not
  learn, on a CPU budget, to find the last 10 s behind the memories (experiments/train_synthworld_policy.py
  has the measurements). Real checkpoints keep the official layout.

Our words cover every rule of the official prompt, including two an earlier paraphrase left out: one
person may carry different tags over the video (use the one on screen), and describe everything that
can be seen or inferred, not only the listed kinds (with a subtitle cut off mid-sentence counting as a
cut-off event). All default text is ASCII, so even the tiny byte-level test tokenizer (printable ASCII
only) keeps every character. ``prompt_words()`` lists its words for word-level tokenizers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, ClassVar, Mapping

from taskmem_jax.io import atomic_write_json
from taskmem_jax.memory.store import MAX_PREVIOUS
from taskmem_jax.processing.processor import item_kind

MAX_TASK_QUESTIONS = 5  # example questions in the task hint, as in the official Phase-Two data

PREAMBLE = ("You are given a video window in which people wear on-screen identity tags, and a field "
            "[Description of the preceding part] that may be empty.\n")

PRECEDING_HEADER = "[Description of the preceding part]:"

CLOSING = ("Describe only what the preceding description does not already cover, stay coherent with it, and "
           "do not repeat it. If it is empty, describe the video from the start. Write one or two sentences.")

INSTRUCTION = """
Write a detailed, cohesive description of the video, naming people by their on-screen identity tags. \
Cover everything that can be seen or inferred, including their appearance, their actions and movements, \
what they say, and how they behave towards each other.

Rules:
- Refer to a person only by the identity tag shown on screen; skip people without a tag.
- One person may carry different tags over the video; use the tag shown on screen at that moment.
- Keep the description continuous with the preceding description.
- Describe the events directly; do not begin with "The video".
- Skip an event or sentence that is cut off at the end of the video, such as a subtitle that stops mid-sentence.
- After thinking, output a JSON object with the single key "description".{hint}

Output format:
```json
{"description": "..."}
```

""" + PRECEDING_HEADER + "\n{memories}\n\n" + CLOSING

TASK_HINT_HEADER = ("Task focus: your descriptions will be used to answer questions like the ones below. "
                    "Include what such questions need:")
HINT = "\n\n" + TASK_HINT_HEADER + "\n{questions}"
QUESTION_LINE = "- {question}"

NEW_CLIP_REQUEST = "Describe the last 10 seconds of the video."

LAYOUTS = ("official", "video_last")
LAYOUT_FILE = "window_prompt.json"  # {"layout": "video_last"[, the WindowPrompt texts]} in a checkpoint directory

# Words and single punctuation marks: how prompt_words() splits text.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")

# The slots each text must hold exactly once.
SLOTS = {"preamble": (), "instruction": ("hint", "memories"), "hint": ("questions",), "question": ("question",),
         "new_clip_request": ()}


def fill(template: str, values: Mapping[str, str]) -> str:
  """`template` with each "{name}" of `values` replaced, in one pass (a value's own braces stay as they are);
  any other brace is text."""
  if not values:
    return template
  pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
  return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


def check_slots(text: Any, slots: tuple[str, ...], where: str) -> str:
  """`text` if it is a string holding each "{slot}" exactly once; else ValueError naming `where` and the slot."""
  if not isinstance(text, str):
    raise ValueError(f"{where}: expected a string, got {type(text).__name__}")
  for slot in slots:
    count = text.count("{" + slot + "}")
    if count != 1:
      raise ValueError(f"{where}: the slot {{{slot}}} must appear exactly once, found {count} times")
  return text


def texts_from_dict(cls, values: Mapping[str, Any], source: str):
  """cls(**values) for a dataclass of texts, every field optional; an unknown key, or a text without its
  slots, is a ValueError naming `source` and the key."""
  if not isinstance(values, Mapping):
    raise ValueError(f"{source}: expected a JSON object, got {type(values).__name__}")
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
  try:
    return cls(**values)
  except ValueError as e:
    raise ValueError(f"{source}: {e}") from None


class SlottedTexts:
  """Base of a frozen dataclass of texts with named slots: SLOTS ({field: (slot, ...)}) is checked when one
  is made; from_dict builds one from a JSON object (every key optional), to_dict gives the fields back."""
  SLOTS: ClassVar[Mapping[str, tuple[str, ...]]] = {}

  def __post_init__(self):
    for name, slots in self.SLOTS.items():
      check_slots(getattr(self, name), slots, f"{type(self).__name__}.{name}")

  @classmethod
  def from_dict(cls, values: Mapping[str, Any], source: str | None = None):
    """From {field: text, ...} (every key optional; see texts_from_dict)."""
    return texts_from_dict(cls, values, source or cls.__name__)

  def to_dict(self) -> dict[str, str]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class WindowPrompt(SlottedTexts):
  """The policy's window prompt: the layout and the texts with their slots (SLOTS).

  preamble: the text before the video. instruction: holds {hint} (the filled `hint`, or "" without
  questions) and {memories} (the previous memories joined by single spaces). hint: holds {questions}
  (one filled `question` line per question, joined by newlines). new_clip_request: the text after the
  video in the "video_last" layout.
  """
  layout: str = "official"
  preamble: str = PREAMBLE
  instruction: str = INSTRUCTION
  hint: str = HINT
  question: str = QUESTION_LINE
  new_clip_request: str = NEW_CLIP_REQUEST
  SLOTS = SLOTS

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout={self.layout!r}: expected one of {LAYOUTS}")
    super().__post_init__()

  def instruction_text(self, previous_memories: list[str], task_questions: list[str] | None = None) -> str:
    """The instruction with its slots filled.

    previous_memories: at most MAX_PREVIOUS non-empty descriptions, oldest first (EpisodicMemory.previous).
    task_questions: None or [] for no hint; else 1..MAX_TASK_QUESTIONS non-empty questions. More is an
    error rather than a silent truncation: which questions the policy sees is the caller's sampling
    decision (the official pipeline samples 5), and dropping some here would hide a bug in it.
    """
    previous = _check_list(previous_memories, "previous_memories", MAX_PREVIOUS)
    hint = ""
    if task_questions:
      questions = _check_list(task_questions, "task_questions", MAX_TASK_QUESTIONS)
      hint = fill(self.hint, {"questions": "\n".join(fill(self.question, {"question": q}) for q in questions)})
    return fill(self.instruction, {"hint": hint, "memories": " ".join(previous)})

  def messages(self, video_item: dict[str, Any], previous_memories: list[str],
               task_questions: list[str] | None = None) -> list[dict[str, Any]]:
    """One user turn for Qwen3VLProcessor: the preamble, the window's video item and the instruction, in
    the order of self.layout.

    video_item: any video item the processor takes (a path with "video_start" / "video_end", a VideoClip,
    or a preprocessed {"pixel_values", "grid_thw", "timestamps"} item). Render it with thinking=True for
    the Thinking checkpoints, whose template opens the reply with <think>.
    """
    if item_kind(video_item) != "video":
      keys = sorted(video_item) if isinstance(video_item, dict) else type(video_item).__name__
      raise ValueError(f"video_item: expected a video message item ({{'type': 'video', ...}}), got {keys}")
    instruction = self.instruction_text(previous_memories, task_questions)
    if self.layout == "official":
      content = [{"type": "text", "text": self.preamble}, video_item, {"type": "text", "text": instruction}]
    else:
      content = [{"type": "text", "text": self.preamble + instruction + "\n"}, video_item,
                 {"type": "text", "text": self.new_clip_request}]
    return [{"role": "user", "content": content}]

  def words(self) -> frozenset[str]:
    """Every word and punctuation mark (split by WORD_PATTERN) of the fixed text, slots left out."""
    texts = [fill(getattr(self, name), {slot: " " for slot in slots}) for name, slots in SLOTS.items()]
    return frozenset(word for text in texts for word in WORD_PATTERN.findall(text))


DEFAULT = WindowPrompt()


def window_messages(video_item: dict[str, Any], previous_memories: list[str],
                    task_questions: list[str] | None = None, *, prompt: WindowPrompt) -> list[dict[str, Any]]:
  """prompt.messages(...): pass the prompt the checkpoint was trained with (read_window_prompt) or the one a
  run loaded; it has no default, so that a caller cannot silently get another wording or order."""
  if not isinstance(prompt, WindowPrompt):
    raise TypeError(f"prompt: expected a WindowPrompt (read_window_prompt(checkpoint)), got {type(prompt).__name__}")
  return prompt.messages(video_item, previous_memories, task_questions)


def read_window_prompt(checkpoint_dir: str) -> WindowPrompt:
  """The window prompt a checkpoint was trained with: LAYOUT_FILE's layout and texts (DEFAULT's for any
  text it leaves out), or DEFAULT without the file."""
  path = os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE)
  if not os.path.isfile(path):
    return DEFAULT
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: expected a JSON object {{\"layout\": ...}} ({e})") from e
  return WindowPrompt.from_dict(values, path)


def write_window_prompt(checkpoint_dir: str, prompt: WindowPrompt) -> None:
  """Records a checkpoint's window prompt: its layout, and the texts that differ from DEFAULT (nothing is
  written, and an old file goes, when it is DEFAULT)."""
  path = os.path.join(os.fspath(checkpoint_dir), LAYOUT_FILE)
  values = {k: v for k, v in prompt.to_dict().items() if k == "layout" or v != getattr(DEFAULT, k)}
  if prompt == DEFAULT:
    if os.path.isfile(path):
      os.remove(path)
    return
  atomic_write_json(path, values)


def read_layout(checkpoint_dir: str) -> str:
  """The window layout a checkpoint was trained with ("official" without a LAYOUT_FILE)."""
  return read_window_prompt(checkpoint_dir).layout


def window_video_item(path: str, start: float, end: float) -> dict[str, Any]:
  """The video item for the window [start, end) seconds of the stream at `path` (see store.schedule)."""
  if not 0 <= start < end:
    raise ValueError(f"window [{start}, {end}): need 0 <= start < end")
  return {"type": "video", "video": path, "video_start": float(start), "video_end": float(end)}


def prompt_words() -> frozenset[str]:
  """Every word and punctuation mark of DEFAULT's fixed text, so a word-level tokenizer's vocabulary can
  cover the prompt. Memories and questions bring their own words."""
  return DEFAULT.words()


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
