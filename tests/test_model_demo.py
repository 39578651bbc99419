"""The README's main job runs end to end on the tiny presets and writes its results file."""

import json
import os

import pytest

from experiments import model_demo as demo
from taskmem_jax.configs.model_demo import get_config


@pytest.mark.parametrize("preset", ["tiny", "tiny-moe"])
def test_demo_runs_and_writes_results(tmp_path, preset):
  cfg = get_config()
  cfg.preset = preset
  result = demo.run(cfg, str(tmp_path))
  assert result["logits_finite"]
  # 64x96 image -> 4x6 patches -> 6 tokens; 4 frames of 64x64 -> 2 groups x 4x4 patches -> 8 tokens.
  assert result["image_grid_thw"] == [1, 4, 6] and result["video_grid_thw"] == [2, 4, 4]
  assert result["vision_tokens"] == 14
  assert result["logits_shape"] == [1, result["prompt_tokens"], 256]
  assert os.path.isfile(tmp_path / "checkpoint" / "model.safetensors")
  with open(tmp_path / "demo_results.json") as f:
    assert json.load(f) == result
