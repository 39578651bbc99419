"""The reference streaming rollout: the real processor and model on a written mp4; the loop's
bookkeeping (which memory is kept, what later windows see) with scripted responses."""

import numpy as np
import pytest

from experiments import describe
from taskmem_jax.memory import loop as loop_lib
from taskmem_jax.memory import sample as sample_lib
from taskmem_jax.memory import NO_THINK_END, schedule
from taskmem_jax.memory.parse import parse_response
from taskmem_jax.memory.prompt import DEFAULT
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.sampling import GenerateOutput


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  folder = tmp_path_factory.mktemp("loop")
  checkpoint = describe.tiny_checkpoint(str(folder))
  video = describe.synthetic_clip(str(folder / "stream.mp4"), seconds=35.0, fps=4.0, size=(64, 64))
  return (qwen3_vl.from_pretrained(checkpoint, dtype=np.float32), Qwen3VLProcessor.from_pretrained(checkpoint),
          video)


@pytest.mark.slow
def test_real_model_runs_every_window(setup):
  model, processor, video = setup
  cfg = loop_lib.RolloutConfig(max_new_tokens=6, num_samples=2, temperature=1.0)
  memory, records = loop_lib.memorize_stream(model, processor, video, 35.0, cfg, prompt=DEFAULT)
  assert [r.window for r in records] == schedule(35.0)
  for record in records:
    assert len(record.tokens) == len(record.parses) == 2
    for tokens, parse in zip(record.tokens, record.parses):
      assert 1 <= len(tokens) <= 6
      # The stored parse is the strict parse of the sample's own decoded text (a random tiny model rarely
      # writes valid JSON; then the reason is named).
      text = processor.tokenizer.decode(list(tokens), skip_special_tokens=False)
      think_end = processor.tokenizer.convert_tokens_to_ids("</think>")
      assert parse == parse_response(text, tokens=list(tokens), think_end_id=think_end) and (parse.ok or parse.reason)
  assert set(memory.clips()) == {r.window.clip for r in records if any(p.ok for p in r.parses)}


def test_first_valid_sample_is_stored_and_shown_to_later_windows(setup, monkeypatch):
  model, processor, video = setup
  tok = processor.tokenizer
  seen_prompts = []

  def scripted_generate(model, batch, **kwargs):
    seen_prompts.append(tok.decode(batch["input_ids"][0].tolist()))
    step = len(seen_prompts) - 1
    texts = [f"no tags here {step}", f'plan</think>{{"description": "memory {step}"}}']
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")] for t in texts]
    width = max(map(len, rows))
    tokens = np.array([r + [0] * (width - len(r)) for r in rows], np.int32)
    return GenerateOutput(tokens, np.zeros(tokens.shape, np.float32), np.array([len(r) for r in rows], np.int32))

  monkeypatch.setattr(sample_lib, "generate", scripted_generate)  # the window sampler's model call
  memory, records = loop_lib.memorize_stream(model, processor, video, 35.0, loop_lib.RolloutConfig(num_samples=2),
                                             prompt=DEFAULT)
  assert [p.reason for p in records[0].parses] == [NO_THINK_END, None]
  assert [memory.get(c) for c in memory.clips()] == [f"memory {k}" for k in range(len(records))]
  assert records[2].previous == ["memory 0", "memory 1"]
  assert "memory 0 memory 1" in seen_prompts[2]  # previous memories joined by single spaces
  assert "memory 2" not in seen_prompts[2]
