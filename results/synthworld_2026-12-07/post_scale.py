r"""Does SynthWorld want the official x1.5 steer at deployment? Adapters applied at x0 (the hint alone), x1
and x1.5 on held-out streams.

  python results/synthworld_2026-12-07/post_scale.py --out=results/synthworld_2026-12-07 [--streams=10]

The Phase-One policy (assets/synthworld_phase_one) gets one adapter per (task, adapter seed), trained as
the demo trains them (configs/phase_two_synthworld.py, variant "demo": 48 contexts, DPO 10 steps of 8
pairs) with a fixed hint: the first 5 questions of the task on a hint stream (seed 999) that no evaluation
stream shares. Each evaluation stream (seeds 1000 ...) is then memorised with the hint and the steer
times 0, 1 and 1.5 (greedy), and all of the task's questions are answered from memory by SynthWorld's
reader. The unit is a stream: its Acc averages the adapter seeds, and the 95% intervals bootstrap streams.
Resumable: every memory's score is kept in post_scale_runs.json as it is made.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

SCALES = (0.0, 1.0, 1.5)
TASKS = ("ocr", "counting", "spatial")  # the tasks whose adapters form pairs (results/synthworld_2026-12-06)


def bootstrap(values: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
  """(mean, 2.5%, 97.5%) of the mean of `values` (one per stream), resampling streams."""
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, len(values), (n, len(values)))].mean(1)
  return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=os.path.join(ROOT, "results", "synthworld_2026-12-07"))
  parser.add_argument("--streams", type=int, default=10)
  parser.add_argument("--adapter_seeds", type=int, default=3)
  parser.add_argument("--clips", type=int, default=8)
  args = parser.parse_args()

  import dataclasses

  from experiments.configs import phase_two_synthworld
  from taskmem_jax.adapters import steer as steer_lib
  from taskmem_jax.envs import synthworld as sw
  from taskmem_jax.envs.synthworld.adapt import memorise
  from taskmem_jax.envs.synthworld.judge import GroundTruthJudge
  from taskmem_jax.envs.synthworld.qa import evaluate_memory
  from taskmem_jax.envs.synthworld.reader import answer
  from taskmem_jax.envs.synthworld.source import SynthWorldSource
  from taskmem_jax.envs.synthworld.task_judge import SynthWorldTaskJudge
  from taskmem_jax.io import atomic_write_json, atomic_write_text
  from taskmem_jax.memory.loop import RolloutConfig
  from taskmem_jax.models import qwen3_vl
  from taskmem_jax.phase_two.adapt import train_adapter
  from taskmem_jax.phase_two.cache import CacheConfig
  from taskmem_jax.processing import Qwen3VLProcessor
  from taskmem_jax.rewards import SYNTHWORLD_TAGS, RewardConfig

  cfg = phase_two_synthworld.get_config("demo")
  cfg.dpo.post_scale = 1.0  # keep the trained steer as is; the scales below are applied at memorising
  model = qwen3_vl.from_pretrained(cfg.checkpoint, dtype=np.float32)
  processor = Qwen3VLProcessor.from_pretrained(cfg.checkpoint)
  steer_lib.add_steer(model)
  world = sw.policy_world_config(cfg.checkpoint, num_clips=args.clips)
  source = SynthWorldSource(dataclasses.replace(world, num_clips=cfg.train_clips), seed_base=cfg.train_seed_base,
                            teacher_budget=cfg.teacher_budget)
  hint_stream = sw.generate(999, world)
  hints = {t: [q.text for q in sw.make_tasks(hint_stream, seed=999)[t][:5]] for t in TASKS}
  rollout = RolloutConfig(max_new_tokens=cfg.max_new_tokens)
  runs_path = os.path.join(args.out, "post_scale_runs.json")
  runs = json.load(open(runs_path)) if os.path.isfile(runs_path) else {"adapters": {}, "scores": {}}

  adapters = {}
  for task in TASKS:
    for s in range(args.adapter_seeds):
      path = os.path.join(args.out, "post_scale_adapters", f"{task}_{s}.npy")
      if os.path.isfile(path):
        adapters[task, s] = np.load(path)
        continue
      tic = time.perf_counter()
      cache = CacheConfig(**{**dict(cfg.cache), "seed": s})
      a = train_adapter(model, processor, task, hints[task], source, GroundTruthJudge(cfg.judge_scope),
                        SynthWorldTaskJudge(), RewardConfig(memory_token_threshold=cfg.reward_memory_threshold),
                        cache, cfg.dpo, num_contexts=cfg.num_contexts, seed=1000 * s + TASKS.index(task),
                        tags=SYNTHWORLD_TAGS)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      np.save(path, a.values)
      adapters[task, s] = a.values
      runs["adapters"][f"{task}_{s}"] = {"pairs": a.stats["pairs"], "norm": float(np.linalg.norm(a.values)),
                                         "seconds": round(time.perf_counter() - tic, 1)}
      atomic_write_json(runs_path, runs)
      print(f"adapter {task} seed {s}: {a.stats['pairs']} pairs, {time.perf_counter() - tic:.0f} s", flush=True)

  for k in range(args.streams):
    seed = 1000 + k
    stream = sw.generate(seed, world)
    questions = sw.make_tasks(stream, seed=seed)
    for task in TASKS:
      if not questions.get(task):
        continue
      jobs = [(0.0, 0)] + [(scale, s) for scale in SCALES[1:] for s in range(args.adapter_seeds)]
      for scale, s in jobs:
        key = f"{seed}/{task}/{scale}/{s}"
        if key in runs["scores"]:
          continue
        memory = memorise(model, processor, stream, rollout, steer=adapters[task, s] * scale, hint=hints[task])
        _, scores = evaluate_memory(stream, memory, {task: questions[task]}, answer)
        runs["scores"][key] = scores["overall"]
        atomic_write_json(runs_path, runs)
    print(f"stream {seed} done", flush=True)

  # Per task and scale: one Acc per stream (adapter seeds averaged), then intervals over streams.
  lines = ["| task | streams | questions | hint only (x0) Acc | x1 Acc | x1.5 Acc | x1.5 - x1 | x1 - x0 |",
           "|---|---:|---:|---|---|---|---|---|"]
  summary = {}
  for task in TASKS:
    per_stream = {}
    for key, sc in runs["scores"].items():
      seed, t, scale, s = key.split("/")
      if t == task:
        per_stream.setdefault(seed, {}).setdefault(float(scale), []).append((sc["acc"], sc["n"]))
    seeds = sorted(k for k, v in per_stream.items() if all(x in v for x in SCALES))
    if not seeds:
      continue
    acc = {x: np.array([np.mean([a for a, _ in per_stream[k][x]]) for k in seeds]) for x in SCALES}
    n_q = sum(per_stream[k][0.0][0][1] for k in seeds)
    fmt = lambda m: f"{100 * m[0]:.1f} [{100 * m[1]:.1f}, {100 * m[2]:.1f}]"
    diff15, diff10 = bootstrap(acc[1.5] - acc[1.0]), bootstrap(acc[1.0] - acc[0.0])
    summary[task] = {"streams": len(seeds), "questions": int(n_q), **{f"x{x:g}": bootstrap(acc[x]) for x in SCALES},
                     "x1.5-x1": diff15, "x1-x0": diff10}
    lines.append(f"| {task} | {len(seeds)} | {n_q} | {fmt(bootstrap(acc[0.0]))} | {fmt(bootstrap(acc[1.0]))} | "
                 f"{fmt(bootstrap(acc[1.5]))} | {fmt(diff15)} | {fmt(diff10)} |")
  runs["summary"] = summary
  atomic_write_json(runs_path, runs)
  atomic_write_text(os.path.join(args.out, "post_scale.md"), "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
