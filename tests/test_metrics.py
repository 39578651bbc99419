"""taskmem_jax.eval.metrics: Acc / Cov / Prec against hand-computed values, the table, the JSON file."""

import json
import os

import pytest

from taskmem_jax.eval import format_table, save_json, score

RECORDS = [
    # counting: 4 questions, 3 answered, 2 of them right.
    ("counting", "A", "A"), ("counting", "B", "C"), ("counting", None, "D"), ("counting", "D", "D"),
    # ocr: always abstains.
    ("ocr", None, "A"), ("ocr", None, "B"),
]


def test_hand_computed_scores():
  scores = score(RECORDS)
  assert list(scores["tasks"]) == ["counting", "ocr"]  # order of first appearance
  assert scores["tasks"]["counting"] == pytest.approx(
      {"acc": 2 / 4, "cov": 3 / 4, "prec": 2 / 3, "n": 4, "answered": 3, "correct": 2})
  # Nothing answered: Prec is defined as 0.0.
  assert scores["tasks"]["ocr"] == {"acc": 0.0, "cov": 0.0, "prec": 0.0, "n": 2, "answered": 0, "correct": 0}
  assert scores["overall"] == pytest.approx(
      {"acc": 2 / 6, "cov": 3 / 6, "prec": 2 / 3, "n": 6, "answered": 3, "correct": 2})
  overall = scores["overall"]
  assert overall["acc"] == pytest.approx(overall["cov"] * overall["prec"])


def test_table():
  assert format_table(score(RECORDS)) == (
      "| Task | n | Acc | Cov | Prec |\n"
      "|---|---:|---:|---:|---:|\n"
      "| counting | 4 | 50.0 | 75.0 | 66.7 |\n"
      "| ocr | 2 | 0.0 | 0.0 | 0.0 |\n"
      "| overall | 6 | 33.3 | 50.0 | 66.7 |")


def test_save_json(tmp_path):
  scores = score(RECORDS)
  path = tmp_path / "results.json"
  save_json(scores, path)
  save_json(scores, path)  # over an existing file
  assert json.loads(path.read_text()) == scores
  assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.parametrize("records, match", [
    ([], "empty"), ([("t", "A")], r"records\[0\]"), (["abc"], r"records\[0\]"),
    ([("", "A", "A")], "task=''"), ([("t", "A", None)], "correct=None"), ([("t", 1, "A")], "predicted=1")])
def test_bad_records(records, match):
  with pytest.raises(ValueError, match=match):
    score(records)
