"""experiments.describe end to end on a tiny random checkpoint and a written mp4 window."""

import numpy as np
import pytest

from experiments import describe
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.sampling import generate
from taskmem_jax.models import qwen3_vl


@pytest.mark.slow
def test_describe_a_window(tmp_path):
  checkpoint = describe.tiny_checkpoint(str(tmp_path))
  video = describe.synthetic_clip(str(tmp_path / "clip.mp4"), seconds=12.0, fps=8.0)
  result = describe.describe(checkpoint, video, start=2.0, end=10.0, prompt="What moves?", max_new_tokens=8,
                             progress=False)
  # [2 s, 10 s) at 8 fps is 64 frames; sampled at 2 fps: 16 frames -> 8 temporal groups.
  assert result["video_grid_thw"][0][0] == 8
  assert 1 <= result["new_tokens"] <= 8 and isinstance(result["text"], str)
  # The text is the greedy continuation of the processor's batch, decoded.
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  batch = processor([{"role": "user", "content": [
      {"type": "video", "video": video, "video_start": 2.0, "video_end": 10.0, "fps": 2.0},
      {"type": "text", "text": "What moves?"}]}])
  out = generate(qwen3_vl.from_pretrained(checkpoint, dtype=np.float32), batch, max_new_tokens=result["new_tokens"])
  assert processor.tokenizer.decode(out.tokens[0].tolist(), skip_special_tokens=True) == result["text"]
