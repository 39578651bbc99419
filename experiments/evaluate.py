r"""Streaming evaluation on VideoMME, EgoLife, EgoTempo or SynthWorld (taskmem_jax/eval/streaming.py).

  python -m experiments.evaluate --benchmark=videomme --data_dir=DIR --checkpoint=POLICY --workdir=W \
      [--answerer=http --base_url=URL --model=gpt-4o --adapters_dir=ADAPTERS ...]

The policy (--checkpoint, HF format) memorises every stream clip by clip (10-s clips, 50-s windows); each
question is answered from memory only, after its time. With --adapters_dir (the <task>.safetensors files
experiments/phase_two writes) a task's questions are answered from the memory written with that task's
steer and hint. Multiple choice: --answerer=local (a checkpoint, --answerer_checkpoint, default the
policy) or http (an OpenAI-compatible endpoint); EgoLife uses 3 samples and a majority vote. Free form
(EgoTempo) is graded by --grader (http, local, or exact). Writes W/answers.jsonl, W/memories/, W/scores.json,
W/scores.md and W/scores.png; a rerun resumes and recomputes nothing already written. --phase_two trains
each task's adapters online, the official schedule on real benchmarks: after its first 10, 30 and 50 questions
(--update_positions; W/adapters/<task>@<N>.safetensors, from those questions and their videos), each later
question answered from the memory written with the latest; SynthWorld: one adapter after --update_after.

Data layout (--data_dir): videomme: videomme.json[l] (+ videos/, subtitles/); egolife: EgoLifeQA*.json
(+ the DAYn_A1_JAKE_HHMMSSFF.mp4 files anywhere below --video_dir); egotempo: egotempo_openQA.json
(+ videos/<clip_id>.mp4); synthworld: streams are generated there (--seeds). --video_dir overrides
data_dir/videos.
"""

from __future__ import annotations

import glob
import os

import jax.numpy as jnp
from absl import flags

from taskmem_jax import cli
from taskmem_jax.memory.prompt import read_window_prompt
from taskmem_jax.prompt_file import load_prompt_template

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a script, so that importing this module defines no flags."""
  flags.DEFINE_enum("benchmark", "synthworld", ["videomme", "egolife", "egotempo", "synthworld"], "Benchmark.")
  flags.DEFINE_string("data_dir", "/tmp/taskmem_eval_data", "Annotations and videos (see the docstring).")
  flags.DEFINE_string("video_dir", "", "Videos; default data_dir/videos when it exists, else data_dir.")
  flags.DEFINE_string("checkpoint", None, "The memorisation policy (HF folder). Default: the shipped SynthWorld policy.")
  flags.DEFINE_string("workdir", "/tmp/taskmem_eval", "Answers, memories, scores; a rerun resumes.")
  flags.DEFINE_string("adapters_dir", "", "Phase-Two steer files <task>.safetensors (their hint in the metadata).")
  flags.DEFINE_enum("answerer", "local", ["local", "http", "reader"], "reader: SynthWorld's deterministic reader.")
  flags.DEFINE_string("answerer_checkpoint", "", "Local answerer / grader checkpoint; default the policy.")
  flags.DEFINE_enum("grader", "exact", ["exact", "local", "http"], "Free-form grading (EgoTempo).")
  flags.DEFINE_string("base_url", "", "OpenAI-compatible endpoint for http answerer / grader.")
  flags.DEFINE_string("model", "", "Model name at the endpoint.")
  flags.DEFINE_string("api_key_env", "OPENAI_API_KEY", "Environment variable holding the API key.")
  flags.DEFINE_integer("max_new_tokens", 1024, "Tokens per memory response.")
  flags.DEFINE_enum("memory_sampling", "", ["", "official", "greedy"], "How memories are written: official = T 0.6, "
                    "top-p 0.95, top-k 20 (the official pipeline); \"\" = official on real benchmarks, greedy on "
                    "SynthWorld (its tables were made greedily).")
  flags.DEFINE_integer("memory_seed", 0, "Seed of the memory sampling (window k draws with seed + k); recorded in "
                       "memories/<tag>.sampling.json.")
  flags.DEFINE_string("seeds", "1000:1002", "SynthWorld stream seeds, start:stop.")
  flags.DEFINE_integer("clips", 8, "SynthWorld clips per stream.")
  flags.DEFINE_string("durations", "short,medium", "VideoMME duration categories (the paper: short + medium).")
  flags.DEFINE_bool("phase_two", False, "Train each task's adapter from its first --update_after questions (judged "
                    "by --base_url if given, else the local answerer checkpoint) and answer its later questions "
                    "from the adapted memory.")
  flags.DEFINE_integer("update_after", 5, "Phase Two: questions of a task answered before its adapter takes over.")
  flags.DEFINE_enum("egolife_context", "official", ["official", "day"], "EgoLife answer context: official = the "
                    "question's CURRENT minute and its TARGET minutes (any earlier day); day = that day's memory up "
                    "to the question.")
  flags.DEFINE_list("update_positions", None, "Phase Two: a schedule of updates instead (one adapter per task after "
                    "each N of its questions, question i answered from the largest N <= i). Default: the official "
                    "10,30,50 on real benchmarks, --update_after alone on SynthWorld.")
  flags.DEFINE_integer("adapt_contexts", 16, "Phase Two: training windows per adapter.")
  flags.DEFINE_string("prompt_template", "", "A prompt file (taskmem_jax/prompt_file.py) with the words shown to the "
                      "policy, the judges and the answerer, e.g. the official wording (README, Prompts); default: "
                      "the checkpoint's recorded window prompt and our words.")


def load(benchmark: str, data_dir: str):
  """The benchmark from data_dir (see the module docstring for the layout)."""
  import taskmem_jax.benchmarks as B

  def one(pattern):
    found = sorted(glob.glob(os.path.join(data_dir, pattern)))
    if not found:
      raise FileNotFoundError(f"{data_dir}: no {pattern}")
    return found[0]

  videos = FLAGS.video_dir or (os.path.join(data_dir, "videos") if os.path.isdir(os.path.join(data_dir, "videos"))
                               else data_dir)
  if benchmark == "videomme":
    subs = os.path.join(data_dir, "subtitles")
    return B.load_videomme(one("videomme*.json*"), videos, subtitles_dir=subs if os.path.isdir(subs) else None,
                           durations=tuple(FLAGS.durations.split(",")) if FLAGS.durations else None)
  if benchmark == "egolife":
    return B.load_egolife(one("EgoLifeQA*.json"), videos, close_gaps=True)  # windows never fall in a gap
  if benchmark == "egotempo":
    return B.load_egotempo(one("egotempo*.json"), videos)
  from taskmem_jax.envs.synthworld.benchmark import load_synthworld
  a, _, b = FLAGS.seeds.partition(":")
  from taskmem_jax.envs.synthworld import policy_world
  return load_synthworld(data_dir, range(int(a), int(b)), clips=FLAGS.clips, world=policy_world(evaluation_checkpoint()))


def train_adapters(evaluation, model, processor) -> dict:
  """Phase Two online (taskmem_jax/phase_two/online.py). Real benchmarks: the official DPO and deployment
  settings (configs/phase_two_30b_a3b.py: the steer x1.5). SynthWorld: its own config's (x1.0)."""
  from taskmem_jax.adapters import steer as steer_lib
  from taskmem_jax.phase_two.mining import CacheConfig
  from taskmem_jax.phase_two.online import adapt_benchmark
  from taskmem_jax.rewards import RewardConfig

  texts = load_prompt_template(FLAGS.prompt_template).judges
  if FLAGS.base_url:
    from taskmem_jax.rewards import HTTPJudge
    judge = HTTPJudge(FLAGS.base_url, FLAGS.model, api_key_env=FLAGS.api_key_env or None, texts=texts)
  else:
    from taskmem_jax.models import qwen3_vl
    from taskmem_jax.processing import Qwen3VLProcessor
    from taskmem_jax.rewards import LocalLLMJudge
    ckpt = FLAGS.answerer_checkpoint or FLAGS.checkpoint or evaluation_checkpoint()
    judge = LocalLLMJudge(qwen3_vl.from_pretrained(ckpt, dtype=jnp.bfloat16), Qwen3VLProcessor.from_pretrained(ckpt),
                          texts=texts)
  steer_lib.add_steer(model)
  dpo = dpo_config(FLAGS.benchmark)
  return adapt_benchmark(evaluation, judge, judge, RewardConfig(), CacheConfig(max_new_tokens=FLAGS.max_new_tokens),
                         dpo, update_after=FLAGS.update_after,
                         update_positions=update_positions(FLAGS.benchmark, FLAGS.update_positions),
                         num_contexts=FLAGS.adapt_contexts)


def local_answerer_chat(model, processor):
  """The local answerer: greedy on every benchmark, as the official answerer's temperature 1e-6 is."""
  from taskmem_jax.eval.answerers import LocalChat
  return LocalChat(model, processor, temperature=0.0)


def update_positions(benchmark: str, given=None) -> tuple[int, ...] | None:
  """The Phase-Two schedule: the given positions; else the official one (configs/phase_two_30b_a3b.py) on real
  benchmarks; None (one update after --update_after questions) on SynthWorld."""
  if given:
    return tuple(int(n) for n in given)
  from taskmem_jax.configs import phase_two_30b_a3b
  return None if benchmark == "synthworld" else tuple(phase_two_30b_a3b.get_config().update_positions)


def dpo_config(benchmark: str):
  """The DPO settings adapters are trained with for a benchmark: the real model's official ones, or
  SynthWorld's config (its own lighter DPO; both deploy the steer x1.5)."""
  from taskmem_jax.configs import phase_two_30b_a3b, phase_two_synthworld
  return (phase_two_synthworld if benchmark == "synthworld" else phase_two_30b_a3b).get_config().dpo


def streaming_config(benchmark: str, sampling: str = "", seed: int = 0, max_new_tokens: int = 1024):
  """The memory writer's settings: official sampling on real benchmarks (or when asked), greedy otherwise."""
  from taskmem_jax.eval.streaming import OFFICIAL_SAMPLING, StreamingConfig
  official = sampling == "official" or (not sampling and benchmark != "synthworld")
  return StreamingConfig(max_new_tokens=max_new_tokens, seed=seed, **(OFFICIAL_SAMPLING if official else {}))


def evaluation_checkpoint() -> str:
  return FLAGS.checkpoint or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                                          "synthworld_policy")


def main(argv):
  del argv
  from taskmem_jax.adapters import steer as steer_lib
  from taskmem_jax.eval import answerers as A
  from taskmem_jax.eval.metrics import format_table, write_score_events
  from taskmem_jax.eval.plots import plot_tasks
  from taskmem_jax.eval.streaming import StreamingConfig, StreamingEvaluation
  from taskmem_jax.io import atomic_write_text
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.phase_two.adapt import Adapter
  from taskmem_jax.processing import Qwen3VLProcessor

  checkpoint = evaluation_checkpoint()
  template = load_prompt_template(FLAGS.prompt_template)  # a bad file fails before any work
  benchmark = load(FLAGS.benchmark, FLAGS.data_dir)
  print(f"{FLAGS.benchmark}: {len(benchmark.streams)} streams, {benchmark.num_questions()} questions, "
        f"{len(benchmark.errors)} rows skipped")
  for e in benchmark.errors[:10]:
    print(f"  skipped {e.where}: {e.why}")
  model = qwen3_vl.from_pretrained(checkpoint, dtype=jnp.bfloat16 if FLAGS.benchmark != "synthworld" else jnp.float32)
  processor = Qwen3VLProcessor.from_pretrained(checkpoint)
  prompt = template.window_prompt(read_window_prompt(checkpoint))
  adapters = {}
  for path in sorted(glob.glob(os.path.join(FLAGS.adapters_dir, "*.safetensors"))) if FLAGS.adapters_dir else []:
    meta = steer_lib.load(model, path)
    adapters[meta.get("task", os.path.basename(path).removesuffix(".safetensors"))] = Adapter(
        meta.get("task", ""), steer_lib.get_steer(model), [h for h in meta.get("hint", "").split(" | ") if h], {})
  if adapters:
    steer_lib.set_steer(model, 0 * steer_lib.get_steer(model))

  def chat():
    if FLAGS.answerer == "http" or FLAGS.grader == "http":
      from taskmem_jax.rewards import HTTPJudge
      return HTTPJudge(FLAGS.base_url, FLAGS.model, api_key_env=FLAGS.api_key_env or None).complete
    answer_ckpt = FLAGS.answerer_checkpoint or checkpoint
    answer_model = model if answer_ckpt == checkpoint else qwen3_vl.from_pretrained(answer_ckpt, dtype=jnp.bfloat16)
    return local_answerer_chat(answer_model, Qwen3VLProcessor.from_pretrained(answer_ckpt))

  if FLAGS.answerer == "reader":
    from taskmem_jax.envs.synthworld.benchmark import reader_answerer
    answer_mc, answer_free = reader_answerer, None
  else:
    complete = chat()
    answer_mc = A.ChatAnswerer(complete, num_samples=3 if FLAGS.benchmark == "egolife" else 1,
                               texts=template.answerer)
    answer_free = A.ChatFreeFormAnswerer(complete, texts=template.answerer)
  grade = A.ExactGrader() if FLAGS.grader == "exact" else A.ChatGrader(chat())
  update_after = FLAGS.update_after if (FLAGS.phase_two or adapters) else 0
  evaluation = StreamingEvaluation(benchmark, FLAGS.workdir, (model, processor, prompt), answer_mc, answer_free, grade,
                                   streaming_config(FLAGS.benchmark, FLAGS.memory_sampling, FLAGS.memory_seed,
                                                    FLAGS.max_new_tokens), adapters=adapters,
                                   update_after=update_after, egolife_context=FLAGS.egolife_context)
  if FLAGS.phase_two:
    evaluation.adapters = train_adapters(evaluation, model, processor)
  scores = evaluation.run()
  table = format_table(scores)
  atomic_write_text(os.path.join(FLAGS.workdir, "scores.md"), table + "\n")
  plot_tasks(scores, os.path.join(FLAGS.workdir, "scores.png"), f"{FLAGS.benchmark}: Acc / Cov / Prec")
  write_score_events(os.path.join(FLAGS.workdir, "tb"), scores, step=scores["overall"]["n"])
  print(table)
  print(f"errors: {scores['errors']}; {scores['seconds']:.0f} s; scores: {os.path.join(FLAGS.workdir, 'scores.json')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
