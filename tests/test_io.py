"""Atomic writes: content, permissions, and no trace left when the writer fails; a resumed metrics log."""

import json
import os

import pytest

from taskmem_jax.io import atomic_write, atomic_write_json, resume_jsonl


def test_writes_replace_and_keep_usual_permissions(tmp_path):
  path = tmp_path / "results.json"
  atomic_write_json(path, {"a": 1})
  atomic_write_json(path, {"a": 2})
  assert json.loads(path.read_text()) == {"a": 2}
  mask = os.umask(0)
  os.umask(mask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~mask
  assert os.listdir(tmp_path) == ["results.json"]


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
  path = tmp_path / "memory.json"
  path.write_text("old")

  def fail(tmp):
    with open(tmp, "w") as f:
      f.write("half")
    raise RuntimeError("disk full")

  with pytest.raises(RuntimeError, match="disk full"):
    atomic_write(path, fail)
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["memory.json"]


def test_resume_jsonl_keeps_the_rows_up_to_the_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert resume_jsonl(path, 3) == [] and path.read_text() == ""
  path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4)) + "\n")
  rows = resume_jsonl(path, 2)  # a run resumed from step 2 rewrites steps 3 and 4
  assert [r["step"] for r in rows] == [1, 2]
  assert [json.loads(line) for line in path.read_text().splitlines()] == rows
