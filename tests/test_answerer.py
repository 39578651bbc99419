"""The answerer's prompt and the checkpoint-driven answerer: prompt layout, letter parsing, and a run on a tiny checkpoint."""

import numpy as np
import pytest

from experiments import describe
from taskmem_jax.eval import answer_prompt as A
from taskmem_jax.eval import answerers
from taskmem_jax.eval.answerers import ModelAnswerer
from taskmem_jax.memory import EpisodicMemory
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor


def test_prompt_lists_options_and_the_abstain_option():
  text, abstain = A.qa_prompt("Description:\n\n00:00:00-00:00:10\nperson 1 appears.", "Who appeared?",
                              ["person 1", "person 2", "person 3", "person 4"])
  assert abstain == "E"
  assert "Question: Who appeared?\nA. person 1\nB. person 2\nC. person 3\nD. person 4\nE. " + A.ABSTAIN_TEXT in text
  assert text.startswith("Description:")
  with pytest.raises(ValueError, match="options: 1 given"):
    A.qa_prompt("", "q", ["only"])


@pytest.mark.parametrize("reply,expected", [
    ("B", "B"), ("The answer is C.", "C"), ("<think>A or B?</think>D", "D"), ("E", None),
    ("I cannot tell", None), ("Answer: (A)", "A"), ("<think>maybe A</think>no idea", None),
])
def test_parse_letter(reply, expected):
  assert A.parse_letter(reply, 4) == expected


@pytest.mark.slow
def test_model_answerer_runs_on_a_tiny_checkpoint(tmp_path):
  checkpoint = describe.tiny_checkpoint(str(tmp_path))
  answer = ModelAnswerer(qwen3_vl.from_pretrained(checkpoint, dtype=np.float32),
                           Qwen3VLProcessor.from_pretrained(checkpoint), max_new_tokens=4)
  memory = EpisodicMemory()
  memory.add(0, "person 1 picks up the red circle.")
  options = ["person 1", "person 2", "person 3", "person 4"]
  letter = answer("Who picked up the red circle?", options, memory)
  # The same reply by hand: the prompt, greedy argmax over plain forward passes, the letter parsed from it.
  text, _ = A.qa_prompt(memory.to_string(), "Who picked up the red circle?", options)
  ids = answer.processor([{"role": "user", "content": text}])["input_ids"][0].tolist()
  reply = []
  for _ in range(4):
    logits = np.asarray(answer.model(np.array([ids + reply]), np.ones((1, len(ids) + len(reply)), np.int32)))
    token = int(np.argmax(logits[0, -1]))
    if token in answer.stop_ids:
      break
    reply.append(token)
  assert letter == A.parse_letter(answer.processor.tokenizer.decode(reply, skip_special_tokens=False), 4)


@pytest.mark.parametrize("reply,expected", [("<think>the memory says person 3</think>C", "C"), ("E", None)])
def test_model_answerer_reads_the_models_reply(tmp_path, monkeypatch, reply, expected):
  from taskmem_jax.sampling import GenerateOutput
  checkpoint = describe.tiny_checkpoint(str(tmp_path))
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  seen = []

  def scripted(model, batch, **kwargs):
    seen.append(processor.tokenizer.decode(batch["input_ids"][0].tolist()))
    ids = processor.tokenizer(reply, add_special_tokens=False)["input_ids"] + [kwargs["stop_token_ids"][0]]
    return GenerateOutput(np.array([ids], np.int32), np.zeros((1, len(ids)), np.float32), np.array([len(ids)]))

  monkeypatch.setattr(answerers, "generate", scripted)
  answer = ModelAnswerer(None, processor)
  memory = EpisodicMemory()
  memory.add(0, "person 3 picks up the red circle.")
  assert answer("Who picked up the red circle?", ["person 1", "person 2", "person 3", "person 4"], memory) == expected
  assert "00:00:00-00:00:10\nperson 3 picks up the red circle." in seen[0]  # the memory string, not the video
