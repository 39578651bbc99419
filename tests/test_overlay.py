"""Subtitle / face-track parsing and burning them into frames (benchmarks/overlay).

Rendering is checked against NumPy expectations on flat grey frames: box borders are exactly red where
a track has a box, subtitle bands appear only on frames inside [start, end), and every other frame keeps
its values exactly.
"""

import json

import numpy as np
import pytest

from taskmem_jax.benchmarks.overlay import (RED, FaceTracks, OverlayError, Subtitle, load_tracks, parse_srt,
                                            render_window, subtitle_layout, window_identities)
from taskmem_jax.memory.identities import window_ids
from taskmem_jax.processing.video import VideoClip

GREY = 90
H, W = 240, 320

SRT = """1
00:00:01,000 --> 00:00:02,500
[face_7]: Hello there.

2
00:00:02,000 --> 00:00:04,000
<i>plain</i> line one
line two

3
00:01:02.5 --> 01:00:00,000
<face_3>: late
"""


def test_parse_srt():
  subs = parse_srt(SRT)
  assert subs == [Subtitle(1.0, 2.5, "Hello there.", 7), Subtitle(2.0, 4.0, "plain line one line two", None),
                  Subtitle(62.5, 3600.0, "late", 3)]


def test_parse_srt_file_crlf_bom_no_index(tmp_path):
  path = tmp_path / "a.srt"
  path.write_bytes(("\ufeff00:00:03,000 --> 00:00:04,000\r\nB\r\n\r\n2\r\n00:00:00,000 --> 00:00:01,000\r\nA\r\n")
                   .encode("utf-8"))
  assert parse_srt(path) == parse_srt(str(path)) == [Subtitle(0.0, 1.0, "A"), Subtitle(3.0, 4.0, "B")]


def test_parse_json_and_jsonl(tmp_path):
  items = [{"start": 2, "end": 3, "text": "b", "speaker": "[face_4]"},
           {"start_time": 0.5, "end_time": 1.5, "asr": "a"},
           {"start": 4, "end": 5, "text": "[face_2]: c"},
           {"start": 6, "end": 7, "text": "<face_2>: d", "speaker": 2},
           {"start": 8, "end": 9, "text": "e", "speaker": "unknown"}]
  want = [Subtitle(0.5, 1.5, "a"), Subtitle(2.0, 3.0, "b", 4), Subtitle(4.0, 5.0, "c", 2), Subtitle(6.0, 7.0, "d", 2),
          Subtitle(8.0, 9.0, "e")]
  assert parse_srt(json.dumps(items)) == want
  path = tmp_path / "s.jsonl"
  path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
  assert parse_srt(path) == want


@pytest.mark.parametrize("text, match", [
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:01 -> 00:00:02\nbad\n", r"block 2 \(line 6\).*HH:MM:SS"),
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\nabc\n00:00:01,000 --> 00:00:02,000\nx\n", r"block 2 \(line 5\)"),
    ("1\n00:00:01,000 --> 00:00:02,000\n", r"block 1 .*no text"),
    ("1\n00:00:03,000 --> 00:00:02,000\nx\n", r"block 1 .*start=3.0 end=2.0"),
    ("7\n", r"block 1 .*no timing line"),
    ('[{"start": 1, "end": 2, "text": "a"}, {"start": 1, "text": "b"}]', r"item 1 .*missing 'end'"),
    ('[{"start": 1, "end": 2, "text": "a", "speaker": "bob"}]', r"item 0 .*bob"),
    ('{"start": 1, "end": 2, "text": "a"}\n{"start": 1, "end": \n', r"JSONL line 2"),
    ('[{"start": 1, "end": 2, "text": 5}]', r"item 0 .*text must be a string"),
])
def test_parse_errors(text, match):
  with pytest.raises(OverlayError, match=match):
    parse_srt(text)


def test_parse_missing_file(tmp_path):
  with pytest.raises(OverlayError, match="not found"):
    parse_srt(str(tmp_path / "none.srt"))


def test_load_tracks_both_forms(tmp_path):
  tracks = {"fps": 10, "size": [640, 480], "tracks": [{"identity": 3, "boxes": [[0, 1, 2, 30, 40], [1, 2, 3, 31, 41]]},
                                                       {"identity": "[face_5]", "boxes": [[1, 50, 60, 70, 80]]}]}
  path = tmp_path / "t.json"
  path.write_text(json.dumps(tracks))
  a = load_tracks(path)
  b = load_tracks({"fps": 10, "size": [640, 480],
                   "detections": [[0, 3, 1, 2, 30, 40], [1, 3, 2, 3, 31, 41], [1, 5, 50, 60, 70, 80]]})
  assert a == b
  assert a.fps == 10.0 and a.size == (640, 480) and sorted(a.frames) == [0, 1]
  assert [box.identity for box in a.frames[1]] == [3, 5]


@pytest.mark.parametrize("data, match", [
    ({"tracks": []}, "fps"),
    ({"fps": 10, "tracks": [], "detections": []}, "exactly one"),
    ({"fps": 10, "tracks": [{"identity": 1, "boxes": [[0, 5, 5, 5, 9]]}]}, r"track 0 box 0: .*x0 < x1"),
    ({"fps": 10, "tracks": [{"identity": 1, "boxes": [[0, 1, 2, 3]]}]}, r"track 0 box 0"),
    ({"fps": 10, "tracks": [{"identity": 1, "boxes": [[-1, 1, 2, 3, 4]]}]}, r"frame index -1"),
    ({"fps": 10, "tracks": [{"boxes": []}]}, r"track 0"),
    ({"fps": 10, "detections": [[0, None, 1, 2, 3, 4]]}, r"detection 0: .*identity"),
    ({"fps": 10, "size": [640], "tracks": []}, "size"),
])
def test_load_tracks_errors(data, match):
  with pytest.raises(OverlayError, match=match):
    load_tracks(data)


def test_subtitle_layout_alternates_and_trims():
  subs = [Subtitle(0, 4, "a"), Subtitle(1, 5, "b"), Subtitle(2, 6, "c"), Subtitle(7, 8, "d"), Subtitle(7.5, 9, "e")]
  layout = subtitle_layout(subs)
  assert [margin for _, margin in layout] == [80, 50, 80, 80, 50]
  assert [s.end for s, _ in layout] == [2, 5, 6, 8, 9]  # a ends where c starts: at most two on screen


def _clip(n=6, fps=2.0, start=0.0):
  """Flat grey frames [n, H, W, 3] at times start + k / fps."""
  frames = np.full((n, H, W, 3), GREY, np.uint8)
  first = int(round(start * fps))
  return VideoClip(frames, np.arange(first, first + n), fps, start, start + n / fps, first)


def _tracks():
  # identity 5 on track frames 1 and 2 (t = 0.5 s, 1.0 s at fps 2), identity 9 on frame 4 (t = 2.0 s).
  return load_tracks({"fps": 2, "tracks": [{"identity": 5, "boxes": [[1, 40, 60, 120, 150], [2, 40, 60, 120, 150]]},
                                           {"identity": 9, "boxes": [[4, 200, 30, 260, 100]]}]})


def test_pass_through_without_overlays():
  clip = _clip()
  clip.frames[:] = np.random.default_rng(0).integers(0, 256, clip.frames.shape, dtype=np.uint8)
  for kwargs in ({}, {"subtitles": [], "tracks": None}):
    out = render_window(clip, **kwargs)
    np.testing.assert_array_equal(out.frames, clip.frames)
    assert out.frames is not clip.frames
    np.testing.assert_array_equal(out.frame_indices, clip.frame_indices)


def test_boxes_drawn_only_where_tracked():
  clip = _clip()
  before = clip.frames.copy()
  out = render_window(clip, tracks=_tracks()).frames
  np.testing.assert_array_equal(clip.frames, before)  # input untouched
  changed = (out != before).any(axis=(1, 2, 3))
  assert changed.tolist() == [False, True, True, False, True, False]
  red = np.array(RED, np.uint8)
  for k in (1, 2):
    frame = out[k]
    x0, y0, x1, y1 = 40, 60, 120, 150
    for edge in (frame[y0:y0 + 2, x0:x1], frame[y1 - 2:y1, x0:x1], frame[y0:y1, x0:x0 + 2], frame[y0:y1, x1 - 2:x1]):
      assert (edge == red).all()
    np.testing.assert_array_equal(frame[y0 + 2:y1 - 2, x0 + 2:x1 - 2], GREY)  # inside the border: untouched
    # the <face_1> tag: a red patch with white text just above the box's top-left corner
    tag = frame[:y0, x0:x0 + 60]
    assert ((tag == red).all(-1)).sum() > 50 and tag[..., 1].max() > 200  # G > 200: white, not red or grey
    # nothing drawn right of the tag or below the box
    np.testing.assert_array_equal(frame[:, x1 + 40:], GREY)
    np.testing.assert_array_equal(frame[y1:], GREY)
  assert (out[4][30:32, 200:260] == red).all()


def test_box_size_rescaled():
  tracks = _tracks()
  tracks = FaceTracks(tracks.fps, tracks.frames, size=(2 * W, 2 * H))  # boxes measured on a 2x larger frame
  out = render_window(_clip(), tracks=tracks).frames
  assert (out[1][30:32, 20:60] == np.array(RED, np.uint8)).all()
  np.testing.assert_array_equal(out[1][32:73, 22:58], GREY)


def test_subtitle_band_only_inside_interval():
  clip = _clip()  # frame times 0, 0.5, ..., 2.5
  out = render_window(clip, subtitles=[Subtitle(1.0, 2.0, "a subtitle")]).frames
  changed = (out != clip.frames).any(axis=(1, 2, 3))
  assert changed.tolist() == [False, False, True, True, False, False]  # [1.0, 2.0): frames at 1.0 and 1.5
  rows, cols = np.nonzero((out[2] != GREY).any(-1))
  scale = H / 720
  assert rows.max() < H - 80 * scale and rows.min() > H / 2  # above the 80-px bottom margin, low in the frame
  assert abs((cols.min() + cols.max()) / 2 - W / 2) <= 1  # centred
  # background: white at alpha 128 over grey; text: black
  band = out[2][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  blended = round(GREY + (255 - GREY) * 128 / 255)
  values, counts = np.unique(band[..., 0], return_counts=True)
  assert abs(int(values[counts.argmax()]) - blended) <= 1
  assert band.min() < 40


def test_overlapping_subtitles_and_speaker_label():
  clip = _clip()
  subs = [Subtitle(0.0, 3.0, "first"), Subtitle(0.5, 3.0, "second")]
  out = render_window(clip, subtitles=subs).frames
  rows0 = np.nonzero((out[0] != GREY).any((-1, -2)))[0]
  rows1 = np.nonzero((out[1] != GREY).any((-1, -2)))[0]
  assert rows1.max() > rows0.max()  # the second one sits on the 50-px margin, lower down
  plain = render_window(clip, subtitles=[Subtitle(0.0, 1.0, "hi")]).frames[0]
  spoken = render_window(clip, subtitles=[Subtitle(0.0, 1.0, "hi", 42)], local_ids={42: 3}).frames[0]
  width = lambda f: np.ptp(np.nonzero((f != GREY).any((0, -1)))[0])  # noqa: E731
  assert width(spoken) > width(plain)  # "<face_3>: hi"


def test_local_ids_default_and_missing():
  clip = _clip()
  subs = [Subtitle(0.0, 0.5, "x", 9)]
  visible, speaking = window_identities(clip, subtitles=subs, tracks=_tracks())
  assert window_ids(visible, speaking) == {9: 1, 5: 2}
  default = render_window(clip, subtitles=subs, tracks=_tracks()).frames
  explicit = render_window(clip, subtitles=subs, tracks=_tracks(), local_ids={9: 1, 5: 2}).frames
  np.testing.assert_array_equal(default, explicit)
  with pytest.raises(OverlayError, match="identity 5"):
    render_window(clip, tracks=_tracks(), local_ids={9: 1})


def test_time_offset_and_window_identities():
  clip = _clip(n=2, start=0.0)  # frame times 0.0, 0.5 in its file; the file starts 1.0 s into the stream
  out = render_window(clip, tracks=_tracks(), time_offset=1.0).frames
  assert (out != GREY).any(axis=(1, 2, 3)).tolist() == [True, False]  # stream 1.0 s: frame 2 has a box
  visible, speaking = window_identities(clip, tracks=_tracks(), time_offset=1.0)
  # [1.0, 2.0) shows track frames 2..4 (frame 4 covers [1.75, 2.25)), so both identities count
  assert [i for _, i in visible] == [5, 9] and speaking == []
  visible, _ = window_identities(_clip(n=1, fps=4.0, start=0.25), tracks=_tracks())  # [0.25, 0.5): frames 0..1
  assert [i for _, i in visible] == [5]
