"""The SynthWorld reader, the programmatic teacher and memory-only QA evaluation, against ground truth.

The key check: a memory holding every fact of every clip lets the reader answer every question of every
task correctly, so whatever a memory loses shows up as lost coverage or precision, not as reader error.
"""

import dataclasses

import numpy as np
import pytest

from taskmem_jax.envs.synthworld import WorldConfig, build_synthworld_tokenizer, generate, make_tasks
from taskmem_jax.envs.synthworld.qa import evaluate_memory, memory_quality
from taskmem_jax.envs.synthworld.questions import LETTERS
from taskmem_jax.envs.synthworld.reader import ParsedFact, answer, parse_clause, parse_memory
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory, teacher_memory, teacher_response
from taskmem_jax.eval.metrics import format_table
from taskmem_jax.memory.parse import parse_response
from taskmem_jax.memory.store import EpisodicMemory

CONFIGS = {
    "default": (7, WorldConfig(num_clips=12)),
    "sparse": (3, WorldConfig(num_clips=8, fps=1, num_people=6, min_facts=3, max_facts=9, max_objects=5)),
}
BUDGET = 40


def oracle_memory(stream) -> EpisodicMemory:
  """Every fact of every clip, in time order."""
  return EpisodicMemory(descriptions={c: " ".join(f.text for f in stream.facts_in(c))
                                      for c in range(stream.num_clips)})


@pytest.fixture(scope="module", params=list(CONFIGS))
def world(request):
  seed, config = CONFIGS[request.param]
  stream = generate(seed, config)
  return stream, make_tasks(stream, seed=2)  # every question the stream supports


@pytest.fixture(scope="module")
def long_stream():
  return generate(21, WorldConfig(num_clips=30))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
  from tokenizers import Tokenizer
  path = tmp_path_factory.mktemp("synthworld_tokenizer")
  build_synthworld_tokenizer(path)
  return Tokenizer.from_file(str(path / "tokenizer.json"))


# --- parsing ----------------------------------------------------------------------------------------


def test_parse_round_trips_every_fact(world):
  stream, _ = world
  for f in stream.facts:
    assert parse_memory(f.text) == [ParsedFact.of(f)], f.text
  for clip in range(stream.num_clips):
    facts = stream.facts_in(clip)
    expected = [ParsedFact.of(f) for f in facts]
    assert parse_memory(" ".join(f.text for f in facts)) == expected
    # Clauses joined by "then", with extra spaces, capitals and prose around them, read the same.
    prose = "In this clip, " + ", then ".join(f.clause for f in facts).replace(" the ", "  the ") + ". Nothing else."
    assert parse_memory(prose.replace("person", "Person")) == expected


def test_parse_ignores_what_is_not_a_fact():
  assert parse_memory("") == [] and parse_memory("the room is quiet. a pink circle appears in the north-west.") == []
  assert parse_clause("person 2 moves from the north-west to the middle") is None
  assert parse_memory("the sign changes from 3 to 4; person 1 appears in the south-east!") == [
      ParsedFact("sign_change", prev_digit=3, digit=4), ParsedFact("appear", person=1, region="south-east")]
  with pytest.raises(TypeError, match="description"):
    parse_memory(None)


# --- the reader ---------------------------------------------------------------------------------------


def test_oracle_memory_answers_everything(world):
  stream, tasks = world
  records, scores = evaluate_memory(stream, oracle_memory(stream), tasks, answer)
  wrong = [(q.text, q.options, q.answer, got) for (_, got, _), q in
           zip(records, [q for qs in tasks.values() for q in qs]) if got != q.answer]
  assert not wrong, wrong[:5]
  assert set(scores["tasks"]) == set(tasks)
  assert all(s["acc"] == s["cov"] == 1.0 for s in scores["tasks"].values())
  assert scores["overall"]["acc"] == scores["overall"]["cov"] == 1.0


def test_empty_memory_abstains_on_everything(world):
  stream, tasks = world
  for memory in (EpisodicMemory(), EpisodicMemory(descriptions={c: "nothing to report." for c in range(3)})):
    records, scores = evaluate_memory(stream, memory, tasks, answer)
    assert all(predicted is None for _, predicted, _ in records)
    assert scores["overall"]["cov"] == 0.0 and scores["overall"]["acc"] == 0.0


def _with_clip(memory: EpisodicMemory, clip: int, description: str) -> EpisodicMemory:
  edited = EpisodicMemory(memory.interval, dict(memory.items()))
  edited.add(clip, description, replace=True)
  return edited


def test_a_wrong_fact_misleads_and_a_conflict_abstains():
  stream = generate(*CONFIGS["default"])
  oracle = oracle_memory(stream)
  q = next(q for q in make_tasks(stream, seed=2, tasks=("attribute",))["attribute"] if q.text.startswith("what colour"))
  (fact,) = q.needed_facts
  wrong = next(o for o in q.options if o != q.answer_text)
  lie = fact.text.replace(f"{fact.colour} {fact.shape}", f"{wrong} {fact.shape}")
  assert lie != fact.text
  facts = stream.facts_in(fact.clip)
  lying = _with_clip(oracle, fact.clip, " ".join(lie if f == fact else f.text for f in facts))
  assert answer(q, lying) == LETTERS[q.options.index(wrong)] != q.answer
  assert memory_quality(stream, lying)["faithfulness"] == 1 - 1 / stream.num_clips
  # The lie next to the truth: the memory contradicts itself, so the reader abstains.
  both = _with_clip(oracle, fact.clip, " ".join(f.text for f in facts) + " " + lie)
  assert answer(q, both) is None


def test_world_questions_are_the_benchmarks_questions(world):
  # One Question type: SynthWorld's carry their ground truth on top of what every benchmark question has.
  from taskmem_jax.benchmarks.base import Question
  stream, tasks = world
  qids = [q.qid for qs in tasks.values() for q in qs]
  assert len(set(qids)) == len(qids)
  for task, qs in tasks.items():
    assert [q.qid for q in qs] == [f"sw{stream.seed}-{task}-{k}" for k in range(len(qs))]  # arrival order
    for q in qs:
      assert isinstance(q, Question) and q.multiple_choice and q.task == task
      assert q.ask_after == (q.asked_after_clip + 1) * 10.0 and max(q.about_clips) <= q.asked_after_clip


def test_reader_rejects_unknown_questions(world):
  stream, tasks = world
  q = tasks["ocr"][0]
  with pytest.raises(ValueError, match="not a SynthWorld question"):
    answer(dataclasses.replace(q, text="what is the meaning of life?"), oracle_memory(stream))
  with pytest.raises(ValueError, match="filed under task 'spatial'"):
    answer(dataclasses.replace(q, task="spatial"), oracle_memory(stream))


# --- evaluation -------------------------------------------------------------------------------------


def test_questions_see_only_the_memories_written_before_them(world):
  stream, tasks = world
  seen = []

  def spy(question, memory):
    seen.append((question.asked_after_clip, memory.clips()))

  evaluate_memory(stream, oracle_memory(stream), tasks, spy)
  assert seen and all(clips == list(range(asked + 1)) for asked, clips in seen)
  with pytest.raises(ValueError, match="returned 'E'"):
    evaluate_memory(stream, oracle_memory(stream), tasks, lambda q, m: "E")
  with pytest.raises(ValueError, match="listed under task 'counting'"):
    evaluate_memory(stream, oracle_memory(stream), {"counting": tasks["ocr"]}, answer)
  with pytest.raises(ValueError, match=f"clips \\[{stream.num_clips}\\]"):
    evaluate_memory(stream, EpisodicMemory(descriptions={stream.num_clips: "x"}), tasks, answer)


def test_memory_quality_of_the_oracle(world):
  stream, _ = world
  quality = memory_quality(stream, oracle_memory(stream))
  assert quality["faithfulness"] == 1.0 and quality["unparsed"] == 0.0 and quality["fact_precision"] == 1.0
  assert quality["facts_per_memory"] == len(stream.facts) / stream.num_clips
  # A memory repeating the one before it is redundant; one that says nothing parseable is not faithful.
  memory = EpisodicMemory(descriptions={0: stream.facts_in(0)[0].text, 1: stream.facts_in(0)[0].text, 2: "hello."})
  quality = memory_quality(stream, memory)
  assert quality["redundancy"] == pytest.approx(1 / 3) and quality["unparsed"] == pytest.approx(1 / 3)
  assert quality["faithfulness"] == pytest.approx(1 / 3)  # clip 1 states a clip-0 fact; clip 2 states nothing
  assert quality["fact_precision"] == pytest.approx(1 / 2)  # of the 2 parsed facts, clip 0's is true of clip 0
  with pytest.raises(ValueError, match="empty"):
    memory_quality(stream, EpisodicMemory())


# --- the teacher ------------------------------------------------------------------------------------


def test_teacher_memories_are_faithful_new_and_within_budget(long_stream, hf_tokenizer):
  rng = np.random.default_rng(0)
  memory = EpisodicMemory()
  for clip in range(long_stream.num_clips):
    previous = memory.previous(clip)
    description = teacher_memory(long_stream, clip, budget_tokens=BUDGET, rng=rng, previous=previous)
    assert description, clip
    assert len(hf_tokenizer.encode(description, add_special_tokens=False).ids) <= BUDGET
    assert hf_tokenizer.decode(hf_tokenizer.encode(description).ids) == description  # canonical text
    facts = parse_memory(description)
    truth = long_stream.facts_in(clip)
    # Each sentence is a true fact of the clip, in time order, none stated before.
    frames = [next(t.frame for t in truth if t.text == s + ".") for s in description[:-1].split(". ")]
    assert frames == sorted(set(frames)) and len(frames) == len(facts)
    earlier = {f for d in previous for f in parse_memory(d)}
    assert not earlier & set(facts) and len(set(facts)) == len(facts)
    # Greedy fill: no left-out new fact would still have fitted.
    left = [t for t in truth if ParsedFact.of(t) not in earlier | set(facts)]
    used = len(hf_tokenizer.encode(description).ids)
    assert all(used + len(hf_tokenizer.encode(t.text).ids) > BUDGET for t in left)
    memory.add(clip, description)

    response = teacher_response(description)
    parsed = parse_response(response)
    assert parsed.ok and parsed.description == description, parsed
    ids = hf_tokenizer.encode(response).ids
    assert 0 not in ids and hf_tokenizer.decode(ids, skip_special_tokens=False) == response  # in vocabulary


def test_teacher_is_seeded_and_checks_its_arguments(long_stream):
  make = lambda seed: teacher_episodic_memory(long_stream, budget_tokens=BUDGET, rng=np.random.default_rng(seed))
  assert make(4) == make(4) and make(4) != make(5)
  with pytest.raises(ValueError, match="budget_tokens=0"):
    teacher_memory(long_stream, 0, budget_tokens=0, rng=np.random.default_rng(0))
  with pytest.raises(TypeError, match="numpy Generator"):
    teacher_memory(long_stream, 0, budget_tokens=BUDGET, rng=0)
  assert teacher_memory(long_stream, 0, budget_tokens=3, rng=np.random.default_rng(0)) == ""  # no sentence fits
  with pytest.raises(ValueError, match="non-empty description"):
    teacher_response(" ")


def test_teacher_scores(long_stream):
  """The budget forces a choice: the teacher's memories answer some questions, not all."""
  memory = teacher_episodic_memory(long_stream, budget_tokens=BUDGET, rng=np.random.default_rng(0))
  tasks = make_tasks(long_stream, seed=2)
  _, scores = evaluate_memory(long_stream, memory, tasks, answer)
  quality = memory_quality(long_stream, memory)
  print(f"\nteacher, {long_stream.num_clips} clips, {BUDGET}-token budget\n{format_table(scores)}\n{quality}")
  assert 0 < scores["overall"]["cov"] < 1 and scores["overall"]["acc"] > 0
  assert quality["faithfulness"] == 1.0 and quality["redundancy"] == 0.0 and quality["unparsed"] == 0.0
  assert quality["facts_per_memory"] < len(long_stream.facts) / long_stream.num_clips


def test_teacher_prefer_draws_the_accepted_facts_first(long_stream):
  """prefer=: while an accepted fact still fits, no other fact is kept before it; without accepted facts
  the memory is the random teacher's; prefer=None keeps the random teacher's draws."""
  is_sign = lambda f: f.kind == "sign_change"
  for clip in range(long_stream.num_clips):
    truth = [ParsedFact.of(t) for t in long_stream.facts_in(clip)]
    signs = [t for t in long_stream.facts_in(clip) if ParsedFact.of(t).kind == "sign_change"]
    focused = teacher_memory(long_stream, clip, budget_tokens=8, rng=np.random.default_rng(clip), prefer=is_sign)
    plain = teacher_memory(long_stream, clip, budget_tokens=8, rng=np.random.default_rng(clip))
    if signs:  # a sign change costs exactly 8 tokens: the budget holds one, and it is taken first
      assert [f.kind for f in parse_memory(focused)] == ["sign_change"]
      assert focused in {s.text for s in signs}
    else:
      assert focused == plain
    assert set(parse_memory(focused)) <= set(truth)
  make = lambda **kw: teacher_episodic_memory(long_stream, budget_tokens=BUDGET, rng=np.random.default_rng(3), **kw)
  assert make(prefer=lambda f: False) == make()
