"""Reading a memory out of a policy response: ``<thinking> </think> {"description": "..."}``.

Two parsers, as the official code has two:
- ``parse_response``: the strict check of the RL format reward (TaskMem-PhaseOne
  verl/workers/reward_manager/m3_agent.py; taskmem-spec.md §2.2). It says *why* a response failed,
  because the reward depends on it.
- ``parse_lenient``: what the inference pipeline accepts (TaskMem memory/memory_process.py): anything
  from which a description can be recovered.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

THINK_END = "</think>"
THINK_START = "<think>"
KEY = "description"

# Why a response failed the strict check. All but OVER_BUDGET are format failures (R = format_penalty
# in the RL reward); OVER_BUDGET parses fine but breaks the memory length limit, which the official
# reward counts as a quality failure (q = 0), so the description is still returned with it.
NO_THINK_END = "no </think>"
MULTIPLE_THINK_END = "more than one </think>"
NOT_JSON = "the text after </think> is not JSON"
NOT_A_DICT = "the JSON after </think> is not an object"
WRONG_KEYS = 'the JSON object does not have exactly the key "description"'
NOT_A_STRING = 'the "description" value is not a string'
EMPTY_DESCRIPTION = 'the "description" value is empty'
OVER_BUDGET = "the memory is over the token budget"
FORMAT_FAILURES = (NO_THINK_END, MULTIPLE_THINK_END, NOT_JSON, NOT_A_DICT, WRONG_KEYS, NOT_A_STRING,
                   EMPTY_DESCRIPTION)

# Chat end markers a caller may leave on when decoding without skip_special_tokens.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_FENCE_OPEN = re.compile(r"^```[ \t]*(?:json)?", re.IGNORECASE)
# The description's string value, closing quote optional (a response cut off by the token limit).
_DESCRIPTION_VALUE = re.compile(r'"description"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)


class ParseResult(NamedTuple):
  """ok: the response passed every check. description: the memory (also set when only the token budget
  failed). reason: None when ok, else one of the reason constants. thinking: the text before the first
  </think> without a leading <think> (all of the text when there is no </think>). memory_tokens: tokens
  from the </think> token to the end of the response, the </think> included (the official reward's
  span), when token ids were given and there is exactly one </think>. think_tokens: tokens before it
  (the thinking-length reward's L; the Thinking template puts <think> in the prompt)."""
  ok: bool
  description: str | None
  reason: str | None
  thinking: str
  memory_tokens: int | None = None
  think_tokens: int | None = None

  @property
  def format_ok(self) -> bool:
    """Passed the format check (the budget aside)."""
    return self.reason is None or self.reason == OVER_BUDGET


def strip_fences(text: str) -> str:
  """Removes surrounding whitespace and a ``` fence (an optional "json" tag after the opening one; either
  fence may be missing, e.g. when the response was cut off)."""
  text = text.strip()
  match = _FENCE_OPEN.match(text)
  if match:
    text = text[match.end():]
  if text.endswith("```"):
    text = text[:-3]
  return text.strip()


def parse_response(text: str, *, tokens: list[int] | None = None, think_end_id: int | None = None,
                   max_memory_tokens: int | None = None) -> ParseResult:
  """The strict format check.

  text: the decoded response (the official reward decodes with skip_special_tokens=True; a trailing
  <|im_end|> or <|endoftext|> is tolerated). tokens: the response's token ids without padding; when
  given, "exactly one </think>" is counted on the ids (think_end_id, required then), as the official
  reward does, and memory_tokens / think_tokens are measured. max_memory_tokens (needs tokens): the
  memory length limit L_mem.

  Checks, in order: exactly one </think>; the text after it, fences stripped, json.loads to an object;
  whose only key is "description"; with a string value; that is not blank; within the token budget.
  Stricter than the official reward in two ways: a non-string value fails (it would be str()-ed) and
  a whitespace-only description counts as empty.
  """
  if not isinstance(text, str):
    raise TypeError(f"text: expected the decoded response string, got {type(text).__name__}")
  if max_memory_tokens is not None and tokens is None:
    raise ValueError("max_memory_tokens needs the response's token ids (tokens=...)")
  if tokens is not None and think_end_id is None:
    raise ValueError("tokens given without think_end_id: pass the tokenizer's id of </think>")
  for marker in _END_MARKERS:
    text = text.removesuffix(marker)

  first, sep, _ = text.partition(THINK_END)
  thinking = first.strip().removeprefix(THINK_START).strip() if sep else text.strip()
  if tokens is not None:
    tokens = [int(t) for t in tokens]
    ends = [i for i, t in enumerate(tokens) if t == think_end_id]
  else:
    ends = [None] * text.count(THINK_END)
  fail = lambda reason, **kw: ParseResult(False, kw.pop("description", None), reason, thinking, **kw)
  if not ends:
    return fail(NO_THINK_END)
  if len(ends) > 1:
    return fail(MULTIPLE_THINK_END)
  lengths = {}
  if tokens is not None:
    lengths = {"memory_tokens": len(tokens) - ends[0], "think_tokens": ends[0]}

  answer = strip_fences(text.rsplit(THINK_END, 1)[-1])
  try:
    value = json.loads(answer)
  except ValueError:
    return fail(NOT_JSON, **lengths)
  if not isinstance(value, dict):
    return fail(NOT_A_DICT, **lengths)
  if list(value) != [KEY]:
    return fail(WRONG_KEYS, **lengths)
  description = value[KEY]
  if not isinstance(description, str):
    return fail(NOT_A_STRING, **lengths)
  if not description.strip():
    return fail(EMPTY_DESCRIPTION, **lengths)
  if max_memory_tokens is not None and lengths["memory_tokens"] > max_memory_tokens:
    return fail(OVER_BUDGET, description=description, **lengths)
  return ParseResult(True, description, None, thinking, **lengths)


def parse_lenient(text: str) -> str | None:
  """The description as the inference pipeline recovers it, or None.

  Takes the text after the last </think> (all of it when there is none), strips fences, and reads
  "description" from the JSON object; failing that, from the first JSON object inside the text; failing
  that, from a regex over "description": "..." that tolerates a missing closing quote or brace. Returns
  None when nothing non-blank is found.
  """
  if not isinstance(text, str):
    raise TypeError(f"text: expected the decoded response string, got {type(text).__name__}")
  for marker in _END_MARKERS:
    text = text.removesuffix(marker)
  answer = strip_fences(text.rsplit(THINK_END, 1)[-1])
  candidates = [answer]
  start = answer.find("{")
  if start >= 0:
    candidates.append(answer[start:answer.rfind("}") + 1])
  for candidate in candidates:
    try:
      value = json.loads(candidate)
    except ValueError:
      continue
    if isinstance(value, dict) and isinstance(value.get(KEY), str) and value[KEY].strip():
      return value[KEY].strip()
  match = _DESCRIPTION_VALUE.search(answer)
  if match:
    try:
      description = json.loads('"' + match.group(1) + '"')
    except ValueError:  # a dangling escape where the response was cut off
      description = match.group(1)
    if description.strip():
      return description.strip()
  return None
