"""taskmem_jax.memory: the episodic store and schedule, the window prompt, the strict and lenient parsers."""

import json
import os

import numpy as np
import pytest

from taskmem_jax.memory import parse, prompt
from taskmem_jax.memory.parse import ParseResult, parse_lenient, parse_response
from taskmem_jax.memory.store import EpisodicMemory, StoreError, Window, format_seconds, schedule
from taskmem_jax.models.qwen3_vl.config import PRESETS

# --- store ------------------------------------------------------------------------------------


def three_clips():
  return EpisodicMemory(descriptions={0: "A red cup sits on the table.", 1: "Tag 2 picks up the cup.",
                                      360: "The sign shows 7."})


def test_add_get_contains_len_and_clip_order():
  memory = EpisodicMemory()
  for clip, text in ((5, "five"), (0, "zero"), (2, "two")):
    memory.add(clip, text)
  assert len(memory) == 3 and 2 in memory and 1 not in memory
  assert list(memory) == [0, 2, 5] and memory.items() == [(0, "zero"), (2, "two"), (5, "five")]
  assert memory.get(5) == "five"
  with pytest.raises(KeyError, match="clip 1: no description"):
    memory.get(1)
  with pytest.raises(StoreError, match="clip 2: already has a description"):
    memory.add(2, "again")
  memory.add(2, "again", replace=True)
  assert memory.get(2) == "again"


@pytest.mark.parametrize("clip, description, match", [
    (-1, "x", "clip=-1"), (1.0, "x", "clip=1.0"), (True, "x", "clip=True"),
    (0, "", "non-empty string, got ''"), (0, "  ", "non-empty"), (0, None, "got None")])
def test_add_rejects_bad_values(clip, description, match):
  with pytest.raises(StoreError, match=match):
    EpisodicMemory().add(clip, description)


def test_bad_interval():
  for interval in (0, -10, 2.5, True):
    with pytest.raises(StoreError, match="interval="):
      EpisodicMemory(interval)


def test_to_string_matches_the_official_qa_serialisation():
  expected = ("Description:\n\n"
              "00:00:00-00:00:10\nA red cup sits on the table.\n\n"
              "00:00:10-00:00:20\nTag 2 picks up the cup.\n\n"
              "01:00:00-01:00:10\nThe sign shows 7.")
  assert three_clips().to_string() == expected
  assert EpisodicMemory().to_string() == "Description:\n\n"
  assert EpisodicMemory(30, {1: "x"}).to_string() == "Description:\n\n00:00:30-00:01:00\nx"
  assert format_seconds(3599) == "00:59:59" and format_seconds(360000) == "100:00:00"


def test_json_round_trip_and_atomic_save(tmp_path):
  memory = three_clips()
  memory.add(4, 'Quotes "and" unicode: café\nnew line.')
  again = EpisodicMemory.from_json(memory.to_json())
  assert again == memory and again.items() == memory.items()
  assert json.loads(memory.to_json())["descriptions"]["360"] == "The sign shows 7."

  path = tmp_path / "memory.json"
  memory.save(path)
  assert EpisodicMemory.load(path) == memory
  memory.add(5, "more")
  memory.save(path)  # over an existing file
  assert EpisodicMemory.load(path) == memory
  assert os.listdir(tmp_path) == ["memory.json"]  # no temporary file left behind
  assert EpisodicMemory.load(path) != EpisodicMemory(20, dict(memory.items()))


@pytest.mark.parametrize("text, match", [
    ("[1]", "expected an object"), ('{"interval": 10}', "keys"),
    ('{"interval": 10, "descriptions": {"a": "x"}}', "clip id 'a'"),
    ('{"interval": 10, "descriptions": {"-1": "x"}}', "clip id '-1'"),
    ('{"interval": 0, "descriptions": {}}', "interval=0"), ("{", "not valid JSON")])
def test_from_json_errors(text, match):
  with pytest.raises(StoreError, match=match):
    EpisodicMemory.from_json(text)


def test_load_error_names_the_file(tmp_path):
  path = tmp_path / "bad.json"
  path.write_text('{"interval": 10, "descriptions": {"0": ""}}')
  with pytest.raises(StoreError, match="bad.json: clip 0"):
    EpisodicMemory.load(path)


def test_previous_is_the_window_before_the_clip():
  memory = EpisodicMemory(descriptions={c: f"m{c}" for c in range(8) if c != 5})
  assert memory.previous(0) == []
  assert memory.previous(2) == ["m0", "m1"]
  assert memory.previous(6) == ["m2", "m3", "m4"]  # clip 5 has no memory
  assert memory.previous(7) == ["m3", "m4", "m6"]
  assert memory.previous(20) == []
  assert memory.previous(7, n=2) == ["m6"] and memory.previous(7, n=0) == []


def test_schedule_35_s():
  assert schedule(35) == [Window(0, 0, 10), Window(1, 0, 20), Window(2, 0, 30), Window(3, 0, 35)]


def test_schedule_100_s():
  assert schedule(100) == [(0, 0, 10), (1, 0, 20), (2, 0, 30), (3, 0, 40), (4, 0, 50),
                           (5, 10, 60), (6, 20, 70), (7, 30, 80), (8, 40, 90), (9, 50, 100)]


def test_schedule_tail_and_errors():
  # The official loop stops once the last window ends within 1 s of the end.
  assert [w.clip for w in schedule(30.8)] == [0, 1, 2]
  assert schedule(31.5)[-1] == (3, 0, 31.5)
  assert schedule(1) == [] and schedule(1.5) == [(0, 0, 1.5)]
  assert schedule(40, interval=20, context=40) == [(0, 0, 20), (1, 0, 40)]
  for kwargs, match in (({"duration": -1}, "duration=-1"), ({"duration": float("nan")}, "duration=nan"),
                        ({"duration": 10, "context": 5}, "context=5")):
    with pytest.raises(StoreError, match=match):
      schedule(**kwargs)


# --- window prompt --------------------------------------------------------------------------------

PATCH_DIM = PRESETS["tiny"].vision.patch_dim  # 1536


def video(grid=(2, 4, 4)):
  return {"type": "video", "pixel_values": np.zeros((int(np.prod(grid)), PATCH_DIM), np.float32),
          "grid_thw": list(grid), "timestamps": [0.5, 1.5]}


def instruction(messages):
  (turn,) = messages
  assert turn["role"] == "user" and [item["type"] for item in turn["content"]] == ["text", "video", "text"]
  return turn["content"][2]["text"]


def window(previous, questions=None, layout="official", item=None):
  return prompt.WindowPrompt(layout=layout).messages(video() if item is None else item, previous, questions)


def test_prompt_joins_previous_memories_with_spaces():
  text = instruction(window(["Tag 1 sits.", "Tag 1 stands up."]))
  assert prompt.PRECEDING_HEADER + "\nTag 1 sits. Tag 1 stands up.\n\n" + prompt.CLOSING in text
  assert text.endswith(prompt.CLOSING)
  empty = instruction(window([]))
  assert prompt.PRECEDING_HEADER + "\n\n\n" + prompt.CLOSING in empty
  with pytest.raises(ValueError, match="previous_memories: 5 given, at most 4"):
    window(["m"] * 5)
  with pytest.raises(ValueError, match=r"previous_memories\[1\]=''"):
    window(["m", ""])


def test_task_hint_sits_inside_the_requirements_before_the_output_format():
  assert prompt.TASK_HINT_HEADER not in instruction(window(["m"]))
  assert prompt.TASK_HINT_HEADER not in instruction(window(["m"], []))
  questions = [f"What is object {i}?" for i in range(5)]
  text = instruction(window(["m"], questions))
  hint = prompt.TASK_HINT_HEADER + "\n" + "\n".join(f"- {q}" for q in questions)
  # Where the official prompt puts its supplement: right after the last rule, before "Output format".
  last_rule = 'output a JSON object with the single key "description".'
  assert text.index(last_rule) < text.index(hint) < text.index("Output format:") < text.index(prompt.PRECEDING_HEADER)
  assert last_rule + "\n\n" + hint + "\n\nOutput format:" in text
  with pytest.raises(ValueError, match="task_questions: 6 given, at most 5"):
    window(["m"], questions + ["one too many?"])


def test_prompt_states_every_official_rule():
  text = instruction(window([]))
  rules = text[text.index("Rules:"):text.index("Output format:")]
  for rule in ("only by the identity tag shown on screen", "skip people without a tag",
               "One person may carry different tags", "continuous with the preceding description",
               'do not begin with "The video"', "cut off at the end of the video", "subtitle that stops mid-sentence",
               'the single key "description"'):
    assert rule in rules, rule
  assert "everything that can be seen or inferred" in text  # not only the four kinds listed


def test_prompt_words_and_items():
  words = prompt.prompt_words()
  assert {"description", "preceding", "Description", "JSON", "[", "]", ":", "{", "}", "`"} <= words
  assert "hint" not in words and "memories" not in words  # slots are not text
  fixed = prompt.PREAMBLE + prompt.INSTRUCTION + prompt.HINT + prompt.NEW_CLIP_REQUEST
  assert fixed.isascii()  # the tiny byte-level tokenizer drops non-ASCII characters
  assert set(prompt.WORD_PATTERN.findall(fixed.replace("{hint}", "").replace("{memories}", "")
                                         .replace("{questions}", ""))) <= words
  assert prompt.window_video_item("s.mp4", 10, 60) == {"type": "video", "video": "s.mp4", "video_start": 10.0,
                                                       "video_end": 60.0}
  with pytest.raises(ValueError, match="video_item"):
    window([], item={"type": "text", "text": "x"})
  with pytest.raises(ValueError, match=r"window \[5, 5\)"):
    prompt.window_video_item("s.mp4", 5, 5)


def test_window_prompt_is_a_template_with_named_slots():
  # Official-style text: positional-free slots, a literal JSON example with braces, {hint} inside the rules.
  custom = prompt.WindowPrompt(
      preamble="Inputs: a video and [Prev].\n",
      instruction='Rules:\n- Be brief.{hint}\n\nOutput format:\n{"description": "<face_1> waves."}\n\n[Prev]:\n{memories}\nGo.',
      hint="\n\nExtra requirements, questions like:\n{questions}\nAnswer them.", question="* {question}")
  text = instruction(custom.messages(video(), ["A {hint} b.", "C."], ["Q1 {memories}?", "Q2?"]))
  # Values are inserted verbatim, even when they look like slots; other braces are text.
  assert text == ('Rules:\n- Be brief.\n\nExtra requirements, questions like:\n* Q1 {memories}?\n* Q2?\nAnswer them.'
                  '\n\nOutput format:\n{"description": "<face_1> waves."}\n\n[Prev]:\nA {hint} b. C.\nGo.')
  assert custom.messages(video(), [], None)[0]["content"][0]["text"] == "Inputs: a video and [Prev].\n"
  with pytest.raises(ValueError, match=r"WindowPrompt.instruction: the slot \{hint\} must appear exactly once, found 0"):
    prompt.WindowPrompt(instruction="{memories}")
  with pytest.raises(ValueError, match=r"WindowPrompt.hint: the slot \{questions\} must appear exactly once, found 2"):
    prompt.WindowPrompt(hint="{questions}{questions}")
  with pytest.raises(ValueError, match=r"f.json: unknown keys \['instructions'\]"):
    prompt.WindowPrompt.from_dict({"instructions": "x"}, "f.json")
  with pytest.raises(ValueError, match="layout='sideways'"):
    prompt.WindowPrompt(layout="sideways")
  with pytest.raises(TypeError, match="prompt"):  # no default: a caller must say which words and order
    prompt.window_messages(video(), [])


def test_the_synthworld_policy_sees_only_words_of_its_vocabulary():
  # The shipped policy records the words it was trained on (its window_prompt.json); each is one token of
  # its word-level vocabulary, so nothing reaches it as [UNK], with or without a hint.
  from taskmem_jax.envs.synthworld import make_tasks, generate, WorldConfig
  from taskmem_jax.processing import Qwen3VLProcessor
  root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
  for name in ("synthworld_policy", "synthworld_phase_one"):
    processor = Qwen3VLProcessor.from_pretrained(os.path.join(root, name))
    policy_prompt = prompt.read_window_prompt(os.path.join(root, name))
    assert policy_prompt.layout == "video_last"
    stream = generate(3, WorldConfig(num_clips=2))
    questions = [q.text for q in make_tasks(stream, seed=3)["ocr"][:5]]
    (turn,) = policy_prompt.messages(video(), [stream.facts[0].text], questions)
    text = turn["content"][0]["text"] + " " + turn["content"][2]["text"]
    unk = processor.tokenizer.unk_token_id
    assert unk is not None and unk not in processor.tokenizer(text)["input_ids"], name


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
  from taskmem_jax.processing import Qwen3VLProcessor, build_tiny_tokenizer
  path = tmp_path_factory.mktemp("tiny_checkpoint")
  build_tiny_tokenizer(PRESETS["tiny"], path)
  with open(path / "config.json", "w") as f:
    json.dump(PRESETS["tiny"].to_hf_dict(), f)
  return Qwen3VLProcessor.from_pretrained(path)


def test_prompt_renders_through_the_processor(processor):
  config = PRESETS["tiny"]
  previous = ["Tag 1 puts a red cup on the table.", "Tag 2 picks up the cup."]
  messages = window(previous, ["What colour is the cup?"])
  batch = processor(messages, thinking=True)
  ids = batch["input_ids"][0]
  assert (ids == config.video_token_id).sum() == 2 * 4 * 4 // 4  # 2 frame groups of 2x2 merged patches
  assert batch["video_grid_thw"].tolist() == [[2, 4, 4]]
  text = processor.tokenizer.decode(ids)
  assert text.startswith("<|im_start|>user\n" + prompt.PREAMBLE + "<|vision_start|><0.5 seconds>")
  assert text.endswith(prompt.CLOSING + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
  assert " ".join(previous) in text and "- What colour is the cup?" in text


def test_video_last_layout_has_the_same_content_with_the_video_last(processor, tmp_path):
  previous, questions = ["Tag 1 sits.", "Tag 2 waves."], ["Who sat?"]
  official = window(previous, questions)
  (turn,) = window(previous, questions, layout="video_last")
  assert [item["type"] for item in turn["content"]] == ["text", "video", "text"]
  assert turn["content"][0]["text"] == prompt.PREAMBLE + instruction(official) + "\n"
  assert turn["content"][2]["text"] == prompt.NEW_CLIP_REQUEST
  # The prompt a checkpoint was trained with (layout and words) travels in its window_prompt.json.
  from taskmem_jax.processing import Qwen3VLProcessor
  checkpoint = processor_dir(processor, tmp_path)
  assert prompt.read_window_prompt(checkpoint) == prompt.DEFAULT
  prompt.write_window_prompt(checkpoint, prompt.WindowPrompt(layout="video_last"))
  with open(os.path.join(checkpoint, prompt.LAYOUT_FILE)) as f:
    assert json.load(f) == {"layout": "video_last"}  # only what differs from the default words
  loaded, loaded_prompt = Qwen3VLProcessor.from_pretrained(checkpoint), prompt.read_window_prompt(checkpoint)
  assert loaded_prompt.layout == "video_last"
  text = loaded.tokenizer.decode(loaded([prompt.window_messages(video(), previous, None, prompt=loaded_prompt)],
                                        thinking=True)["input_ids"][0])
  assert text.index(prompt.CLOSING) < text.index("<|vision_start|>")
  assert text.endswith(prompt.NEW_CLIP_REQUEST + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
  own = prompt.WindowPrompt(layout="video_last", preamble="Look.\n", question="* {question}")
  prompt.write_window_prompt(checkpoint, own)
  assert prompt.read_window_prompt(checkpoint) == own
  prompt.write_window_prompt(checkpoint, prompt.DEFAULT)  # the default: the file goes
  assert not os.path.exists(os.path.join(checkpoint, prompt.LAYOUT_FILE))
  with open(os.path.join(checkpoint, prompt.LAYOUT_FILE), "w") as f:
    f.write('{"layout": "upside_down"}')
  with pytest.raises(ValueError, match=r"window_prompt.json: layout='upside_down'"):
    prompt.read_window_prompt(checkpoint)
  with open(os.path.join(checkpoint, prompt.LAYOUT_FILE), "w") as f:
    f.write('{"hint": "no slot"}')
  with pytest.raises(ValueError, match=r"window_prompt.json: WindowPrompt.hint: the slot \{questions\}"):
    prompt.read_window_prompt(checkpoint)
  with pytest.raises(TypeError, match=r"prompt: expected a WindowPrompt"):
    prompt.window_messages(video(), previous, None, prompt="video_last")


def processor_dir(processor, path) -> str:
  """A checkpoint directory with the processor's tokenizer and config."""
  processor.tokenizer.save_pretrained(os.fspath(path))
  with open(path / "config.json", "w") as f:
    json.dump(PRESETS["tiny"].to_hf_dict(), f)
  return os.fspath(path)


# --- parsers --------------------------------------------------------------------------------------

GOOD = 'I see a cup.</think>\n\n```json\n{"description": "Tag 1 lifts the cup."}\n```'


def test_parse_good_response_with_and_without_fences():
  result = parse_response(GOOD)
  assert result == ParseResult(True, "Tag 1 lifts the cup.", None, "I see a cup.")
  assert parse_response('<think>\nhm\n</think>{"description": "x"}') == ParseResult(True, "x", None, "hm")
  assert parse_response('</think> ```JSON {"description": "x"}```<|im_end|>').ok
  assert parse_response('</think>```\n{"description": "x"}').description == "x"  # fence cut off


@pytest.mark.parametrize("text, reason", [
    ('{"description": "x"}', parse.NO_THINK_END),
    ('a</think>b</think>{"description": "x"}', parse.MULTIPLE_THINK_END),
    ("a</think>Tag 1 lifts the cup.", parse.NOT_JSON),
    ('a</think>{"description": "x"} and more', parse.NOT_JSON),
    ('a</think>["x"]', parse.NOT_A_DICT),
    ('a</think>"x"', parse.NOT_A_DICT),
    ('a</think>{"desc": "x"}', parse.WRONG_KEYS),
    ('a</think>{"description": "x", "extra": 1}', parse.WRONG_KEYS),
    ('a</think>{}', parse.WRONG_KEYS),
    ('a</think>{"description": ["x"]}', parse.NOT_A_STRING),
    ('a</think>{"description": ""}', parse.EMPTY_DESCRIPTION),
    ('a</think>```json\n{"description": "  "}\n```', parse.EMPTY_DESCRIPTION),
])
def test_parse_failure_reasons(text, reason):
  result = parse_response(text)
  assert (result.ok, result.reason, result.description) == (False, reason, None)
  assert not result.format_ok and reason in parse.FORMAT_FAILURES


def test_parse_thinking_when_unterminated():
  assert parse_response("<think>still going").thinking == "<think>still going"


THINK_END_ID = 9


def test_parse_token_budget_and_lengths():
  # 3 thinking tokens, </think>, 4 answer tokens: the memory span is 5 tokens, </think> included.
  tokens = [1, 2, 3, THINK_END_ID, 4, 5, 6, 7]
  result = parse_response(GOOD, tokens=tokens, think_end_id=THINK_END_ID, max_memory_tokens=5)
  assert result.ok and (result.memory_tokens, result.think_tokens) == (5, 3)
  over = parse_response(GOOD, tokens=tokens, think_end_id=THINK_END_ID, max_memory_tokens=4)
  assert (over.ok, over.reason, over.description, over.memory_tokens) == (False, parse.OVER_BUDGET,
                                                                          "Tag 1 lifts the cup.", 5)
  assert over.format_ok
  # With ids, "exactly one </think>" is decided on the ids, as the official reward does.
  twice = parse_response(GOOD, tokens=[THINK_END_ID, 1, THINK_END_ID], think_end_id=THINK_END_ID)
  assert twice.reason == parse.MULTIPLE_THINK_END and twice.memory_tokens is None
  assert parse_response(GOOD, tokens=[1, 2], think_end_id=THINK_END_ID).reason == parse.NO_THINK_END
  bad = parse_response("a</think>{}", tokens=[1, THINK_END_ID, 2], think_end_id=THINK_END_ID)
  assert bad.reason == parse.WRONG_KEYS and bad.memory_tokens == 2
  with pytest.raises(ValueError, match="think_end_id"):
    parse_response(GOOD, tokens=tokens)
  with pytest.raises(ValueError, match="max_memory_tokens needs"):
    parse_response(GOOD, max_memory_tokens=5)


def test_lenient_parser():
  assert parse_lenient(GOOD) == "Tag 1 lifts the cup."
  assert parse_lenient('a</think>b</think>{"description": "x"}') == "x"  # after the last </think>
  assert parse_lenient('{"description": "no think"}') == "no think"
  assert parse_lenient('</think>Here it is: {"description": "x", "other": 1} done') == "x"
  assert parse_lenient('</think>{"description": "cut \\"off') == 'cut "off'  # truncated: regex
  assert parse_lenient("</think>{'description': 'single'}") is None
  assert parse_lenient('</think>{"description": "  "}') is None
  assert parse_lenient("</think>nothing here") is None
