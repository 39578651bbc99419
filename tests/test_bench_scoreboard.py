"""The scoreboard's two rollouts do the same work: our jitted scan over cached clip features and the
official pipeline's way (transformers generate, window by window, re-encoding each window's video) write
the same greedy tokens for every window of a stream. No timing is checked here."""

import os

import numpy as np
import pytest

from experiments import bench_scoreboard as S
from taskmem_jax.memory import rollout as R
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.models import qwen3_vl
from taskmem_jax.models.qwen3_vl import Qwen3VLConfig
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.sampling import SamplingParams


POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "synthworld_policy")


def synthworld_inputs(processor, *, seeds, clips: int, memory_width: int):
  """(window template, clip pixels [streams, clips, t*h*w, patch_dim], clip grid) of SynthWorld streams in
  the world the shipped policy was trained on."""
  from experiments.train_synthworld_policy import frame_pixels
  from taskmem_jax.envs import synthworld as sw

  world = sw.policy_world_config(POLICY, num_clips=clips)
  per_clip = [frame_pixels(stream, stream.clip_frames(c), processor.config.vision)
              for stream in (sw.generate(seed, world) for seed in seeds) for c in range(clips)]
  pixels = np.asarray([p for p, _ in per_clip], np.float32).reshape(len(seeds), clips, *per_clip[0][0].shape)
  grid = tuple(int(x) for x in np.asarray(per_clip[0][1]).reshape(3))
  return S.window_template(processor, read_window_prompt(POLICY), grid, memory_width), pixels, grid


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(POLICY, "config.json")), reason="no shipped policy")
def test_scan_rollout_equals_transformers_window_by_window():
  # The shipped SynthWorld policy writes well-formed memories, so later windows carry earlier memories.
  model = qwen3_vl.from_pretrained(POLICY, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(POLICY)
  # 6 clips of two SynthWorld streams (the frames the policy reads): windows 0-3 have fewer than 5 clips,
  # windows 4 and 5 drop the oldest.
  template, pixels, grid = synthworld_inputs(processor, seeds=(1000, 1001), clips=6, memory_width=48)
  params = SamplingParams(64, stop_token_ids=tuple(processor.stop_token_ids), pad_token_id=processor.pad_token_id)
  fmt = R.TokenFormat.from_tokenizer(processor.tokenizer, processor.stop_token_ids)
  ours = S.rollout_ours(model, template, pixels, grid, params, fmt, repeats=1)
  peer = S.rollout_peer(POLICY, Qwen3VLConfig.from_json_file(os.path.join(POLICY, "config.json")),
                        template, pixels, grid, params, fmt, repeats=1)
  assert ours["tokens"].shape == peer["tokens"].shape == (6, 2, 64)
  np.testing.assert_array_equal(ours["tokens"], peer["tokens"])
  _, lengths = R.cut_memory(ours["tokens"].reshape(12, 64), fmt, 48)
  assert int((np.asarray(lengths) > 0).sum()) >= 6  # most windows wrote a memory the next windows show


def test_json_rows_carry_the_tables_figures():
  """--json: one line per figure with the keys a script reads, the same numbers as the markdown table."""
  import json

  result = {"date": "2026-12-07", "machine": "2 cores", "flags": "", "model": "bench-100m", "params": 94e6,
            "dtype": "float32", "ours_compile_s": 3.0, "foreign_cpu": 0.0,
            "versions": {"jax": "0.10.2", "torch": "2.13.0", "transformers": "5.23.0"},
            "prefill": {"rows": 2, "prompt_tokens": 600, "ours": 900.0, "peer": 600.0, "ratio": 1.5},
            "decode": {"rows": 2, "new_tokens": 16, "ours": 50.0, "peer": 20.0, "ratio": 2.5, "agreement": 1.0},
            "rollouts": [{"streams": s, "clips": 10, "window_tokens": 2239, "new_tokens": 32, "ours": 0.3 * s,
                          "peer": 0.4, "ratio": 0.75 * s, "agreement": 0.998, "ours_first_s": 9.0} for s in (1, 4)]}
  lines = [json.loads(line) for line in S.json_lines(result).splitlines()]
  assert [line["figure"] for line in lines] == ["prefill", "decode", "rollout", "rollout"]
  assert all({"figure", "setting", "ours", "theirs", "ratio", "tokens_agree"} <= set(line) for line in lines)
  assert [line["ratio"] for line in lines] == [1.5, 2.5, 0.75, 3.0] and lines[3]["theirs"] == 0.4
  assert lines[0]["tokens_agree"] is None and lines[3]["tokens_agree"] == 0.998
  assert "1 stream x 10 clips" in lines[2]["setting"] and "4 stream x 10 clips" in lines[3]["setting"]
  table = S.table(result)
  for line in lines:
    assert f"| {line['figure']} | {line['setting']} |" in table and f"{line['ratio']:.2f}x" in table
