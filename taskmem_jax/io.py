"""Atomic file writes: write to a temporary file in the target's directory, then rename it over the
target, so a crash never leaves a half-written checkpoint, memory store or results file."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
  """Calls write(tmp_path) to fill a temporary file, then os.replace()s it onto path (creating its folder)."""
  path = os.fspath(path)
  name = os.path.basename(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{name}.", suffix=".tmp")
  os.close(fd)
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> None:
  """obj as indented JSON with a final newline; dump_kwargs go to json.dumps (e.g. sort_keys)."""
  atomic_write_text(path, json.dumps(obj, indent=2, **dump_kwargs) + "\n")


def read_jsonl(path: str | os.PathLike, upto: int) -> list[dict]:
  """The rows of a metrics JSONL with "step" <= upto ([] when there is no file)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [row for row in (json.loads(line) for line in f if line.strip()) if row["step"] <= upto]


def resume_jsonl(path: str | os.PathLike, upto: int) -> list[dict]:
  """read_jsonl, and the file rewritten in place (atomically) without the later rows: a run resumed from
  step `upto` appends its own rows for the later steps."""
  rows = read_jsonl(path, upto)
  atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
  return rows


def safe_filename(name: str, keep: str = "-_.") -> str:
  """`name` with every character but letters, digits and those in `keep` replaced by "_" (a stream id or an
  adapter key as a file name)."""
  return "".join(c if c.isalnum() or c in keep else "_" for c in name)


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
