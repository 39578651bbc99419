"""A prompt file (--prompt_template) reaches the policy, the judges and the answerer; bad files name the fault."""

import json
import os

import pytest

from taskmem_jax.eval import answer_prompt as ans
from taskmem_jax.eval.answerers import ChatAnswerer, ChatFreeFormAnswerer
from taskmem_jax.memory import EpisodicMemory
from taskmem_jax.memory import prompt as wp
from taskmem_jax.prompt_file import PromptTemplate, load_prompt_template, write_prompt_template
from taskmem_jax.rewards import judge_prompts as P
from taskmem_jax.rewards.judge import WindowContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A file in the shape of the official wording: positional text turned into named slots, a JSON example
# with literal braces, the hint right after the last requirement.
FILE = {
    "policy": {
        "preamble": "You are given:\n- a video with boxes and subtitles.\n- [Prior] that can be empty.\n",
        "instruction": ("Using the IDs, describe the video.\n\nStrict Requirements:\n- Use IDs only.\n- The final "
                        "output must be a dictionary.{hint}\n\nOutput format:\n```json\n{\n    \"description\": "
                        "\"<face_1> waves.\"\n}\n```\n\n[Prior]:\n{memories}\n\n- Describe only new things.\n"
                        "Please output the description."),
        "hint": "\n\nAdditional Output Requirements:\nFocus on what answers questions like:\n{questions}\nThat is all.",
    },
    "judges": {"non_redundancy": "Does it repeat?\nBefore: {memories}\nNew: {candidate}\nSay 1 or 0.",
               "ranking": "Order these:\n{candidates}\n{reply}"},
    "answerer": {"multiple_choice": "Description:\n\n{memory}\n\nQ: {question}\n{options}\nOne letter.",
                 "abstain_option": "Not found.", "free_form": "Memory:\n{memory}\nQ: {question}"},
}


def write(tmp_path, value, name="prompts.json") -> str:
  path = tmp_path / name
  path.write_text(value if isinstance(value, str) else json.dumps(value))
  return str(path)


def video():
  return {"type": "video", "video": "w.mp4", "video_start": 0.0, "video_end": 50.0}


def test_the_policy_section_replaces_only_what_it_names(tmp_path):
  template = load_prompt_template(write(tmp_path, FILE))
  # Over a video_last checkpoint's own prompt: the file's words, the checkpoint's layout and request.
  own = wp.WindowPrompt(layout="video_last", new_clip_request="Describe the end.")
  policy = template.window_prompt(own)
  assert (policy.layout, policy.new_clip_request, policy.question) == ("video_last", "Describe the end.", "- {question}")
  (turn,) = policy.messages(video(), ["<face_1> sits.", "<face_2> waves."], ["Who sat?", "Who waved?"])
  text = turn["content"][0]["text"]
  assert text.startswith(FILE["policy"]["preamble"] + "Using the IDs, describe the video.")
  assert ("must be a dictionary.\n\nAdditional Output Requirements:\nFocus on what answers questions like:\n"
          "- Who sat?\n- Who waved?\nThat is all.\n\nOutput format:\n```json\n{\n    \"description\"") in text
  assert "[Prior]:\n<face_1> sits. <face_2> waves.\n\n- Describe only new things." in text
  assert turn["content"][2]["text"] == "Describe the end."
  # Without questions the hint slot is empty, as the official supplement_prompt is.
  (turn,) = template.window_prompt().messages(video(), [], None)
  assert "must be a dictionary.\n\nOutput format:" in turn["content"][2]["text"]
  assert PromptTemplate().window_prompt(own) == own  # no file: the checkpoint's own prompt


def test_judges_and_answerer_read_the_files_texts(tmp_path):
  template = load_prompt_template(write(tmp_path, FILE))
  ctx = WindowContext(clip=1, start=0.0, end=20.0, previous=("<face_1> sits.",))
  assert P.non_redundancy_prompt(ctx.previous, "<face_1> stands.", template.judges) == (
      "Does it repeat?\nBefore: <face_1> sits.\nNew: <face_1> stands.\nSay 1 or 0.")
  ranking = P.ranking_prompt(["a", "b"], template.judges)
  assert ranking.startswith("Order these:\nCandidate 1: a\nCandidate 2: b\nWrite the labels of all 2 candidates")
  assert P.parse_ranking(f"{P.RANK_START} 2, 1 {P.RANK_END}", 2).order == (1, 0)  # the reply contract holds
  # What the file leaves out stays ours.
  assert template.judges.faithfulness == P.DEFAULT_TEXTS.faithfulness
  assert P.task_prompt(["Q?"], "m0", "m1", texts=template.judges) == P.task_prompt(["Q?"], "m0", "m1")

  sent = []

  def complete(messages):
    sent.append(messages[0]["content"])
    return "B"

  memory = EpisodicMemory(descriptions={0: "<face_1> sits."})

  class Q:
    text, options = "Who sits?", ["face 2", "face 1"]

  assert ChatAnswerer(complete, texts=template.answerer)(Q, memory) == "B"
  assert sent[-1] == f"Description:\n\n{memory.to_string()}\n\nQ: Who sits?\nA. face 2\nB. face 1\nC. Not found.\nOne letter."
  assert ChatFreeFormAnswerer(complete, texts=template.answerer)(Q, memory) == "B"
  assert sent[-1] == f"Memory:\n{memory.to_string()}\nQ: Who sits?"
  ChatAnswerer(complete)(Q, memory)
  assert sent[-1] == ans.qa_prompt(memory.to_string(), Q.text, Q.options)[0] and ans.ABSTAIN_TEXT in sent[-1]


def test_a_written_file_reads_back(tmp_path):
  template = load_prompt_template(write(tmp_path, FILE))
  path = str(tmp_path / "again.json")
  write_prompt_template(path, template)
  assert load_prompt_template(path) == template
  assert load_prompt_template("") == PromptTemplate() == load_prompt_template(None)


@pytest.mark.parametrize("value,match", [
    ("{not json", r"prompts.json: not valid JSON"),
    ([], r"prompts.json: expected a JSON object with some of the sections"),
    ({"answerers": {}}, r"prompts.json: unknown sections \['answerers'\]"),
    ({"policy": {"instruction": "{memories} only"}}, r"prompts.json: policy: WindowPrompt.instruction: the slot "
                                                     r"\{hint\} must appear exactly once, found 0"),
    ({"policy": {"layout": "sideways"}}, r"prompts.json: policy: layout='sideways'"),
    ({"judges": {"task": "{questions} {memories}"}}, r"prompts.json: judges: JudgeTexts.task: the slot \{reply\}"),
    ({"judges": {"rank": "x"}}, r"prompts.json: judges: unknown keys \['rank'\]"),
    ({"answerer": {"multiple_choice": "{memory} {question}"}}, r"prompts.json: answerer: AnswererTexts."
                                                               r"multiple_choice: the slot \{options\}"),
    ({"answerer": {"free_form": 3}}, r"prompts.json: answerer: AnswererTexts.free_form: expected a string, got int"),
])
def test_bad_files_name_the_fault(tmp_path, value, match):
  with pytest.raises(ValueError, match=match):
    load_prompt_template(write(tmp_path, value))


def test_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"--prompt_template=.*nowhere.json: cannot read it"):
    load_prompt_template(str(tmp_path / "nowhere.json"))


def test_phase_one_loads_the_policy_with_the_file(tmp_path):
  """The config's prompt_template reaches the window prompt the trainer renders windows with."""
  from experiments import phase_one
  from taskmem_jax.configs import phase_one_synthworld

  cfg = phase_one_synthworld.get_config()
  cfg.prompt_template = write(tmp_path, {"policy": {"question": "* {question}"}})
  _, _, policy_prompt = phase_one.load_policy(cfg)
  shipped = wp.read_window_prompt(os.path.join(ROOT, "assets", "synthworld_policy"))
  assert policy_prompt == wp.WindowPrompt(**{**shipped.to_dict(), "question": "* {question}"})


def test_official_prompt_from_a_checkout_renders_as_the_official_code(tmp_path):
  """experiments/official_prompt on a checkout-shaped folder (our stand-in words in the official code's
  constants and format: positional slots, doubled braces): our windows equal what construct_episodic_input
  and _make_supplement would build."""
  from experiments.official_prompt import write_official_prompt

  (tmp_path / "memory").mkdir()
  (tmp_path / "training" / "stage2").mkdir(parents=True)
  system = "Given:\n- a video.\n- [Description of the preceding part], maybe empty.\n"
  episodic = ('Describe it.\n\nStrict Requirements:\n- Use IDs.\n- Output a dict.{}\n\nOutput format:\n```json\n'
              '{{\n    "description": "<face_1> waves."\n}}\n```\n\n{}\n\n- Only new things.\nPlease output.')
  supplement = "\n\nExtra:\n{}, for questions like:\n{}\nMake them answerable."
  focus = "Focus on related descriptions"
  (tmp_path / "memory" / "memory_process.py").write_text(
      f"import json\nRETRY_TIMES = 10\nsystem_prompt = {system!r}\nepisodic_prompt = {episodic!r}\n")
  (tmp_path / "training" / "stage2" / "gen_mme_dataset.py").write_text(
      f"SUPPLEMENT_PROMPT = {supplement!r}\nEPISODIC_INSTRUCTION = {focus!r}\n")
  out = str(tmp_path / "official.json")
  write_official_prompt(str(tmp_path), out)
  policy = load_prompt_template(out).window_prompt()
  previous, questions = ["<face_1> sits.", "<face_2> waves."], ["Who sat?", "What is on the table?"]
  for asked in (questions, None):
    hint = supplement.format(focus, "- " + "\n- ".join(asked)) if asked else ""
    official = episodic.format(hint, "[Description of the preceding part]:\n" + " ".join(previous))
    (turn,) = policy.messages(video(), previous, asked)
    assert [turn["content"][0]["text"], turn["content"][2]["text"]] == [system, official]
  (tmp_path / "training" / "stage2" / "gen_mme_dataset.py").write_text("SUPPLEMENT = 'x'\n")
  with pytest.raises(ValueError, match=r"gen_mme_dataset.py: no string constant \['SUPPLEMENT_PROMPT', "
                                       r"'EPISODIC_INSTRUCTION'\]"):
    write_official_prompt(str(tmp_path), out)
