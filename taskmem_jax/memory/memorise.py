"""memorise: the rollout API over streams. Whole streams, side by side, through the jitted window scans of
memory/rollout.py.

Each stream is a ClipStream: its clips as processor video items, all of one grid. Every clip is preprocessed
and encoded once (rollout.encode_clips); the windows then run as rollout.rollout's programs:
- one per clip count for a stream's first 4 windows (build_templates), so small windows fill small buffers;
- then scans over chunks of `chunk` full windows.
A stream can be continued from an EpisodicMemory at any clip: the ring starts with the tokens of the memories
of the 4 clips before it. The hint (task questions) is part of the template; the steer is part of the model
(adapters.steer.set_steer). Each response is parsed strictly on the host, as memory/loop.py parses, and the
first valid sample... of each row is stored: row b * num_samples + s is trajectory s of stream b, with its own
memory.

The window the scan shows is the window memory/loop.memorize_stream shows, token for token, when the
tokenizer splices memories exactly (tests/test_memorise.py checks the memories are the loop's). The ring holds
the memory as cut at the token level (rollout.cut_memory); `mismatches` counts windows where that cut and the
strict parse disagree, so a policy whose memories would not re-tokenize as written is seen, not hidden.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import numpy as np

from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.loop import StepRecord
from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.memory.sample import WindowSamples, WindowSampling, parse_samples, sample_window
from taskmem_jax.memory.store import MAX_PREVIOUS, EpisodicMemory, schedule
from taskmem_jax.processing.processor import Qwen3VLProcessor
from taskmem_jax.sampling import SamplingParams


class ClipStream(NamedTuple):
  """A stream as the scan reads it: num_clips clips of `interval` seconds; clip_item(k) -> the processor's video
  item of clip k ([k * interval, (k + 1) * interval) seconds), every clip of one grid."""
  num_clips: int
  clip_item: Callable[[int], dict]


@dataclasses.dataclass
class Memorised:
  """One trajectory: its memory (continued in place when one was given), a StepRecord per window written by
  this call, and how many windows' token-level cut disagreed with the strict parse."""
  memory: EpisodicMemory
  records: list[StepRecord]
  mismatches: int = 0


def clip_pixels(processor: Qwen3VLProcessor, stream: ClipStream, first: int, stream_id: str = "stream"):
  """Clips first .. num_clips - 1 preprocessed: (pixels [n, t*h*w, C*T*P*P], grid (t, h, w), timestamps of a
  clip's groups). Raises ValueError naming the clip whose grid or timestamps differ from the first's."""
  pixels, grid, stamps = [], None, None
  for k in range(first, stream.num_clips):
    clip = processor.prepare(stream.clip_item(k))
    if grid is None:
      grid, stamps = tuple(int(x) for x in clip.grid_thw), clip.timestamps
    elif tuple(int(x) for x in clip.grid_thw) != grid or clip.timestamps != stamps:
      raise ValueError(f"{stream_id} clip {k}: grid {clip.grid_thw.tolist()} timestamps {clip.timestamps} differ "
                       f"from clip {first}'s {list(grid)} {stamps}; the scan needs clips of one shape (a partial "
                       "last clip is one: memorise it with memory.loop.memorize_stream)")
    pixels.append(clip.pixel_values)
  return np.stack(pixels), grid, stamps


def _templates(processor, grid, stamps, width, hint, prompt, interval):
  key = (id(processor), grid, stamps, width, tuple(hint or ()), prompt, interval)
  if key not in _TEMPLATE_SETS:
    _TEMPLATE_SETS[key] = R.build_templates(processor, grid, list(stamps), width, list(hint) if hint else None,
                                            interval, prompt=prompt)
  return _TEMPLATE_SETS[key]


# Templates by (processor, clip shape, width, hint, prompt): the same objects, so the compiled programs are reused.
_TEMPLATE_SETS: dict = {}


def memorise(model, processor: Qwen3VLProcessor, streams: Sequence[ClipStream], sampling: WindowSampling, *,
             prompt: WindowPrompt, hint: Sequence[str] | None = None, steer: np.ndarray | None = None, seed: int = 0,
             memories: Sequence[EpisodicMemory] | None = None, first_clip: int = 0, interval: int = 10,
             chunk: int = 8, on_clip: Callable[[int, int, Memorised], None] | None = None, mesh=None,
             preset: str = "fsdp") -> list[Memorised]:
  """Memorises streams clip by clip, from first_clip to each one's end, in one batch of jitted window scans.

  sampling: as memory.sample.WindowSampling (greedy by default; the memory budget is enforced while decoding
  and bounds the parse). prompt: the policy's window prompt; hint: task questions shown in every window
  (Phase Two); steer: steer values [n_layers, H] applied while memorising (the model must have the steer added;
  its values are restored after). memories: one per stream to continue (the clips before first_clip are read
  from it and it is extended in place; default: empty). on_clip(row, clip, Memorised): called once a clip's
  memory is stored, e.g. to save progress; windows arrive a chunk at a time.

  Returns a Memorised per row: row b * sampling.num_samples + s is trajectory s of stream b.
  """
  if not streams:
    return []
  g = sampling.num_samples
  memories = [EpisodicMemory(interval) for _ in streams] if memories is None else list(memories)
  if len(memories) != len(streams):
    raise ValueError(f"memories: {len(memories)} given for {len(streams)} streams")
  if g > 1 and any(len(m) for m in memories):
    raise ValueError("memories: continuing a stream is for one trajectory per stream (num_samples=1)")
  rows = [memories[b] if g == 1 else EpisodicMemory(interval) for b in range(len(streams)) for _ in range(g)]
  lengths = np.array([s.num_clips for s in streams])
  if (lengths <= first_clip).all():
    return [Memorised(m, []) for m in rows]
  start = max(first_clip - MAX_PREVIOUS, 0)  # the earliest clip a window shows
  clips = [clip_pixels(processor, s, start, f"stream {b}") if s.num_clips > first_clip else None
           for b, s in enumerate(streams)]
  shaped = next(c for c in clips if c is not None)
  for b, c in enumerate(clips):
    if c is not None and c[1:] != shaped[1:]:
      raise ValueError(f"stream {b}: clips of grid {c[1]} at {c[2]} s, stream 0's are {shaped[1]} at {shaped[2]} s")
  n = int(lengths.max()) - start
  pixels = np.zeros((len(streams), n, *shaped[0].shape[1:]), np.float32)
  for b, c in enumerate(clips):
    if c is not None:
      pixels[b, :len(c[0])] = c[0]
  tokenizer = processor.tokenizer
  encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
  # The ring's memory width: the memory budget (tokens from </think> on) bounds what a window writes.
  shown = [[encode(m.get(c)) if c in m else [] for c in range(first_clip - MAX_PREVIOUS, first_clip)]
           for m in memories]
  width = max([sampling.memory_budget or sampling.max_new_tokens] + [len(t) for s in shown for t in s])
  ring = (np.zeros((len(streams), MAX_PREVIOUS, width), np.int32), np.zeros((len(streams), MAX_PREVIOUS), np.int32))
  for b, slots in enumerate(shown):
    for j, tokens in enumerate(slots):
      ring[0][b, j, :len(tokens)], ring[1][b, j] = tokens, len(tokens)
  templates = _templates(processor, shaped[1], shaped[2], width, hint, prompt, float(interval))
  params = _params(processor, sampling)
  fmt = R.TokenFormat.from_tokenizer(tokenizer, processor.stop_token_ids)
  features, deepstack = R.encode_clips(model, pixels, shaped[1])
  windows = {w.clip: w for w in schedule(float(lengths.max()) * interval, interval)}
  results = [Memorised(m, []) for m in rows]

  def store(clip_ids, out: R.RolloutOutput):
    for i, clip in enumerate(clip_ids):
      for row, result in enumerate(results):
        if clip >= lengths[row // g]:
          continue
        step = R.sampler.GenerateOutput(out.tokens[i, row:row + 1], out.logprobs[i, row:row + 1],
                                        out.lengths[i, row:row + 1])
        sample = parse_samples(processor, step, max_memory_tokens=sampling.parse_budget)[0]
        cut = out.memories[i, row, :out.memory_lengths[i, row]].tolist()
        if (sample.parse.ok and encode(sample.parse.description) != cut) or (not sample.parse.ok and cut):
          result.mismatches += 1
        previous = result.memory.previous(clip)
        if sample.parse.ok:
          result.memory.add(clip, sample.parse.description)
        result.records.append(StepRecord(windows[clip], previous, [sample.body], [sample.text], [sample.parse]))
        if on_clip is not None:
          on_clip(row, clip, result)

  previous_steer = None
  if steer is not None:
    previous_steer = steer_lib.get_steer(model)
    steer_lib.set_steer(model, steer)
  try:
    R.rollout(model, templates, features, deepstack, params, fmt, seed, g, mesh, preset,
              num_clips=lengths - start, first_clip=first_clip - start, ring=ring, chunk=chunk,
              on_chunk=lambda ids, out: store([k + start for k in ids], out), clip_offset=start)
  finally:
    if previous_steer is not None:
      steer_lib.set_steer(model, previous_steer)
  return results


def split_window(processor: Qwen3VLProcessor, item: dict, interval: float = 10.0):
  """A window's video item -> (its clips' pixels [n, t*h*w, C*T*P*P], clip grid (t, h, w), a clip's timestamps,
  the window's pixels and grid [1, 3]): the window preprocessed once and cut into its n clips of `interval`
  seconds. Raises ValueError when the window is not n whole clips of one shape."""
  window = processor.prepare(item)
  stamps, (groups, h, w) = np.asarray(window.timestamps), (int(x) for x in window.grid_thw)
  per_clip = int(np.sum(stamps < interval))
  n = groups // max(per_clip, 1)
  expected = (np.arange(n)[:, None] * interval + stamps[None, :per_clip]).reshape(-1) if per_clip else None
  if not per_clip or n * per_clip != groups or not np.allclose(stamps, expected, atol=1e-6):
    raise ValueError(f"window {item.get('video_start', '')}-{item.get('video_end', '')}: {groups} frame groups at "
                     f"{stamps.tolist()} s are not whole {interval:g}-s clips of one shape")
  pixels = window.pixel_values.reshape(n, per_clip * h * w, -1)
  return pixels, (per_clip, h, w), tuple(float(s) for s in stamps[:per_clip]), window.pixel_values, \
      np.asarray([[groups, h, w]])


def sample_windows(model, processor: Qwen3VLProcessor, items: Sequence[dict], previous: Sequence[Sequence[str]],
                   sampling: WindowSampling, seed: int, *, prompt: WindowPrompt, questions: Sequence[str] | None = None,
                   interval: int = 10, window_ids: Sequence[int] | None = None,
                   split: Sequence | None = None) -> list[WindowSamples]:
  """memory.sample.sample_window for many windows at once: each window's G samples, parsed, as WindowSamples
  (the compact prompt's ids, the window's pixels and grid). All windows run as one batch of one program
  (rollout.sample_window_batch, the full window buffer with the slots of missing clips masked; each window
  prefilled once for its G samples); previous[i]: the memories window i shows, oldest first. Window i's
  samples draw from keys of (seed, window_ids[i]) (default i; rollout.row_keys), so they do not depend on the
  other windows of the batch (not sample_window's draws: the same distribution, other numbers). Windows of
  clips of different shapes run as one batch per shape; a window that is not whole clips of one shape (a
  stream's partial end) is drawn alone, with sample_window. split: the
  windows' split_window results (None: drawn alone), when the caller has them."""
  ids = list(range(len(items))) if window_ids is None else [int(i) for i in window_ids]
  if split is None:
    split = []
    for item in items:
      try:
        split.append(split_window(processor, item, interval))
      except ValueError:  # not whole clips of one shape (a stream's partial end): drawn alone below
        split.append(None)
  shapes = {s[1:3] for s in split if s is not None}
  if None in split or len(shapes) > 1:  # one batch per clip shape; the rest alone
    drawn = {}
    for shape in shapes:
      batch = [i for i, s in enumerate(split) if s is not None and s[1:3] == shape]
      drawn.update(zip(batch, sample_windows(
          model, processor, [items[i] for i in batch], [previous[i] for i in batch], sampling, seed, prompt=prompt,
          questions=questions, interval=interval, window_ids=[ids[i] for i in batch], split=[split[i] for i in batch])))
    for i in (i for i, s in enumerate(split) if s is None):
      drawn[i] = sample_window(model, processor, items[i], previous[i], sampling, seed * 7919 + ids[i], prompt=prompt,
                               questions=questions)
    return [drawn[i] for i in range(len(items))]
  if not split:
    return []
  g = sampling.num_samples
  grid, stamps = next(iter(shapes))
  encode = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]
  shown = [[encode(p) for p in prev] for prev in previous]
  if any(len(s) > MAX_PREVIOUS for s in shown):
    raise ValueError(f"sample_windows: a window shows at most {MAX_PREVIOUS} previous memories")
  width = max([1] + [len(t) for s in shown for t in s])  # the ring only shows memories here: nothing is pushed
  templates = _templates(processor, grid, stamps, width, questions, prompt, float(interval))
  params = _params(processor, sampling)
  fmt = R.TokenFormat.from_tokenizer(processor.tokenizer, processor.stop_token_ids)
  # One batch: every window in the full buffer, its clips from slot 0, the slots after its last clip masked.
  ring = (np.zeros((len(items), MAX_PREVIOUS, width), np.int32), np.zeros((len(items), MAX_PREVIOUS), np.int32))
  pixels = np.zeros((len(items), R.CLIP_SLOTS, *split[0][0].shape[1:]), np.float32)
  for i, s in enumerate(split):
    pixels[i, :len(s[0])] = s[0]
    for j, tokens in enumerate(shown[i], start=MAX_PREVIOUS - len(shown[i])):  # right-aligned
      ring[0][i, j, :len(tokens)], ring[1][i, j] = tokens, len(tokens)
  steps = np.array([len(s[0]) - 1 for s in split])
  features, deepstack = R.encode_clips(model, pixels, grid)
  out = R.sample_window_batch(model, templates[-1], features, deepstack, ring, steps, params, fmt, seed, g, ids)
  results = []
  for i, s in enumerate(split):
    prompt_ids, _ = R.compact_prompt(templates[-1], int(steps[i]), ring[0][i], ring[1][i])
    block = slice(i * g, (i + 1) * g)
    drawn = R.sampler.GenerateOutput(out.tokens[0, block], out.logprobs[0, block], out.lengths[0, block])
    results.append(WindowSamples(prompt_ids, s[3], s[4],
                                 parse_samples(processor, drawn, max_memory_tokens=sampling.parse_budget)))
  return results


def _params(processor: Qwen3VLProcessor, sampling: WindowSampling) -> SamplingParams:
  think_end = processor.tokenizer.convert_tokens_to_ids("</think>")
  return SamplingParams(sampling.max_new_tokens, sampling.temperature, sampling.top_k, sampling.top_p,
                        tuple(processor.stop_token_ids), processor.pad_token_id, sampling.thinking_budget,
                        think_end, sampling.memory_budget)
