"""LocalLLMJudge on a tiny random checkpoint, against references built without the judge's machinery.

References: label log-probs (verdicts and task preferences) from a plain full forward pass (model(...), pixels through the processor,
no feature caching, no bucket padding) on the prompt rendered here; the ranking from a step-by-step loop
of full forward passes over the growing sequence (no KV cache).
"""

import numpy as np
import pytest

from experiments import describe
from taskmem_jax.models import qwen3_vl
from taskmem_jax.processing import Qwen3VLProcessor
from taskmem_jax.processing.video import VideoClip
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards import local_llm
from taskmem_jax.rewards.judge import WindowContext
from taskmem_jax.rewards.local_llm import LocalLLMJudge
from taskmem_jax.rewards.task_judge import TIE, TaskJudge, both_orders

DESCRIPTIONS = ["person 1 sits down.", "person 2 waves at person 1.", "a red cup falls off the table."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  checkpoint = describe.tiny_checkpoint(str(tmp_path_factory.mktemp("judge")))
  return qwen3_vl.from_pretrained(checkpoint, dtype=np.float32), Qwen3VLProcessor.from_pretrained(checkpoint)


def window(video=None, path=None) -> WindowContext:
  return WindowContext(clip=2, start=0.0, end=2.0, previous=("person 1 walks in.",), video=video, video_path=path)


def clip() -> VideoClip:
  frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  return VideoClip(frames, np.arange(4), 2.0, 0.0, 2.0)


def encode(processor, text):
  return processor.tokenizer.encode(text, add_special_tokens=False)


def reference_logprobs(model, processor, conversation, thinking=None, labels=("1", "0")):
  """log p(label) for each label (default "1", "0") after the rendered prompt, from one full forward pass."""
  batch = processor([conversation], thinking=thinking)
  ids = batch["input_ids"][0].tolist()
  if processor.render(conversation, thinking=thinking).endswith("<think>\n"):
    ids += encode(processor, "\n</think>\n\n")
  logits = np.asarray(model(np.array([ids]), None, None, None, batch.get("pixel_values_videos"),
                            batch.get("video_grid_thw")))[0, -1].astype(np.float64)
  logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
  return logp[[encode(processor, label)[0] for label in labels]]


def check_verdicts(verdicts, references):
  for verdict, (yes, no) in zip(verdicts, references):
    assert verdict.ok is bool(yes > no)
    got = [float(x.split("=")[1]) for x in verdict.reason.split(", ")]
    np.testing.assert_allclose(got, [yes, no], atol=2e-4)


@pytest.mark.slow
def test_video_verdicts_equal_a_plain_forward(tiny):
  model, processor = tiny
  judge = LocalLLMJudge(model, processor, max_batch=2)  # 3 descriptions: two batches
  video = clip()
  verdicts = judge.faithfulness(window(video), DESCRIPTIONS)
  assert len(verdicts) == 3 and not any(v.failed for v in verdicts)
  references = []
  for d in DESCRIPTIONS:
    before, after = P.faithfulness_prompt(["person 1 walks in."], d)
    conversation = [{"role": "user", "content": [{"type": "text", "text": before}, {"type": "video", "video": video},
                                                 {"type": "text", "text": after}]}]
    references.append(reference_logprobs(model, processor, conversation))
  check_verdicts(verdicts, references)


@pytest.mark.slow
@pytest.mark.parametrize("thinking", [None, True])
def test_text_verdicts_equal_a_plain_forward(tiny, thinking):
  model, processor = tiny
  judge = LocalLLMJudge(model, processor, thinking=thinking)
  assert bool(judge.answer_prefix) is bool(thinking)
  verdicts = judge.non_redundancy(window(), DESCRIPTIONS)
  references = [reference_logprobs(model, processor, [{"role": "user", "content": P.non_redundancy_prompt(
      ["person 1 walks in."], d)}], thinking) for d in DESCRIPTIONS]
  check_verdicts(verdicts, references)


@pytest.mark.slow
def test_ranking_equals_a_step_by_step_loop(tiny):
  model, processor = tiny
  candidates = DESCRIPTIONS + ["person 1 picks up the cup."]
  ranking = LocalLLMJudge(model, processor).rank(window(), candidates)
  assert not ranking.failed and sorted(ranking.order) == [0, 1, 2, 3]
  batch = processor([{"role": "user", "content": P.ranking_prompt(candidates)}])
  ids = batch["input_ids"][0].tolist() + encode(processor, "[RANK START] ")
  labels = [encode(processor, str(i + 1))[0] for i in range(4)]
  remaining, order = [0, 1, 2, 3], []
  while len(remaining) > 1:
    logits = np.asarray(model(np.array([ids])))[0, -1]
    best = max(remaining, key=lambda i: logits[labels[i]])  # argmax of logits = argmax of log-probs
    order.append(best)
    remaining.remove(best)
    ids += [labels[best]] + encode(processor, ", ")
  assert ranking.order == tuple(order + remaining)


def test_video_from_a_path(tiny, tmp_path):
  from taskmem_jax.processing.video_io import write_video
  model, processor = tiny
  path = str(tmp_path / "w.mp4")
  write_video(path, np.repeat(clip().frames, 4, axis=0), 8.0)  # 2 s; sampled at 2 fps: 4 frames
  verdicts = LocalLLMJudge(model, processor).faithfulness(window(path=path), DESCRIPTIONS[:1])
  assert verdicts[0].ok is not None, verdicts[0].reason


def test_model_errors_become_failed_verdicts(tiny, monkeypatch):
  model, processor = tiny
  calls = []

  def flaky(*args):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("device lost")
    return real(*args)

  real = local_llm._last_logits
  monkeypatch.setattr(local_llm, "_last_logits", flaky)
  verdicts = LocalLLMJudge(model, processor, max_batch=2).non_redundancy(window(), DESCRIPTIONS)
  assert [v.failed for v in verdicts] == [False, False, True]  # only the failing batch's rows
  assert verdicts[2].reason == "RuntimeError: device lost"
  monkeypatch.setattr(local_llm, "_prefill", lambda *a: (_ for _ in ()).throw(MemoryError("out of memory")))
  ranking = LocalLLMJudge(model, processor).rank(window(), DESCRIPTIONS)
  assert ranking.failed and ranking.reason == "MemoryError: out of memory"


def test_missing_video_and_trivial_groups(tiny):
  model, processor = tiny
  judge = LocalLLMJudge(model, processor)
  verdicts = judge.faithfulness(window(), DESCRIPTIONS[:2])
  assert all(v.failed and "neither video frames" in v.reason for v in verdicts)
  bad = judge.faithfulness(window(path="/nonexistent/w.mp4"), DESCRIPTIONS[:1])[0]
  assert bad.failed and "not found" in bad.reason
  broken = WindowContext(clip=0, start=0.0, end=2.0, previous=(3,), video=clip())  # not a string
  assert all(v.reason.startswith("TypeError") for v in judge.faithfulness(broken, DESCRIPTIONS[:2]))
  # the ranking prompt holds the candidates alone (ranked against each other): the bad preceding text is not read
  assert judge.rank(broken, DESCRIPTIONS[:2]).order is not None
  assert judge.faithfulness(window(clip()), []) == [] and judge.non_redundancy(window(), []) == []
  assert judge.rank(window(), []).order == () and judge.rank(window(), ["a"]).order == (0,)


def test_bad_arguments(tiny):
  model, processor = tiny
  with pytest.raises(TypeError, match="model"):
    LocalLLMJudge(None, processor)
  with pytest.raises(TypeError, match="processor"):
    LocalLLMJudge(model, None)
  with pytest.raises(ValueError, match="max_batch"):
    LocalLLMJudge(model, processor, max_batch=0)
  with pytest.raises(ValueError, match="single tokens"):
    LocalLLMJudge(model, processor).token_id("10")


# --- task preferences (Phase Two) ---------------------------------------------------------------------

QUESTIONS = ["How many cups are on the table?", "What colour is the cup that falls?"]
PAIRS = [(DESCRIPTIONS[0], DESCRIPTIONS[2]), (DESCRIPTIONS[2], DESCRIPTIONS[0]), (DESCRIPTIONS[1], DESCRIPTIONS[1])]


@pytest.mark.slow
@pytest.mark.parametrize("thinking", [None, True])
def test_preferences_are_the_argmax_of_a_plain_forward(tiny, thinking):
  model, processor = tiny
  judge = LocalLLMJudge(model, processor, thinking=thinking, max_batch=2)  # 3 pairs: two batches
  assert isinstance(judge, TaskJudge) and P.TASK_LABELS == ("0", "1", "-")
  preferences = judge.prefer_many(QUESTIONS, PAIRS)
  for (first, second), preference in zip(PAIRS, preferences):
    prompt = P.task_prompt(QUESTIONS, first, second, reply="label")
    assert f'"0": "{first}",\n  "1": "{second}"' in prompt and "2. What colour" in prompt
    logp = reference_logprobs(model, processor, [{"role": "user", "content": prompt}], thinking, P.TASK_LABELS)
    assert preference.winner == (0, 1, TIE)[int(np.argmax(logp))]
    got = [float(x.split("=")[1]) for x in preference.reason.split(", ")]
    np.testing.assert_allclose(got, logp, atol=2e-4)
  # Batched = unbatched: one pair per call (one forward each) gives the same preferences.
  single = [judge.prefer(QUESTIONS, a, b) for a, b in PAIRS]
  assert [p.winner for p in single] == [p.winner for p in preferences]
  np.testing.assert_allclose([[float(x.split("=")[1]) for x in p.reason.split(", ")] for p in single],
                             [[float(x.split("=")[1]) for x in p.reason.split(", ")] for p in preferences], atol=2e-4)


def test_both_orders_over_the_local_judge(tiny, monkeypatch):
  model, processor = tiny
  judge = LocalLLMJudge(model, processor, max_batch=8)
  # both_orders sends (a, b), (c, d), (e, f), then (b, a), (d, c), (f, e) in one prefer_many call (one
  # batch). Forced label probabilities: a wins both orders; "0" twice for (c, d) disagrees; (e, f) ties.
  forced = np.log(np.array([[.8, .1, .1], [.7, .2, .1], [.1, .1, .8], [.1, .8, .1], [.6, .3, .1], [.1, .8, .1]]))
  shown = []
  monkeypatch.setattr(judge, "_label_logprobs", lambda conversations, *a: shown.append(conversations) or forced)
  got = both_orders(judge, QUESTIONS, [("a", "b"), ("c", "d"), ("e", "f")])
  assert [p.winner for p in got] == [0, None, None] and [p.reason for p in got[1:]] == [
      "the two orders disagree", "tie"]
  assert len(shown) == 1 and '"0": "b"' in shown[0][3][0]["content"]
  assert both_orders(judge, QUESTIONS, []) == []


def test_model_errors_become_failed_preferences(tiny, monkeypatch):
  model, processor = tiny
  calls = []

  def flaky(*args):
    calls.append(1)
    if len(calls) == 1:
      raise RuntimeError("device lost")
    return real(*args)

  real = local_llm._last_logits
  monkeypatch.setattr(local_llm, "_last_logits", flaky)
  preferences = LocalLLMJudge(model, processor, max_batch=2).prefer_many(QUESTIONS, PAIRS)
  assert [p.failed for p in preferences] == [True, True, False]  # only the failing batch's rows
  assert preferences[0].reason == "RuntimeError: device lost"
  judge = LocalLLMJudge(model, processor)
  bad = judge.prefer_many(QUESTIONS, [("a", 3)])[0]  # not a string: that batch fails, nothing raises
  assert bad.failed and bad.reason.startswith("TypeError") and judge.prefer_many(QUESTIONS, []) == []
  with pytest.raises(ValueError, match="1 to 5"):
    judge.prefer_many(QUESTIONS * 3, PAIRS)  # bad questions are the caller's mistake
