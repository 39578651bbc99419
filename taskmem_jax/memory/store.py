"""Episodic memory: one description per 10-s clip, the streaming schedule, and the QA serialisation.

The official pipeline (TaskMem src/main.py, memory/long_term_memory.py, test/*.py) keeps
``{clip_id: description}`` and, for question answering, serialises the whole store as
``"Description:\\n\\n"`` + ``"HH:MM:SS-HH:MM:SS\\n<description>"`` per clip, joined by blank lines.
Clip k covers [k*interval, (k+1)*interval) seconds; the header of a shorter final clip still says
(k+1)*interval, as the official serialiser writes it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Iterator, NamedTuple

from taskmem_jax.io import atomic_write_text

DEFAULT_INTERVAL = 10  # seconds of new video per step
DEFAULT_CONTEXT = 50  # seconds of video the policy sees per step (4 previous clips + the new one)
MAX_PREVIOUS = 4  # previous descriptions shown to the policy: the other clips of a 50-s window


class StoreError(ValueError):
  """A malformed clip id, description, interval or JSON memory file."""


class Window(NamedTuple):
  """One step of the streaming schedule: the new clip and the video window [start, end) it is shown in."""
  clip: int
  start: float
  end: float


def schedule(duration: float, interval: int = DEFAULT_INTERVAL, context: int = DEFAULT_CONTEXT) -> list[Window]:
  """The official fixed-interval schedule (TaskMem src/main.py ``fix_interval_schedule``) from 0 s.

  Step k = 1, 2, ... shows the window [k*interval - context, k*interval] clipped to [0, duration]; its
  last `interval` seconds are new clip k - 1. The final clip may be shorter. The loop runs while the
  previous window ends before duration - 1, so a tail of at most 1 s is never memorised (a 30.8-s stream
  gives 3 clips) and a stream of at most 1 s gives none.
  """
  if not (isinstance(duration, numbers.Real) and math.isfinite(duration) and duration >= 0):
    raise StoreError(f"duration={duration!r}: must be a finite number of seconds >= 0")
  _check_interval(interval)
  if not (isinstance(context, int) and context >= interval):
    raise StoreError(f"context={context!r}: must be an integer number of seconds >= interval={interval}")
  windows, start, end = [], -context, 0
  while end < duration - 1:
    start += interval
    new_end = min(end + interval, duration)
    windows.append(Window(int(end // interval), float(max(start, 0)), float(new_end)))
    end = new_end
  return windows


def format_seconds(seconds: int) -> str:
  """Whole seconds -> "HH:MM:SS" (hours grow past two digits rather than wrap)."""
  hours, rest = divmod(int(seconds), 3600)
  return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


class EpisodicMemory:
  """clip id (int >= 0) -> description (non-empty str), iterated in clip order.

  A clip whose memory could not be written is simply absent: ``previous`` and ``to_string`` skip it.
  """

  def __init__(self, interval: int = DEFAULT_INTERVAL, descriptions: dict[int, str] | None = None):
    _check_interval(interval)
    self.interval = interval
    self._descriptions: dict[int, str] = {}
    for clip, description in (descriptions or {}).items():
      self.add(clip, description)

  # --- mapping ----------------------------------------------------------------------------------

  def add(self, clip: int, description: str, *, replace: bool = False) -> None:
    """Stores the description of `clip`. Writing a clip twice is an error unless replace=True: in a
    rollout each clip is memorised once, so a second write means the caller lost track of the stream."""
    _check_clip(clip)
    if not isinstance(description, str) or not description.strip():
      raise StoreError(f"clip {clip}: description must be a non-empty string, got {description!r}; leave the "
                       "clip out when no memory was written")
    if clip in self._descriptions and not replace:
      raise StoreError(f"clip {clip}: already has a description; pass replace=True to overwrite it")
    self._descriptions[clip] = description

  def get(self, clip: int) -> str:
    _check_clip(clip)
    if clip not in self._descriptions:
      raise KeyError(f"clip {clip}: no description stored (clips held: {self.clips()})")
    return self._descriptions[clip]

  def clips(self) -> list[int]:
    return sorted(self._descriptions)

  def items(self) -> list[tuple[int, str]]:
    return [(clip, self._descriptions[clip]) for clip in self.clips()]

  def __contains__(self, clip: object) -> bool:
    return clip in self._descriptions

  def __len__(self) -> int:
    return len(self._descriptions)

  def __iter__(self) -> Iterator[int]:
    return iter(self.clips())

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, EpisodicMemory):
      return NotImplemented
    return self.interval == other.interval and self._descriptions == other._descriptions

  def __repr__(self) -> str:
    return f"EpisodicMemory(interval={self.interval}, clips={len(self)})"

  # --- the streaming window and the QA prompt -----------------------------------------------------

  def span(self, clip: int) -> tuple[int, int]:
    """[start, end) seconds of `clip` as the QA headers state it."""
    _check_clip(clip)
    return clip * self.interval, (clip + 1) * self.interval

  def previous(self, clip: int, n: int = MAX_PREVIOUS) -> list[str]:
    """Descriptions of the up-to-n clips before `clip` (clips clip-n .. clip-1 that are stored), oldest
    first: the previous memories a window ending with `clip` shows the policy."""
    _check_clip(clip)
    if not (isinstance(n, int) and n >= 0):
      raise StoreError(f"n={n!r}: must be an integer >= 0")
    return [self._descriptions[c] for c in range(max(0, clip - n), clip) if c in self._descriptions]

  def to_string(self) -> str:
    """The whole memory as the official QA prompt serialises it (episodic only)."""
    blocks = []
    for clip, description in self.items():
      start, end = self.span(clip)
      blocks.append(f"{format_seconds(start)}-{format_seconds(end)}\n{description}")
    return "Description:\n\n" + "\n\n".join(blocks)

  # --- JSON -------------------------------------------------------------------------------------

  def to_dict(self) -> dict:
    # String keys, as the official store keeps clip ids; JSON objects cannot have int keys anyway.
    return {"interval": self.interval, "descriptions": {str(c): d for c, d in self.items()}}

  @classmethod
  def from_dict(cls, data: dict) -> "EpisodicMemory":
    if not isinstance(data, dict) or set(data) != {"interval", "descriptions"}:
      keys = sorted(data) if isinstance(data, dict) else type(data).__name__
      raise StoreError(f"memory JSON: expected an object with keys ['descriptions', 'interval'], got {keys}")
    descriptions = data["descriptions"]
    if not isinstance(descriptions, dict):
      raise StoreError(f"memory JSON: 'descriptions' must be an object, got {type(descriptions).__name__}")
    memory = cls(data["interval"])
    for key, description in descriptions.items():
      if not (isinstance(key, str) and key.isdigit() and key.isascii()):
        raise StoreError(f"memory JSON: clip id {key!r} is not a non-negative integer")
      memory.add(int(key), description)
    return memory

  def to_json(self, indent: int | None = None) -> str:
    return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str) -> "EpisodicMemory":
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise StoreError(f"memory JSON: not valid JSON ({e})") from None
    return cls.from_dict(data)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the JSON to a temporary file next to `path`, then renames it over `path`, so a reader never
    sees half a file."""
    atomic_write_text(path, self.to_json(indent=2) + "\n")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "EpisodicMemory":
    with open(os.fspath(path), encoding="utf-8") as f:
      text = f.read()
    try:
      return cls.from_json(text)
    except StoreError as e:
      raise StoreError(f"{os.fspath(path)}: {e}") from None


def _check_interval(interval) -> None:
  # Whole seconds: the QA headers print HH:MM:SS with no fraction.
  if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
    raise StoreError(f"interval={interval!r}: must be a positive integer number of seconds")


def _check_clip(clip) -> None:
  if isinstance(clip, bool) or not isinstance(clip, int) or clip < 0:
    raise StoreError(f"clip={clip!r}: clip ids are integers >= 0")
