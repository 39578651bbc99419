r"""The README's main job: memorise a SynthWorld stream clip by clip, answer every task's questions from
memory only, and report Acc / Cov / Prec per task.

  python -m experiments.demo --output_dir=/tmp/taskmem_demo [--policy=shipped|teacher] [--seed=S]

Steps:
1. Generate a seeded SynthWorld stream and write it as an mp4.
2. Memorise it with the policy. The default is the SFT policy shipped in assets/synthworld_policy.
   It reads each 10-s clip back from the mp4 through the same decord / processor path that real videos
   use, encodes it once, and writes every window's memory in the jitted window scans (memory.memorise).
   --policy=teacher writes the programmatic teacher's memories instead, for comparison.
3. Answer each task's questions with the deterministic memory-only reader.
4. Phase Two (after the shipped policy's table; --nophase_two skips it), from the Phase-One policy shipped
   in assets/synthworld_phase_one (GSPO from a 2-fact SFT policy, as the paper runs Phase Two after
   Phase One): per task, after its first 5 questions a steer adapter is trained by DPO on task-judged
   pairs and writes the memory for the rest of the stream; before/after per task, the cross-task matrix,
   what facts get dropped, a task switch, and the ceiling of task focus (a perfect-reading teacher).
5. Write DIR/results.json (acc, cov, prec and n per task and overall, memory quality, and `phase_two`,
   `cross_task`, `fact_mentions`, `drift`, `ceiling`), DIR/memory.json, DIR/scores.png (the Acc / Cov /
   Prec bars per task and overall), DIR/phase_two.png, DIR/tb (TensorBoard events of the Phase-Two DPO runs) and
   DIR/report.html (frame thumbnails, facts, memories, questions and answers, the score table with
   scores.png, the Phase-Two tables and figure).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags
from tqdm import tqdm

from taskmem_jax import cli
from taskmem_jax.envs import synthworld as sw
from taskmem_jax.envs.synthworld.qa import evaluate_memory, memory_quality
from taskmem_jax.envs.synthworld.reader import answer
from taskmem_jax.envs.synthworld.teacher import teacher_episodic_memory
from taskmem_jax.eval.metrics import format_table, save_json, write_score_events
from taskmem_jax.eval.plots import plot_tasks
from taskmem_jax.eval.report import write_report
from taskmem_jax.memory.memorise import ClipStream
from taskmem_jax.memory.memorise import memorise as memorise_streams
from taskmem_jax.memory.prompt import read_window_prompt, window_video_item
from taskmem_jax.memory.sample import WindowSampling
from taskmem_jax.memory.store import EpisodicMemory, format_seconds, schedule

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
POLICY_DIR = os.path.join(ASSETS, "synthworld_policy")  # the SFT policy: the Phase-One table
PHASE_ONE_DIR = os.path.join(ASSETS, "synthworld_phase_one")  # after Phase One: where Phase Two starts
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a script, so that importing this module (tests) defines no flags."""
  flags.DEFINE_string("output_dir", "/tmp/taskmem_demo", "Where the stream, results and report go.")
  flags.DEFINE_enum("policy", "shipped", ["shipped", "teacher"], "Who writes the memories.")
  flags.DEFINE_string("policy_dir", POLICY_DIR, "The shipped policy checkpoint (HF format with tokenizer).")
  flags.DEFINE_integer("seed", 1000, "Stream seed (the shipped policy was trained on other seeds).")
  flags.DEFINE_integer("clips", 12, "Clips of 10 s in the stream.")
  flags.DEFINE_integer("budget", 40, "Memory token budget (description tokens; the policy's L_mem adds the JSON "
                       "wrapper and is enforced while decoding).")
  flags.DEFINE_integer("max_new_tokens", 96, "Response tokens the policy may write per window.")
  flags.DEFINE_integer("questions_per_task", 0, "0 = every question the stream supports.")
  flags.DEFINE_bool("phase_two", True, "After the Phase-One table, adapt a steer to each task (shipped policy only).")
  flags.DEFINE_string("phase_two_policy_dir", PHASE_ONE_DIR, "The Phase-One policy that Phase Two adapts.")


def memorise(stream: sw.World, video_path: str, policy: str, *, policy_dir: str = POLICY_DIR, budget: int = 40,
             max_new_tokens: int = 96, seed: int = 0, progress: bool = True) -> EpisodicMemory:
  """The stream's episodic memory, written by the shipped policy or by the teacher."""
  if policy == "teacher":
    return teacher_episodic_memory(stream, budget_tokens=budget, rng=np.random.default_rng(seed))
  if not os.path.isfile(os.path.join(policy_dir, "config.json")):
    raise FileNotFoundError(f"{policy_dir}: no shipped policy checkpoint (config.json) found")
  from taskmem_jax.models import qwen3_vl  # imported here: the teacher path needs no model
  from taskmem_jax.processing import Qwen3VLProcessor
  model = qwen3_vl.from_pretrained(policy_dir, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(policy_dir)
  # L_mem covers the response from </think> on: the JSON wrapper's tokens plus the teacher's budget.
  wrapper = len(processor.tokenizer('</think>{"description": ""}', add_special_tokens=False)["input_ids"])
  sampling = WindowSampling(max_new_tokens=max_new_tokens, memory_budget=budget + wrapper,
                            parse_budget=budget + wrapper)
  clips = ClipStream(len(schedule(stream.duration)), lambda k: window_video_item(video_path, 10.0 * k, 10.0 * k + 10))
  bar = tqdm(total=clips.num_clips, desc="memorising", unit="clip", disable=not progress)
  (written,) = memorise_streams(model, processor, [clips], sampling, prompt=read_window_prompt(policy_dir), seed=seed,
                                on_clip=lambda *_: bar.update())
  bar.close()
  return written.memory


def phase_two(output_dir: str, policy_dir: str, stream: sw.World, questions: dict, progress: bool = True,
              config=None) -> tuple[dict, str, str]:
  """Phase Two from the policy in policy_dir on the demo stream (taskmem_jax/envs/synthworld/phase_two.py, the
  demo variant of its config): (JSON-able results, the tables as text, the figure's path)."""
  from taskmem_jax.configs import phase_two_synthworld
  from taskmem_jax.envs.synthworld import phase_two as experiment
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.processing import Qwen3VLProcessor

  cfg = config or phase_two_synthworld.get_config("demo")
  questions = {t: q for t, q in questions.items() if t in experiment.task_names(cfg)}
  model = qwen3_vl.from_pretrained(policy_dir, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(policy_dir)
  say = (lambda text: tqdm.write(f"phase two: {text}")) if progress else None
  results = experiment.run(cfg, model, processor, stream, questions, prompt=read_window_prompt(policy_dir),
                           workdir=os.path.join(output_dir, "phase_two"), progress=say)
  figure = experiment.plot(results, os.path.join(output_dir, "phase_two.png"))
  experiment.write_dpo_events(results, os.path.join(output_dir, "tb"))
  return experiment.public(results), experiment.format_tables(results), figure


def run(output_dir: str, *, policy: str = "shipped", policy_dir: str = POLICY_DIR, seed: int = 1000, clips: int = 12,
        budget: int = 40, max_new_tokens: int = 96, questions_per_task: int = 0, progress: bool = True,
        with_phase_two: bool = False, phase_two_config=None, phase_two_policy_dir: str = PHASE_ONE_DIR) -> dict:
  os.makedirs(output_dir, exist_ok=True)
  # The shipped policy was trained on one of SynthWorld's renders (its synthworld.json says which).
  stream = sw.generate(seed, sw.policy_world_config(policy_dir, num_clips=clips))
  video_path = sw.write_stream(stream, os.path.join(output_dir, "stream.mp4"))
  tic = time.perf_counter()
  memory = memorise(stream, video_path, policy, policy_dir=policy_dir, budget=budget, max_new_tokens=max_new_tokens,
                    seed=seed, progress=progress)
  seconds = {"memorising": time.perf_counter() - tic}
  memory.save(os.path.join(output_dir, "memory.json"))
  questions = sw.make_tasks(stream, questions_per_task or None, seed=seed)
  records, scores = evaluate_memory(stream, memory, questions, answer)
  # A policy may write no parseable memory at all (then every question is abstained on).
  quality = memory_quality(stream, memory) if len(memory) else {
      "faithfulness": float("nan"), "redundancy": float("nan"), "facts_per_memory": 0.0, "fact_precision": float("nan"), "unparsed": float("nan"),
      "memories": 0}
  results = {"policy": policy, "seed": seed, "clips": clips, **scores, "memory_quality": quality, "seconds": seconds}
  sections = []
  if with_phase_two and policy == "shipped":
    tic = time.perf_counter()
    adapted, tables, figure = phase_two(output_dir, phase_two_policy_dir, stream, questions, progress,
                                        phase_two_config)
    seconds["phase_two"] = time.perf_counter() - tic
    adapters = [a for t in adapted["phase_two"].values() for a in t["adapters"]]
    seconds["phase_two_rollouts"] = sum(a["rollout_s"] for a in adapters)
    seconds["phase_two_dpo"] = sum(a["dpo_s"] for a in adapters)
    results.update(adapted)
    sections.append(("Phase Two: task adapters", tables, figure))
  save_json(results, os.path.join(output_dir, "results.json"))
  write_score_events(os.path.join(output_dir, "tb"), scores)

  clip_rows = []
  for clip in range(stream.num_clips):
    start, end = stream.clip_span(clip)
    frames = list(stream.clip_frames(clip))
    clip_rows.append({"clip": clip, "span": f"{format_seconds(int(start))}-{format_seconds(int(end))}",
                      "frames": stream.render_frames(frames[:: max(len(frames) // 4, 1)][:4]),
                      "facts": [f.text for f in stream.facts_in(clip)],
                      "memory": memory.get(clip) if clip in memory else None})
  question_rows = [{"task": task, "text": q.text, "options": q.options, "answer": q.answer, "predicted": predicted}
                   for (task, predicted, _), q in zip(records, [q for qs in questions.values() for q in qs])]
  table_rows = [{"task": t, **s} for t, s in scores["tasks"].items()] + [{"task": "overall", **scores["overall"]}]
  chart = plot_tasks(scores, os.path.join(output_dir, "scores.png"), f"SynthWorld stream {seed}, {policy} memories: "
                     "Acc / Cov / Prec")
  write_report(os.path.join(output_dir, "report.html"), title=f"SynthWorld stream {seed}: {policy} memories",
               summary={"policy": policy, "clips": clips, "faithfulness": f"{quality['faithfulness']:.3f}",
                        "redundancy": f"{quality['redundancy']:.3f}",
                        "facts per memory": f"{quality['facts_per_memory']:.2f}"},
               clips=clip_rows, questions=question_rows, table_rows=table_rows, sections=sections,
               table_image=chart)
  return results


def main(argv):
  del argv
  results = run(FLAGS.output_dir, policy=FLAGS.policy, policy_dir=FLAGS.policy_dir, seed=FLAGS.seed,
                clips=FLAGS.clips, budget=FLAGS.budget, max_new_tokens=FLAGS.max_new_tokens,
                questions_per_task=FLAGS.questions_per_task, with_phase_two=FLAGS.phase_two,
                phase_two_policy_dir=FLAGS.phase_two_policy_dir)
  print(format_table(results))
  quality = results["memory_quality"]
  print(f"\nmemory quality: faithfulness {quality['faithfulness']:.3f}, redundancy {quality['redundancy']:.3f}, "
        f"{quality['facts_per_memory']:.2f} facts per memory, {quality['fact_precision']:.3f} of them true")
  if "phase_two" in results:
    from taskmem_jax.envs.synthworld.phase_two import format_tables
    print("\n" + format_tables(results))
  took = results["seconds"]
  print(f"\ntime: memorising {took['memorising']:.1f} s" + (
      f"; Phase Two {took['phase_two']:.1f} s (adapters' rollouts {took['phase_two_rollouts']:.1f} s, DPO "
      f"{took['phase_two_dpo']:.1f} s; the rest: memories, evaluation, drift, ceiling)" if "phase_two" in took else ""))
  print(f"results: {os.path.join(FLAGS.output_dir, 'results.json')}; report: "
        f"{os.path.join(FLAGS.output_dir, 'report.html')}; chart: {os.path.join(FLAGS.output_dir, 'scores.png')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
