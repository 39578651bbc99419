"""Global <-> local face ids: what the memory stores versus what one window's prompt shows (taskmem-spec.md §1.2).

The memory stores stream-global ids, written `[face_N]` (N = the face tracker's identity, stable over the
whole stream). The policy only ever sees window-local ids `<face_1>..<face_K>`: the boxes and subtitle
speakers burned into the window's frames (benchmarks/overlay) and the previous memories in its prompt
all use them, and it answers with them. Small local numbers keep the tags short and the same for every
window shape, which is what the policy was trained on; the official pipeline renumbers the same way.

- window_ids: which global ids get which local number in a window (the order rule is below).
- to_local: a stored memory (global `[face_N]`) -> the prompt's local `<face_k>` tags.
- to_global: the policy's output (local tags, possibly loosely written) -> global `[face_N]`, after
  normalising loose mentions (`face 3`, `face_3`, `(face_3)`, `<face 3>`, `<Face-3>`, `[face_3]`) to
  `<face_3>`, as the official pipeline does. A local id that the window never assigned (the policy made it
  up) becomes UNKNOWN_FACE = `[face_?]`: keeping `<face_k>` would let a later window read it as its own
  k-th face, and no global number is right. unknown_local_ids reports such ids so callers can log or
  reject the memory.

Order rule of window_ids (deterministic): the ids visible or speaking in the window, ordered by the time
they first appear (earliest box or subtitle; ties keep input order, visible before speaking), then the ids
only referenced by previous memories, in order of first mention (memories oldest first, left to right).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

GLOBAL_TAG = re.compile(r"\[face_(\d+)\]")
LOCAL_TAG = re.compile(r"<face_(\d+)>")
# A loose face mention: `face` (any case, not inside a longer word such as "surface"), optional spaces,
# `_` or `-`, then the number; wrapped in <>, () or [] only when both brackets are there, so that
# "(the man, face_3)" keeps its ")".
_CORE = r"(?<![A-Za-z0-9_])face[\s_-]*(\d+)"
LOOSE_TAG = re.compile(rf"<\s*{_CORE}\s*>|\(\s*{_CORE}\s*\)|\[\s*{_CORE}\s*\]|{_CORE}", re.IGNORECASE)
UNKNOWN_FACE = "[face_?]"
_IDENTITY = re.compile(r"\s*[<\[(]?\s*face[\s_-]*(\d+)\s*[>\])]?\s*", re.IGNORECASE)


def parse_identity(value: Any) -> int | None:
  """A face identity as files write it -> int; None for no / unknown speaker.

  Accepts an int (or an int-valued string), or a tag in any spelling (`[face_3]`, `<face_3>`, `face 3`);
  None, "" and "unknown" mean no identity. Anything else raises ValueError.
  """
  if value is None or isinstance(value, bool):
    if value is None:
      return None
    raise ValueError(f"face identity {value!r} is not an int or a face tag")
  if isinstance(value, int):
    if value < 0:
      raise ValueError(f"face identity {value} is negative")
    return value
  if isinstance(value, str):
    if value.strip().lower() in ("", "unknown", "none"):
      return None
    if value.strip().isdigit():
      return int(value)
    m = _IDENTITY.fullmatch(value)
    if m:
      return int(m.group(1))
  raise ValueError(f"face identity {value!r} is not an int or a face tag like [face_3]")


def global_ids_in(text: str) -> list[int]:
  """The global ids `[face_N]` mentioned in text, in order of first mention, without repeats."""
  return list(dict.fromkeys(int(n) for n in GLOBAL_TAG.findall(text)))


def window_ids(visible: Iterable[int | tuple[float, int]], speaking: Iterable[int | tuple[float, int]],
               previous_memories: Iterable[str] = ()) -> dict[int, int]:
  """{global id: local id 1..K} for one window.

  visible, speaking: the window's identities with boxes / speaking a subtitle, each entry either
    (time in seconds, global id) -- one entry per box or subtitle is fine, the earliest counts -- or a
    plain global id, meaning "in this order, time unknown" (sorted after every timed entry).
  previous_memories: the memories shown in the prompt, oldest first, with global `[face_N]` tags.
  Order: see the module docstring.
  """
  first: dict[int, tuple[float, int]] = {}
  seq = 0
  for source in (visible, speaking):
    for entry in source:
      if isinstance(entry, tuple):
        time, identity = float(entry[0]), int(entry[1])
      else:
        time, identity = float("inf"), int(entry)
      key = (time, seq)
      seq += 1
      if identity not in first or key < first[identity]:
        first[identity] = key
  order = sorted(first, key=first.__getitem__)
  for memory in previous_memories:
    order += [n for n in global_ids_in(memory) if n not in first and n not in order]
  return {identity: local for local, identity in enumerate(order, start=1)}


def to_local(text: str, mapping: Mapping[int, int]) -> str:
  """Rewrites the global `[face_N]` tags of a stored memory into the window's `<face_k>`.

  mapping: window_ids' {global: local}. A tag whose global id is not in mapping raises ValueError: the
  mapping should have been built with this memory among previous_memories.
  """
  missing = [n for n in global_ids_in(text) if n not in mapping]
  if missing:
    raise ValueError(f"memory mentions [face_{missing[0]}], which has no local id in this window's mapping "
                     f"{dict(mapping)}; pass the memory to window_ids(previous_memories=...)")
  return GLOBAL_TAG.sub(lambda m: f"<face_{mapping[int(m.group(1))]}>", text)


def normalize_tags(text: str) -> str:
  """Loose face mentions -> `<face_k>` (`face 3`, `face_3`, `(face_3)`, `<face 3>`, `[face_3]` -> `<face_3>`)."""
  return LOOSE_TAG.sub(lambda m: f"<face_{int(next(g for g in m.groups() if g is not None))}>", text)


def unknown_local_ids(text: str, mapping: Mapping[int, int]) -> list[int]:
  """Local ids the policy wrote (after normalize_tags) that mapping does not assign, in order of mention."""
  assigned = set(mapping.values())
  ids = (int(k) for k in LOCAL_TAG.findall(normalize_tags(text)))
  return list(dict.fromkeys(k for k in ids if k not in assigned))


def to_global(text: str, mapping: Mapping[int, int]) -> str:
  """The policy's output -> the stored form: loose mentions normalised, `<face_k>` -> `[face_N]`.

  mapping: window_ids' {global: local}. Local ids it does not assign become UNKNOWN_FACE (`[face_?]`);
  unknown_local_ids(text, mapping) lists them.
  """
  inverse = {local: identity for identity, local in mapping.items()}
  if len(inverse) != len(mapping):
    raise ValueError(f"mapping {dict(mapping)} gives two global ids the same local id")

  def replace(m: re.Match) -> str:
    identity = inverse.get(int(m.group(1)))
    return UNKNOWN_FACE if identity is None else f"[face_{identity}]"

  return LOCAL_TAG.sub(replace, normalize_tags(text))
