"""Burning face boxes and speaker-labelled subtitles into a window's frames (taskmem-spec.md §1.2): the
perception inputs of the benchmarks. subtitles.py reads subtitle files, tracks.py face tracks, draw.py draws.

The policy never gets face tracks or a transcript as data: the official pipeline draws them onto the
video (TM tools/video_process.py `draw_boxes`), and the policy reads the tags `<face_k>` off the frames
and writes them into its memory. This module does the same drawing on a VideoClip's sampled frames, so
benchmarks with subtitles and face tracks can be fed to the policy the way it was trained.

What is drawn, as in the official renderer (sizes given for a 720-px-high frame and scaled by H / 720, so
that a low-resolution frame keeps the same layout; box lines stay 2 px and fonts stay >= 10 px):
- per face box: a 2-px red rectangle inside [x0, x1) x [y0, y1), and above its top-left corner a red tag
  with the white text `<face_k>` (font 16, padding 5), k = the window-local id of the box's identity
  (memory/identities.py). The tag is moved inside the frame when the box touches the top or right edge.
- per subtitle on screen: bottom-centred black text (font 24, padding 5, wrapped to the width minus 50 px
  each side) on white at alpha 128, reading `<face_k>: text` when the speaker is known, the plain text
  otherwise. Bottom margin 80 px; a subtitle that starts before the previous one ends alternates to
  50 px and back, and subtitle i ends no later than subtitle i+2 starts, so at most two are on screen.
Fonts: PIL's built-in scalable font (ImageFont.load_default(size)), so no font files are needed.

Times. A sampled frame's time is frame_indices / source_fps + time_offset, in stream seconds;
time_offset is where the clip's source file starts in the stream (0 for single-file streams).
A subtitle is on frames with start <= t < end. A frame at time t shows the boxes of track frame
floor(t * tracks.fps + 0.5), the official rule, so tracks sampled at 10 fps cover every source frame.

Subtitle files (parse_srt), stream seconds:
- SRT: blocks `index / HH:MM:SS,mmm --> HH:MM:SS,mmm / text lines`, separated by blank lines (the index
  line may be missing; `.` may replace `,`). Text lines are joined by spaces; <i>, <b>, <u>, <font> are
  dropped. A speaker is given by a text prefix `[face_N]: ` or `<face_N>: `.
- JSON: a list of objects, or JSONL (one object per line), each {"start", "end", "text", "speaker"}
  ("start_time", "end_time", "asr" are accepted too: the official ASR output). speaker is optional: an
  int, a tag such as "[face_3]", or null / "unknown"; without it a text prefix is read as in SRT.
Either way the number is the stream-global identity N (the file covers the whole stream, so there is
no window for a local number to belong to); render_window shows it as that window's `<face_k>`.

Face track files (load_tracks), JSON:
    {"fps": 10.0,                 # rate of the frame indices below (any rate; need not be the video's)
     "size": [1280, 720],         # optional: [width, height] the boxes are measured in
     "tracks": [{"identity": 3, "boxes": [[frame_index, x0, y0, x1, y1], ...]}, ...]}
  identity: the stream-global id N (an int, or a tag like "[face_3]"); several tracks may share one.
  frame_index: stream time * fps (so time = frame_index / fps); boxes: pixels, x0 < x1, y0 < y1.
  Per-frame detections are accepted instead of "tracks":
    "detections": [[frame_index, identity, x0, y0, x1, y1], ...]
  which is what any tracker's output (one row per detected face) converts to in one line.
  Without "size" the boxes are taken to be in the rendered frames' pixels; with it they are rescaled.
"""

from taskmem_jax.benchmarks.overlay.draw import RED, load_overlays, render_window
from taskmem_jax.benchmarks.overlay.subtitles import OverlayError, Subtitle, parse_srt, split_speaker, subtitle_layout
from taskmem_jax.benchmarks.overlay.tracks import FaceBox, FaceTracks, frame_times, load_tracks, window_identities

__all__ = [
    "RED", "FaceBox", "FaceTracks", "OverlayError", "Subtitle", "frame_times", "load_overlays", "load_tracks",
    "parse_srt", "render_window", "split_speaker", "subtitle_layout", "window_identities",
]
