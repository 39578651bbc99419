"""Small look-alike datasets in the public VideoMME, EgoLife and EgoTempo formats, written to a temp dir.

Every row is invented (VideoMME's licence forbids redistributing its rows; EgoTempo's are CC-BY but we
need none): only the schemas, field names, task-type names and file naming follow the real datasets
(paper-notes.md §6). Videos are a few seconds of 64x64 frames at 2 fps (a coloured square moving over
a flat background), so a whole fixture is written in well under a second. EgoLife file names say
30-s files but the files are shorter: the loaders never read video lengths unless asked to.
"""

from __future__ import annotations

import json
import os
import types

import numpy as np

from taskmem_jax.processing.video_io import write_video

FPS, SIZE = 2, 64


def tiny_video(path: str, seconds: float = 2.0, seed: int = 0) -> str:
  """A few seconds of a square moving left to right over a flat background (colours from seed)."""
  rng = np.random.default_rng(seed)
  background, square = rng.integers(0, 256, 3, dtype=np.uint8), rng.integers(0, 256, 3, dtype=np.uint8)
  n = max(1, int(round(seconds * FPS)))
  frames = np.broadcast_to(background, (n, SIZE, SIZE, 3)).copy()
  for t in range(n):
    x = 4 + (SIZE - 24) * t // max(1, n - 1)
    frames[t, 24:40, x:x + 16] = square
  write_video(path, frames, FPS)
  return path


def _write_json(path: str, data, fmt: str = "json") -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    if fmt == "jsonl":
      f.writelines(json.dumps(row) + "\n" for row in data)
    else:
      json.dump(data, f, indent=1)
  return path


# --- VideoMME -------------------------------------------------------------------------------------------

# (video_id, videoID, duration category, domain, sub_category); questions below, 3 per video.
VIDEOMME_VIDEOS = [
  ("001", "synthVid0001", "short", "Knowledge", "Astronomy"),
  ("002", "synthVid0002", "medium", "Life Record", "Pet & Animal"),
  ("003", "synthVid0003", "long", "Sports Competition", "Football"),
]
VIDEOMME_QUESTIONS = [  # (task_type, question, options, answer)
  ("Attribute Perception", "What colour is the moving square?", ["Red.", "Green.", "Blue.", "Grey."], "A"),
  ("Counting Problem", "How many squares appear in the video?", ["1.", "2.", "3.", "4."], "A"),
  ("Spatial Perception", "Where does the square end up?", ["Left.", "Right.", "Top.", "Bottom."], "B"),
]


def videomme_rows() -> list[dict]:
  """The HF layout: one row per question, options with their "A. " prefixes."""
  rows = []
  for video_id, youtube, duration, domain, sub in VIDEOMME_VIDEOS:
    for k, (task, question, options, answer) in enumerate(VIDEOMME_QUESTIONS, 1):
      rows.append({"video_id": video_id, "duration": duration, "domain": domain, "sub_category": sub,
                   "url": f"https://www.youtube.com/watch?v={youtube}", "videoID": youtube,
                   "question_id": f"{video_id}-{k}", "task_type": task, "question": question,
                   "options": [f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)], "answer": answer})
  return rows


def videomme_grouped(rows: list[dict]) -> list[dict]:
  """The GitHub template layout: one row per video (video_id names the file), questions inside."""
  out: dict[str, dict] = {}
  for r in rows:
    video = out.setdefault(r["video_id"], {"video_id": r["video_id"], "duration_category": r["duration"],
                                           "video_category": r["domain"], "video_subcategory": r["sub_category"],
                                           "questions": []})
    video["questions"].append({"question_id": r["question_id"], "task_type": r["task_type"],
                               "question": r["question"], "choices": r["options"], "answer": r["answer"]})
  return list(out.values())


def videomme_taskmem(rows: list[dict]) -> dict[str, list[dict]]:
  """TaskMem's video_info_*.json layout: {task_type: [{videoID, question, options, answer}]}."""
  out: dict[str, list[dict]] = {}
  for r in rows:
    out.setdefault(r["task_type"], []).append({k: r[k] for k in ("videoID", "question", "options", "answer")})
  return out


def write_videomme(root: str, *, layout: str = "hf", fmt: str = "json", rows: list[dict] | None = None,
                   skip_videos: tuple[str, ...] = ()) -> types.SimpleNamespace:
  """annotation file (layout hf | grouped | taskmem; fmt json | jsonl), videos/<key>.mp4 (key = videoID,
  or video_id for the grouped layout) except skip_videos, subtitles/<key>.srt for the first video."""
  rows = videomme_rows() if rows is None else rows
  data = {"hf": lambda r: r, "grouped": videomme_grouped, "taskmem": videomme_taskmem}[layout](rows)
  key = "video_id" if layout == "grouped" else "videoID"
  video_dir, sub_dir = os.path.join(root, "videos"), os.path.join(root, "subtitles")
  keys = list(dict.fromkeys(r[key] for r in rows if isinstance(r, dict) and key in r))
  for i, k in enumerate(keys):
    if k not in skip_videos:
      tiny_video(os.path.join(video_dir, k + ".mp4"), seed=i)
  os.makedirs(sub_dir, exist_ok=True)
  with open(os.path.join(sub_dir, keys[0] + ".srt"), "w", encoding="utf-8") as f:
    f.write("1\n00:00:00,000 --> 00:00:01,000\nA square appears.\n\n2\n00:00:01,000 --> 00:00:02,000\n"
            "It moves to the right.\n")
  path = _write_json(os.path.join(root, f"videomme.{fmt}"), data, fmt)
  return types.SimpleNamespace(annotation=path, video_dir=video_dir, subtitles_dir=sub_dir, keys=keys)


# --- EgoLife --------------------------------------------------------------------------------------------

EGOLIFE_PERSON = "A1_JAKE"
# Day -> file start times (HHMMSSFF). DAY1 has a session gap between 11:11:30 and 11:20:00.
EGOLIFE_FILES = {1: ["11100000", "11103000", "11110000", "11200000"], 2: ["09000000", "09003000"]}


def egolife_row(qid, date, time, *, qtype="EntityLog", answer="B", target=("DAY1", "11103000"), **extra) -> dict:
  row = {"ID": qid, "query_time": {"date": date, "time": time}, "type": qtype, "need_audio": False,
         "need_name": True, "last_time": False, "trigger": "The square starts to move",
         "question": f"Invented question {qid}: which colour did the square have?",
         "choice_a": "Red", "choice_b": "Green", "choice_c": "Blue", "choice_d": "Grey", "answer": answer,
         "target_time": {"date": target[0], "time": target[1]} if target else None,
         "keywords": "square colour", "reason": "Saw the square in the first file"}
  row.update(extra)
  return row


def egolife_rows() -> list[dict]:
  return [
    egolife_row("1", "DAY1", "11104502", target=("DAY1", "11100510")),  # 11:10:45 + 2/20 s
    egolife_row("2", "DAY1", "11201010", qtype="EventRecall", answer="c"),  # after the gap
    egolife_row("3", "DAY1", "11150000", qtype="HabitInsight"),  # inside the gap
    egolife_row("4", "DAY2", "09000500", qtype="RelationMap", answer="D"),  # asks about DAY1
    egolife_row("5", "DAY1", "11100100", qtype="TaskMaster", answer="A", target=None),
  ]


def write_egolife(root: str, *, rows: list[dict] | None = None, fmt: str = "json", files=None,
                  seconds: float = 2.0) -> types.SimpleNamespace:
  """train/A1_JAKE/DAYn/DAYn_A1_JAKE_HHMMSSFF.mp4 for EGOLIFE_FILES and EgoLifeQA_A1_JAKE.<fmt>."""
  files = EGOLIFE_FILES if files is None else files
  video_dir = os.path.join(root, "train")
  for day, times in files.items():
    folder = os.path.join(video_dir, EGOLIFE_PERSON, f"DAY{day}")
    os.makedirs(folder, exist_ok=True)
    for k, t in enumerate(times):
      tiny_video(os.path.join(folder, f"DAY{day}_{EGOLIFE_PERSON}_{t}.mp4"), seconds, seed=10 * day + k)
  path = _write_json(os.path.join(root, f"EgoLifeQA_{EGOLIFE_PERSON}.{fmt}"),
                     egolife_rows() if rows is None else rows, fmt)
  return types.SimpleNamespace(annotation=path, video_dir=video_dir)


# --- EgoTempo -------------------------------------------------------------------------------------------

EGOTEMPO_CLIPS = ["0a1b2c3d-0000-4000-8000-00000000000a_12.5_40.25", "0a1b2c3d-0000-4000-8000-00000000000b_3_9"]
EGOTEMPO_QUESTIONS = [  # (clip index, question_type, question, answer)
  (0, "object sequence", "Which object does the person pick up after the cup?", "The red square."),
  (0, "counting actions", "How many times does the person open the drawer?", "Twice."),
  (1, "future action prediction", "What will the person most likely do next?", "Close the door."),
]


def egotempo_rows() -> list[dict]:
  rows, count = [], {}
  for c, qtype, question, answer in EGOTEMPO_QUESTIONS:
    clip = EGOTEMPO_CLIPS[c]
    k = count[clip] = count.get(clip, -1) + 1
    rows.append({"question_id": f"{clip}_{k}", "clip_id": clip, "question_type": qtype, "question": question,
                 "answer": answer})
  return rows


def write_egotempo(root: str, *, rows: list[dict] | None = None, skip_videos: tuple[str, ...] = (),
                   bare_list: bool = False) -> types.SimpleNamespace:
  """videos/<clip_id>.mp4 and egotempo_openQA.json ({"info", "annotations"}, or a bare list)."""
  rows = egotempo_rows() if rows is None else rows
  video_dir = os.path.join(root, "videos")
  os.makedirs(video_dir, exist_ok=True)
  for i, clip in enumerate(EGOTEMPO_CLIPS):
    if clip not in skip_videos:
      tiny_video(os.path.join(video_dir, clip + ".mp4"), seed=100 + i)
  data = rows if bare_list else {"info": {"date": "invented", "version": "fixture"}, "annotations": rows}
  path = _write_json(os.path.join(root, "egotempo_openQA.json"), data)
  return types.SimpleNamespace(annotation=path, video_dir=video_dir)
