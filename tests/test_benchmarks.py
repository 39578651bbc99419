"""Benchmark loaders on look-alike fixtures (tests/benchmark_fixtures.py): schemas -> streams and
questions, EgoLife's day streams and time conversion, the grain view, and bad input (reported, counted,
loading goes on)."""

import copy
import math
import os

import benchmark_fixtures as fx
import pytest

from taskmem_jax.benchmarks import (AnnotationError, clock_seconds, load_egolife, load_egotempo, load_videomme,
                                    parse_clip_id)

# --- VideoMME -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout,fmt", [("hf", "json"), ("hf", "jsonl"), ("grouped", "json"), ("taskmem", "json")])
def test_videomme_layouts(tmp_path, layout, fmt):
  d = fx.write_videomme(str(tmp_path), layout=layout, fmt=fmt)
  b = load_videomme(d.annotation, d.video_dir, subtitles_dir=d.subtitles_dir)
  assert b.name == "videomme" and b.errors == []
  assert [s.sid for s in b.streams] == d.keys and b.num_questions() == 9
  assert b.tasks == sorted(t for t, *_ in fx.VIDEOMME_QUESTIONS)
  first = b.streams[0]
  assert first.segments[0].path == os.path.join(d.video_dir, d.keys[0] + ".mp4") and first.segments[0].start == 0
  assert first.subtitles == os.path.join(d.subtitles_dir, d.keys[0] + ".srt") and b.streams[1].subtitles is None
  for q, (task, text, options, answer) in zip(first.questions, fx.VIDEOMME_QUESTIONS):
    assert (q.task, q.text, q.options, q.answer) == (task, text, tuple(options), answer)
    assert q.multiple_choice and math.isinf(q.ask_after)  # asked after the stream
  ids = [q.qid for q in first.questions]
  assert ids == (["synthVid0001-1", "synthVid0001-2", "synthVid0001-3"] if layout == "taskmem"
                 else ["001-1", "001-2", "001-3"])
  if layout != "taskmem":
    assert first.meta["duration"] == "short" and first.meta["domain"] == "Knowledge"


def test_videomme_fixture_subtitles_parse(tmp_path):
  from taskmem_jax.benchmarks.overlay import parse_srt

  d = fx.write_videomme(str(tmp_path))
  subs = parse_srt(load_videomme(d.annotation, d.video_dir, subtitles_dir=d.subtitles_dir).streams[0].subtitles)
  assert [(s.start, s.end) for s in subs] == [(0.0, 1.0), (1.0, 2.0)]


def test_videomme_duration_filter_and_read_durations(tmp_path):
  d = fx.write_videomme(str(tmp_path))
  b = load_videomme(d.annotation, d.video_dir, durations=("short", "medium"), read_durations=True)
  assert [s.meta["duration"] for s in b.streams] == ["short", "medium"] and b.errors == []
  s = b.streams[0]
  assert s.duration == pytest.approx(2.0) and all(q.ask_after == s.duration for q in s.questions)
  with pytest.raises(ValueError, match="durations"):
    load_videomme(d.annotation, d.video_dir, durations=("tiny",))


def test_videomme_bad_rows(tmp_path):
  rows = fx.videomme_rows()
  bad = {1: ("answer", "E"), 2: ("options", ["A. x", "B. y", "C. z"]), 3: ("options", ["A. x", "C. y", "B. z", "D. w"]),
         4: ("question", 7), 6: ("question_id", "001-1"), 7: ("task_type", None)}
  for i, (key, value) in bad.items():
    rows[i][key] = value
  rows.append("not a row")
  rows[0]["answer"] = "a"  # lower case is fine
  d = fx.write_videomme(str(tmp_path), rows=rows, skip_videos=("synthVid0003",))
  b = load_videomme(d.annotation, d.video_dir)
  whys = {e.where: e.why for e in b.errors}
  assert len(b.errors) == 8, whys
  assert "bad answer letter 'E'" in whys["videomme.json row 1"]
  assert "expected 4 options, got 3" in whys["videomme.json row 2"]
  assert "option B is labelled 'C'" in whys["videomme.json row 3"]
  assert "field 'question' must be str, got int" in whys["videomme.json row 4"]
  assert "missing field 'task_type'" in whys["videomme.json row 7"]
  assert "duplicate question_id '001-1'" in whys["videomme.json row 6"]
  assert "expected an object" in whys["videomme.json row 9"]
  missing = [e for e in b.errors if "missing video" in e.why]
  assert len(missing) == 1 and "synthVid0003.mp4" in missing[0].why and "1 question(s) skipped" in missing[0].why
  assert missing[0].where == "videomme.json row 8 (video synthVid0003)"
  # Loading went on: the good rows of the first two videos were kept.
  assert [s.sid for s in b.streams] == ["synthVid0001", "synthVid0002"]
  assert [q.qid for q in b.streams[0].questions] == ["001-1"]
  assert [q.qid for q in b.streams[1].questions] == ["002-3"]


def test_annotation_file_errors(tmp_path):
  d = fx.write_videomme(str(tmp_path))
  with pytest.raises(AnnotationError, match="not found"):
    load_videomme(str(tmp_path / "nope.json"), d.video_dir)
  broken = tmp_path / "broken.json"
  broken.write_text('[{"video_id": ')
  with pytest.raises(AnnotationError, match="not valid JSON"):
    load_videomme(str(broken), d.video_dir)
  jsonl = tmp_path / "broken.jsonl"
  jsonl.write_text('{"a": 1}\n{oops\n')
  with pytest.raises(AnnotationError, match="line 2"):
    load_egotempo(str(jsonl), d.video_dir)
  with pytest.raises(FileNotFoundError, match="video_dir"):
    load_videomme(d.annotation, str(tmp_path / "no_videos"))
  not_rows = tmp_path / "scalar.json"
  not_rows.write_text("3")
  for load in (load_videomme, load_egolife, load_egotempo):
    with pytest.raises(AnnotationError):
      load(str(not_rows), d.video_dir)


# --- EgoLife --------------------------------------------------------------------------------------------


def test_clock_seconds():
  assert clock_seconds("11210217") == pytest.approx(11 * 3600 + 21 * 60 + 2 + 17 / 20)
  assert clock_seconds("00000050", frame_rate=100) == pytest.approx(0.5)
  for bad in ("1121021", "11216017", "25000000", "11210220", 11210217):
    with pytest.raises(ValueError):
      clock_seconds(bad)


def test_egolife_days_and_times(tmp_path):
  d = fx.write_egolife(str(tmp_path))
  b = load_egolife(d.annotation, d.video_dir)
  assert b.errors == [] and [s.sid for s in b.streams] == ["A1_JAKE_DAY1", "A1_JAKE_DAY2"]
  day1, day2 = b.streams
  # Segments: the day's files in time order, start = seconds since the day's first file (gaps kept).
  assert [os.path.basename(s.path) for s in day1.segments] == [f"DAY1_A1_JAKE_{t}.mp4" for t in fx.EGOLIFE_FILES[1]]
  assert [s.start for s in day1.segments] == [0, 30, 60, 600]
  assert day1.meta["origin"] == 11 * 3600 + 10 * 60 and day1.meta["day"] == 1
  # Questions in asking order, ask_after = query_time in stream time.
  assert [(q.qid, q.ask_after) for q in day1.questions] == [("5", 1.0), ("1", pytest.approx(45.1)), ("3", 300.0),
                                                            ("2", pytest.approx(610.5))]
  q1, q2 = day1.questions[1], day1.questions[3]
  assert q1.options == ("Red", "Green", "Blue", "Grey") and q1.answer == "B" and q1.task == "EntityLog"
  assert q2.answer == "C"  # "c" normalised
  assert q1.meta["target"] == [{"day": 1, "clock": pytest.approx(40205.5), "stream_time": pytest.approx(5.5)}]
  assert q1.meta["keywords"] == "square colour" and q1.meta["need_name"] is True
  (q4,) = day2.questions
  assert q4.ask_after == 5.0 and q4.meta["target"][0]["day"] == 1 and q4.meta["target"][0]["stream_time"] == 30.0
  assert b.tasks == ["EntityLog", "EventRecall", "HabitInsight", "RelationMap", "TaskMaster"]


def test_egolife_close_gaps_and_empty_day(tmp_path):
  files = {**fx.EGOLIFE_FILES, 3: ["10000000"]}  # DAY3 has videos but no questions: kept
  d = fx.write_egolife(str(tmp_path), files=files, fmt="jsonl")
  b = load_egolife(d.annotation, d.video_dir, close_gaps=True, person="A1_JAKE")
  day1 = b.streams[0]
  assert [s.start for s in day1.segments] == [0, 30, 60, 90]
  times = {q.qid: q.ask_after for q in day1.questions}
  assert times["2"] == pytest.approx(100.5) and times["3"] == 90.0  # in the gap -> end of the file before it
  assert b.streams[2].sid == "A1_JAKE_DAY3" and b.streams[2].questions == ()


def test_egolife_bad_rows(tmp_path):
  rows = fx.egolife_rows() + [
    fx.egolife_row("6", "DAY3", "10000000"),  # no DAY3 videos
    fx.egolife_row("7", "DAY1", "11996000"),  # minute 99
    fx.egolife_row("8", "DAY1", "11104530"),  # frame 30 >= 20
    fx.egolife_row("9", "DAY1", "08000000"),  # before the day's first video
    fx.egolife_row("10", "DAY1", "11104500", answer="E"),
    fx.egolife_row("11", "DAY1", "11104500", choice_c=None),
    fx.egolife_row("12", "DAY1", "11104500", choice_b=3),
    fx.egolife_row("13", "Monday", "11104500"),
    fx.egolife_row("1", "DAY1", "11104500"),  # duplicate ID
    fx.egolife_row("14", "DAY1", "11104500", target=("DAY1", "xx")),
    fx.egolife_row("15", "DAY1", "11104500", answer=None),
  ]
  d = fx.write_egolife(str(tmp_path), rows=rows)
  # A badly named file is reported too (hour 25); other files are ignored.
  bad_file = os.path.join(d.video_dir, "A1_JAKE", "DAY1", "DAY1_A1_JAKE_25000000.mp4")
  fx.tiny_video(bad_file)
  open(os.path.join(d.video_dir, "notes.txt"), "w").close()
  b = load_egolife(d.annotation, d.video_dir)
  whys = {e.where: e.why for e in b.errors}
  assert len(b.errors) == 12, whys
  assert "DAY3, which has no A1_JAKE videos" in whys["EgoLifeQA_A1_JAKE.json row 5 (ID '6')"]
  assert "not a time of day" in whys["EgoLifeQA_A1_JAKE.json row 6 (ID '7')"]
  assert "frame 30 >= frame_rate 20" in whys["EgoLifeQA_A1_JAKE.json row 7 (ID '8')"]
  assert "before DAY1's first video" in whys["EgoLifeQA_A1_JAKE.json row 8 (ID '9')"]
  assert "bad answer letter 'E'" in whys["EgoLifeQA_A1_JAKE.json row 9 (ID '10')"]
  assert "missing field 'choice_c'" in whys["EgoLifeQA_A1_JAKE.json row 10 (ID '11')"]
  assert "field 'choice_b' must be str, got int" in whys["EgoLifeQA_A1_JAKE.json row 11 (ID '12')"]
  assert "query_time.date 'Monday' is not DAYn" in whys["EgoLifeQA_A1_JAKE.json row 12 (ID '13')"]
  assert "duplicate ID '1'" in whys["EgoLifeQA_A1_JAKE.json row 13 (ID '1')"]
  assert "target_time.time 'xx'" in whys["EgoLifeQA_A1_JAKE.json row 14 (ID '14')"]
  assert "missing field 'answer'" in whys["EgoLifeQA_A1_JAKE.json row 15 (ID '15')"]
  assert "bad file name" in whys[bad_file]
  assert b.num_questions() == 5  # the good rows are all there


def test_egolife_person(tmp_path):
  d = fx.write_egolife(str(tmp_path))
  other = os.path.join(d.video_dir, "A2_ALICE", "DAY1")
  os.makedirs(other)
  fx.tiny_video(os.path.join(other, "DAY1_A2_ALICE_11100000.mp4"))
  with pytest.raises(ValueError, match="pass person="):
    load_egolife(d.annotation, d.video_dir)
  b = load_egolife(d.annotation, d.video_dir, person="A2_ALICE")
  assert [s.sid for s in b.streams] == ["A2_ALICE_DAY1"] and len(b.streams[0].segments) == 1
  assert sum("DAY2" in e.why for e in b.errors) == 1  # DAY2 question, no A2 videos that day


# --- EgoTempo -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bare_list", [False, True])
def test_egotempo(tmp_path, bare_list):
  d = fx.write_egotempo(str(tmp_path), bare_list=bare_list)
  b = load_egotempo(d.annotation, d.video_dir)
  assert b.errors == [] and [s.sid for s in b.streams] == fx.EGOTEMPO_CLIPS
  q0, q1 = b.streams[0].questions
  assert q0.qid == fx.EGOTEMPO_CLIPS[0] + "_0" and q0.task == "object sequence"
  assert q0.options == () and not q0.multiple_choice and q0.answer == "The red square."
  assert math.isinf(q0.ask_after) and q1.task == "counting actions"
  assert q0.meta["clip_start"] == 12.5 and q0.meta["clip_end"] == 40.25
  assert b.streams[0].meta["ego4d_uid"] == "0a1b2c3d-0000-4000-8000-00000000000a"
  assert parse_clip_id("abc_3_9") == ("abc", 3.0, 9.0) and parse_clip_id("no-times") is None


def test_egotempo_bad_input(tmp_path):
  rows = fx.egotempo_rows()
  rows.append({**rows[0], "question_id": "x_1", "answer": ""})
  rows.append({**rows[0], "question_id": "x_2", "clip_id": "uid_9_3"})
  rows.append({k: v for k, v in rows[0].items() if k != "question_type"} | {"question_id": "x_3"})
  rows.append(copy.deepcopy(rows[0]))
  d = fx.write_egotempo(str(tmp_path), rows=rows, skip_videos=(fx.EGOTEMPO_CLIPS[1],))
  b = load_egotempo(d.annotation, d.video_dir, read_durations=True)
  whys = [e.why for e in b.errors]
  assert len(whys) == 5, whys
  assert any("field 'answer' is empty" in w for w in whys) and any("ends before it starts" in w for w in whys)
  assert any("missing field 'question_type'" in w for w in whys) and any("duplicate question_id" in w for w in whys)
  missing = [e for e in b.errors if "missing video" in e.why]
  assert len(missing) == 1 and fx.EGOTEMPO_CLIPS[1] in missing[0].where and "annotations[2]" in missing[0].where
  (s,) = b.streams
  assert len(s.questions) == 2 and s.duration == pytest.approx(2.0) and s.questions[0].ask_after == s.duration


# --- summary ---------------------------------------------------------------------------------------------


def test_summary(tmp_path):
  d = fx.write_videomme(str(tmp_path))
  assert "videomme: 3 streams, 9 questions" in load_videomme(d.annotation, d.video_dir).summary()
