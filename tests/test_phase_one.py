"""Phase-One training loop: the stream simulator, event files, and an exact resume of a real run."""

import json
import os
import struct

import jax
import numpy as np
import pytest

from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.rl.streams import StreamSlots
from taskmem_jax.tensorboard import SummaryWriter, crc32c, masked_crc32c, read_scalars

from helpers import LengthJudge, phase_one_config

POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "synthworld_policy")


def _policy(checkpoint):
  """The policy with its arrays committed to the first device, as a restored checkpoint's are: fresh and
  resumed runs then run the same compiled programs (uncommitted arguments lower to others), so the tests
  below compile each window shape once."""
  from flax import nnx

  from taskmem_jax.models import qwen3_vl

  model = qwen3_vl.from_pretrained(checkpoint, dtype=np.float32)
  nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
  return model


def test_stream_slots_force_after_n_max_plus_one_and_start_at_the_start_clip():
  """Official simulate_ep_data: forced out only when step > n_max (n_max + 1 clips shown), never resampled at
  or before n_min; a stream starts at its video's start clip (start_time // 10) and its depth counts from there;
  a video that runs out of clips ends its stream."""
  slots = StreamSlots(4, lambda video: 100, n_min=5, n_max=5, p_resample=0.0, seed=0,
                      start_clip=lambda video: 10 * video)
  assert [s.clip for s in slots.slots] == [0, 10, 20, 30]
  seen = []
  for step in range(6):
    seen.append([s.clip for s in slots.slots])
    slots.advance(step)
  assert seen[-1] == [5, 15, 25, 35]  # the sixth clip (n_max + 1) of every stream is shown ...
  assert [s.video for s in slots.slots] == [4, 5, 6, 7]  # ... and then the streams are replaced
  assert [s.clip for s in slots.slots] == [40, 50, 60, 70]
  short = StreamSlots(1, lambda video: 3, n_min=5, n_max=22, p_resample=0.0, start_clip=lambda video: 1)
  short.advance(0)
  assert short.slots[0].clip == 2
  short.advance(1)
  assert short.slots[0].video == 1  # clips 1 and 2 were all the video had after its start
  restored = StreamSlots(1, lambda video: 3, start_clip=lambda video: 1)
  restored.restore(json.loads(json.dumps(short.state())))
  assert restored.slots[0].start == 1
  with pytest.raises(ValueError, match="start clip 7"):
    StreamSlots(1, lambda video: 3, start_clip=lambda video: 7)


def test_stream_slots_extend_resample_and_force():
  slots = StreamSlots(64, lambda video: 100, n_min=3, n_max=6, p_resample=0.5, seed=1)
  depths = []
  for step in range(12):
    slots.advance(step)
    depths.append([s.clip for s in slots.slots])
  depths = np.array(depths)
  # A stream shows at most n_max + 1 = 7 clips (clips 0..6), as the official `step > n_max` forces it out, and
  # some do show the 7th.
  assert depths.max() == 6
  # Below n_min streams always extend: after 3 steps every stream is at clip 3.
  assert (depths[2] == 3).all()
  # Past n_min, about half the streams are resampled each step.
  resampled = (depths[3] == 0).mean()
  assert 0.3 < resampled < 0.7
  assert slots.next_video > 64
  # The draws depend only on (seed, step): a restored simulator continues identically.
  a = StreamSlots(8, lambda v: 100, n_min=1, n_max=4, seed=3)
  for step in range(3):
    a.advance(step)
  b = StreamSlots(8, lambda v: 100, n_min=1, n_max=4, seed=3)
  b.restore(json.loads(json.dumps(a.state())))
  for step in range(3, 9):
    a.advance(step)
    b.advance(step)
  assert a.state() == b.state()
  # A stream also ends with its video.
  short = StreamSlots(1, lambda v: 2, n_min=5, n_max=10)
  short.advance(0)
  short.advance(1)
  assert short.slots[0].video == 1 and short.slots[0].clip == 0
  with pytest.raises(ValueError, match="n_min"):
    StreamSlots(2, lambda v: 9, n_min=5, n_max=3)


def test_crc32c_and_events_decode_with_protobuf(tmp_path):
  assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
  # Decode the written Events with the protobuf library's own parser, from a descriptor built here.
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

  fdp = descriptor_pb2.FileDescriptorProto(name="ev.proto", package="t", syntax="proto3")
  value = fdp.message_type.add(name="Value")
  value.field.add(name="tag", number=1, type=9, label=1)
  value.field.add(name="simple_value", number=2, type=2, label=1)
  summary = fdp.message_type.add(name="Summary")
  summary.field.add(name="value", number=1, type=11, label=3, type_name=".t.Value")
  event = fdp.message_type.add(name="Event")
  event.field.add(name="wall_time", number=1, type=1, label=1)
  event.field.add(name="step", number=2, type=3, label=1)
  event.field.add(name="file_version", number=3, type=9, label=1)
  event.field.add(name="summary", number=5, type=11, label=1, type_name=".t.Summary")
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fdp)
  Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))

  writer = SummaryWriter(str(tmp_path))
  writer.scalars(7, {"reward": 0.25, "faithfulness": 1.0})
  writer.close()
  data = open(writer.path, "rb").read()
  events, offset = [], 0
  while offset < len(data):
    (n,) = struct.unpack_from("<Q", data, offset)
    assert struct.unpack_from("<I", data, offset + 8)[0] == masked_crc32c(data[offset:offset + 8])
    payload = data[offset + 12:offset + 12 + n]
    assert struct.unpack_from("<I", data, offset + 12 + n)[0] == masked_crc32c(payload)
    events.append(Event.FromString(payload))
    offset += 16 + n
  assert events[0].file_version == "brain.Event:2"
  assert {e.step for e in events[1:]} == {7}
  assert {v.tag: v.simple_value for e in events[1:] for v in e.summary.value} == {"reward": 0.25, "faithfulness": 1.0}
  # Our reader decodes what protobuf does, over every file of the logdir (a second writer: a resumed run).
  second = SummaryWriter(str(tmp_path))
  second.scalars(8, {"reward": 0.5})
  second.close()
  assert second.path != writer.path
  assert read_scalars(str(tmp_path)) == {"reward": [(7, 0.25), (8, 0.5)], "faithfulness": [(7, 1.0)]}


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_two_steps_equal_one_then_resume_then_one(tmp_path):
  from experiments.phase_one import make_source
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.rewards import SYNTHWORLD_TAGS
  from taskmem_jax.rl.trainer import train

  def run(workdir, **kwargs):
    cfg = phase_one_config(workdir)
    # 1 off-policy step, then 1 on-policy step whose windows show the history the first one left: the resume
    # comes between them, so the checkpoint must carry the streams (their memories), the parameters and the
    # Adam moments. Two steps, not more: every deeper window is another set of compilations.
    cfg.steps = 2
    model = _policy(cfg.checkpoint)
    processor = Qwen3VLProcessor.from_pretrained(cfg.checkpoint)
    return train(cfg, model, processor, make_source(cfg), LengthJudge(), prompt=read_window_prompt(cfg.checkpoint),
                 tags=SYNTHWORLD_TAGS, progress=False, **kwargs)

  initial = jax.tree.leaves(qwen3_vl.from_pretrained(POLICY, dtype=np.float32))
  straight = run(tmp_path / "a")
  part = run(tmp_path / "b", stop_at=1)
  assert [h["step"] for h in part["history"]] == [1]
  resumed = run(tmp_path / "b")
  assert resumed["resumed_from"] == 1
  assert [h["updates"] for h in straight["history"]] == [1, 1]  # the run really trained, at both steps
  for x, y in zip(jax.tree.leaves(straight["model"]), jax.tree.leaves(resumed["model"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(initial, jax.tree.leaves(straight["model"])))
  lines = lambda d: [json.loads(line) for line in open(d / "metrics.jsonl")]
  a, b = lines(tmp_path / "a"), lines(tmp_path / "b")
  assert [h["step"] for h in b] == [1, 2]
  for x, y in zip(a, b):
    assert x["reward"] == y["reward"] and x["stage"] == y["stage"]
  assert a[0]["stage"] == "off_policy" and a[1]["stage"] == "on_policy"
  assert os.path.isfile(tmp_path / "a" / "export" / "model.safetensors")
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "a" / "tb"))
  # The event files hold every step's metrics, the resumed run's included; curves.png sits by curves.html.
  for d, rows in ((tmp_path / "a", a), (tmp_path / "b", b)):
    rewards = read_scalars(str(d / "tb"))["reward"]
    assert [s for s, _ in rewards] == [1, 2]
    np.testing.assert_allclose([v for _, v in rewards], [h["reward"] for h in rows], rtol=1e-6)
    assert (d / "curves.png").stat().st_size > 1000 and '<img src="curves.png"' in (d / "curves.html").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_population_of_two_equals_two_separate_runs(tmp_path):
  from experiments.phase_one import make_source
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.rewards import SYNTHWORLD_TAGS
  from taskmem_jax.rl.trainer import train

  settings = [{"memory_token_threshold": 40}, {"memory_token_threshold": 46, "usefulness_scale": 0.5}]

  def run(workdir, population):
    cfg = phase_one_config(workdir)
    cfg.steps = 2  # the second samples with each member's own updated parameters
    # One-clip videos: every window is a first clip, so both steps share one compilation (the single runs
    # share it with the test above, when they run in one process).
    cfg.world_clips = 1
    cfg.population = population
    model = _policy(cfg.checkpoint)
    processor = Qwen3VLProcessor.from_pretrained(cfg.checkpoint)
    return train(cfg, model, processor, make_source(cfg), LengthJudge(), prompt=read_window_prompt(cfg.checkpoint),
                 tags=SYNTHWORLD_TAGS, progress=False)

  both = run(tmp_path / "pop", settings)
  assert len(both["models"]) == 2 and [h["member"] for h in both["history"]] == [0, 1, 0, 1]
  singles = [run(tmp_path / f"single{k}", [s]) for k, s in enumerate(settings)]
  assert [h["reward"] for h in both["history"][0::2]] == [h["reward"] for h in singles[0]["history"]]
  assert [h["reward"] for h in both["history"][1::2]] == [h["reward"] for h in singles[1]["history"]]
  assert both["history"][0]["reward"] != both["history"][1]["reward"]  # the settings really differ
  # Batched (vmapped) matmuls round differently from unbatched ones, and Adam turns a tiny gradient's
  # rounding into a visible step, so equality is up to 1e-5 absolute (the updates themselves are ~1e-3).
  for member, single in zip(both["models"], singles):
    for x, y in zip(jax.tree.leaves(member), jax.tree.leaves(single["model"])):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
  moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
              for x, y in zip(jax.tree.leaves(both["models"][0]), jax.tree.leaves(both["models"][1])))
  assert moved > 1e-4  # the two members really trained apart
  assert os.path.isfile(tmp_path / "pop" / "export" / "member_1" / "model.safetensors")


def test_official_30b_config_values():
  from taskmem_jax.configs import phase_one_30b_a3b

  c = phase_one_30b_a3b.get_config()
  assert (c.num_streams, c.group_size, c.num_minibatches, c.lr, c.loss, c.clip_low, c.clip_high) == (
      32, 8, 4, 1e-6, "gspo", 0.2, 0.28)
  assert (c.temperature, c.top_k, c.top_p, c.max_new_tokens) == (0.7, 20, 0.8, 8192)
  assert (c.reward.memory_token_threshold, c.reward.think_threshold, c.reward.usefulness_scale,
          c.reward.format_penalty) == (150, 1200, 0.1, -1.5)
  assert (c.n_min, c.n_max, c.p_resample, c.nsr_gate, c.kl_coef) == (11, 22, 0.13, "optimize_threshold", 0.0)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_video_files_source_trains_from_mp4_and_teacher_json(tmp_path):
  from experiments.phase_one import make_source
  from taskmem_jax.envs.synthworld import generate, policy_world_config, write_stream
  from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.rl.trainer import train

  stream = generate(77, policy_world_config(POLICY, num_clips=3))
  write_stream(stream, tmp_path / "v.mp4")
  teacher = teacher_episodic_memory(stream, budget_tokens=40, rng=np.random.default_rng(0))
  teacher.save(tmp_path / "v.json")
  (tmp_path / "m.jsonl").write_text(json.dumps({"video": "v.mp4", "memory": "v.json"}) + "\n")
  cfg = phase_one_config(tmp_path / "run")
  cfg.env, cfg.manifest = "videos", str(tmp_path / "m.jsonl")
  # Two steps (windows of 1 and 2 clips, the shapes test_two_steps_equal_one_then_resume_then_one compiles).
  cfg.num_streams, cfg.steps, cfg.off_policy_steps = 1, 2, 2
  source = make_source(cfg)
  assert source.num_clips(0) == 3 and source.num_clips(5) == 3
  assert source.teacher(0) == teacher
  item = source.video_item(0, 2)
  assert item["video"] == str(tmp_path / "v.mp4") and (item["video_start"], item["video_end"]) == (0.0, 30.0)
  assert source.context(0, 2, ["x"]).video_path == str(tmp_path / "v.mp4")
  model = _policy(cfg.checkpoint)
  result = train(cfg, model, Qwen3VLProcessor.from_pretrained(cfg.checkpoint), source, LengthJudge(),
                 prompt=read_window_prompt(cfg.checkpoint), progress=False)
  assert [h["step"] for h in result["history"]] == [1, 2]
  assert source.start_clip(0) == 0
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"video": 3}\n')
  with pytest.raises(ValueError, match="bad.jsonl:1"):
    cfg.manifest = str(bad)
    make_source(cfg)
  # start_time (the official records'): the stream starts at clip start_time // 10
  started = tmp_path / "start.jsonl"
  started.write_text(json.dumps({"video": "v.mp4", "start_time": 12.5}) + "\n")
  cfg.manifest = str(started)
  assert make_source(cfg).start_clip(0) == 1
  started.write_text(json.dumps({"video": "v.mp4", "start_time": 31}) + "\n")
  with pytest.raises(ValueError, match="start.jsonl:1: start_time=31"):
    make_source(cfg)


def test_video_files_source_shows_the_history_in_local_face_ids(tmp_path):
  """Phase One on real videos remaps the history as the official dataset does with map.json: the manifest's
  subtitles and face tracks are burned into the window, the previous memories' global [face_N] ids become the
  window's local <face_k>, and the new memory maps back (two people: one boxed, one only speaking)."""
  from taskmem_jax.envs import synthworld as sw
  from taskmem_jax.rl.streams import VideoFilesSource

  world = sw.generate(5, sw.WorldConfig(num_clips=3))
  sw.write_stream(world, tmp_path / "v.mp4")
  (tmp_path / "v.srt").write_text("1\n00:00:02,000 --> 00:00:06,000\n[face_7]: hello there\n")
  tracks = {"fps": 2, "tracks": [{"identity": 9, "boxes": [[k, 4, 4, 30, 30] for k in range(2, 20)]}]}
  (tmp_path / "t.json").write_text(json.dumps(tracks))
  (tmp_path / "m.jsonl").write_text(json.dumps({"video": "v.mp4", "subtitles": "v.srt", "tracks": "t.json"}) + "\n")
  source = VideoFilesSource(str(tmp_path / "m.jsonl"))
  item, shown, to_global = source.prepare(0, 1, ["[face_3] left.", "[face_9] sat."])
  assert not isinstance(item["video"], str)  # rendered frames, not the raw file
  assert shown == ["<face_3> left.", "<face_1> sat."]
  assert to_global("<face_2> greets <face_1>.") == "[face_7] greets [face_9]."
  (tmp_path / "plain.jsonl").write_text(json.dumps({"video": "v.mp4"}) + "\n")
  plain = VideoFilesSource(str(tmp_path / "plain.jsonl"))
  assert plain.prepare(0, 1, ["x."]) == (plain.video_item(0, 1), ["x."], None)
  (tmp_path / "bad.jsonl").write_text(json.dumps({"video": "v.mp4", "tracks": "nope.json"}) + "\n")
  with pytest.raises(ValueError, match="bad.jsonl:1: no such file"):
    VideoFilesSource(str(tmp_path / "bad.jsonl"))
