"""Phase Two on a SynthWorld stream end to end: adapters per task, before/after, cross-task, drift, dropped
facts, the ceiling of task focus (envs/synthworld/ceiling.py); tables for the terminal, a matplotlib figure for
the report, and the DPO curves of every adapter as TensorBoard events. experiments/phase_two.py and the
demo both call `run`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from taskmem_jax import distributed
from taskmem_jax import sharding as shd
from taskmem_jax.adapters import steer as steer_lib
from taskmem_jax.envs.synthworld.adapt import compare, drift, task_keys, world_benchmark, world_clips, world_preparer
from taskmem_jax.envs.synthworld.ceiling import focus_ceiling
from taskmem_jax.envs.synthworld.judge import GroundTruthJudge
from taskmem_jax.envs.synthworld.questions import TASKS
from taskmem_jax.envs.synthworld.reader import answer
from taskmem_jax.envs.synthworld.source import SynthWorldSource
from taskmem_jax.envs.synthworld.task_judge import SynthWorldTaskJudge
from taskmem_jax.eval.plots import pyplot, save_figure
from taskmem_jax.eval.streaming import StreamingConfig, StreamingEvaluation
from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.phase_two.adapt import train_adapter
from taskmem_jax.phase_two.mining import CacheConfig
from taskmem_jax.phase_two.online import adapt_benchmark
from taskmem_jax.rewards import SYNTHWORLD_TAGS, RewardConfig
from taskmem_jax.tensorboard import SummaryWriter


def task_names(cfg) -> tuple[str, ...]:
  """The task types cfg.tasks names (comma-separated; "" = every task type)."""
  return tuple(t for t in cfg.tasks.split(",") if t) or TASKS


def run(cfg, model, processor, world, tasks: dict, *, prompt: WindowPrompt, workdir: str, progress=None) -> dict:
  """cfg: taskmem_jax/configs/phase_two_synthworld.py. world: the evaluation stream (sw.World); tasks: task ->
  its questions (arrival order). prompt: the policy's window prompt (memory.prompt.read_window_prompt).
  workdir: the evaluation's memories (memories/<tag>/) and adapters (adapters/<task>@<N>.safetensors, .json),
  saved as they are made; a rerun in the same workdir continues from them."""
  steer_lib.add_steer(model, tuple(cfg.steer_layers) or None)
  source = SynthWorldSource(dataclasses.replace(world.config, num_clips=cfg.train_clips),
                            seed_base=cfg.train_seed_base,
                            teacher_budget=cfg.teacher_budget)
  reward = RewardConfig(memory_token_threshold=cfg.reward_memory_threshold)
  cache_cfg = CacheConfig(**dict(cfg.cache))
  quality, task_judge = GroundTruthJudge(cfg.get("judge_scope", "window")), SynthWorldTaskJudge()

  # Several processes: each works on its own copy (local_model); only the adapters' training is split.
  mesh, preset = shd.mesh_from_config(cfg.get("mesh", None), per_process=True)
  model = distributed.local_model(model, mesh)
  if jax.process_index():  # every process writes the same memories; each into its own folder, never racing
    workdir = os.path.join(workdir, f"process_{jax.process_index()}")
  # Memory writing is greedy (the demo's), as the Phase-One table's.
  evaluation = StreamingEvaluation(world_benchmark(world, tasks), workdir, (model, processor, prompt), answer,
                                   cfg=StreamingConfig(max_new_tokens=cfg.max_new_tokens), deploy="causal",
                                   preparer=world_preparer(world), clips=world_clips(world))
  positions = tuple(cfg.update_positions)
  evaluation.adapters = adapt_benchmark(evaluation, quality, task_judge, reward, cache_cfg, cfg.dpo,
                                        update_positions=positions, num_contexts=cfg.num_contexts,
                                        seed=cfg.cache.seed, tasks=list(tasks), source=source, mesh=mesh,
                                        preset=preset, progress=progress)
  out = compare(evaluation, world, tasks, answer, positions)
  adapters = {t: [evaluation.adapters[k] for k in task_keys(evaluation, t)] for t in out["memories"]}
  results = {"phase_two": out["phase_two"], "cross_task": out["cross_task"], "fact_mentions": out["fact_mentions"],
             "steer_layers": list(steer_lib.steer_layers(model))}
  if adapters:  # the teacher at the policy's budget (cfg.teacher_budget), random vs focused on the hint
    results["ceiling"] = focus_ceiling(world, {t: out["late_questions"][t] for t in adapters},
                                       {t: a[0].hint for t, a in adapters.items()},
                                       budget_tokens=cfg.teacher_budget, seeds=cfg.get("ceiling_seeds", 8))
  a, b = cfg.drift_from, cfg.drift_to
  if a in adapters and b in tasks and len(tasks[b]) > max(cfg.drift_ks):
    seeds = iter(range(cfg.cache.seed * 1000 + len(evaluation.adapters), 1 << 30))  # after adapt_benchmark's

    def train(task, hint):
      return train_adapter(model, processor, task, hint, source, quality, task_judge, reward, cache_cfg, cfg.dpo,
                           num_contexts=cfg.num_contexts, seed=next(seeds), tags=SYNTHWORLD_TAGS, mesh=mesh,
                           preset=preset, prompt=prompt)

    results["drift"] = drift(evaluation, world, adapters[a][-1], b, tasks[b], answer, train, ks=tuple(cfg.drift_ks))
  results["_memories"] = out["memories"]
  results["_adapters"] = adapters
  return results


def format_tables(results: dict) -> str:
  """Markdown: per-task before/after, the cross-task matrix, fact mentions, and the drift table."""
  lines = ["Phase One vs Phase One + Two (questions after the adapter took over)", "",
           "| Task | n | P1 Acc | P1 Cov | P1 Prec | P2 Acc | P2 Cov | P2 Prec | pairs |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for task, r in results["phase_two"].items():
    b, a = r["before"], r["after"]
    pairs = "/".join(str(x["pairs"]) for x in r["adapters"])
    lines.append(f"| {task} | {b['n']} | {100 * b['acc']:.1f} | {100 * b['cov']:.1f} | {100 * b['prec']:.1f} | "
                 f"{100 * a['acc']:.1f} | {100 * a['cov']:.1f} | {100 * a['prec']:.1f} | {pairs} |")
  cross = results["cross_task"]
  if cross:
    tasks = list(cross)
    lines += ["", "Cross-task Acc (row: adapter of task i, column: questions of task j)", "",
              "| adapter \\ task | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for i in tasks:
      lines.append(f"| {i} | " + " | ".join(f"{100 * cross[i][j]:.1f}" for j in tasks) + " |")
    diag = np.mean([cross[t][t] for t in tasks])
    off = [cross[i][j] for i in tasks for j in tasks if i != j]
    lines.append(f"\ndiagonal mean {100 * diag:.1f}, off-diagonal mean {100 * np.mean(off) if off else float('nan'):.1f}")
  mentions = results["fact_mentions"]
  if mentions:
    kinds = list(next(iter(mentions.values())))
    lines += ["", "Facts stated per memory, by kind (adapted clips)", "",
              "| memory | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for who, rates in mentions.items():
      lines.append(f"| {who} | " + " | ".join(f"{rates[k]:.2f}" for k in kinds) + " |")
  ceiling = results.get("ceiling")
  if ceiling:
    first = next(iter(ceiling.values()))
    lines += ["", f"Ceiling of task focus: teacher memories (every fact right, budget {first['budget']} tokens, "
              f"{first['seeds']} seeds), facts drawn at random vs the hint's needed facts first", "",
              "| Task | random Acc | focused Acc | ceiling gain | Phase Two gain |", "|---|---:|---:|---:|---:|"]
    for task, c in ceiling.items():
      r = results["phase_two"][task]
      lines.append(f"| {task} | {100 * c['random']:.1f} | {100 * c['focused']:.1f} | {100 * c['gain']:+.1f} | "
                   f"{100 * (r['after']['acc'] - r['before']['acc']):+.1f} |")
  d = results.get("drift")
  if d:
    lines += ["", f"Drift: the task switches from {d['from']} to {d['to']} ({d['questions_scored']} questions "
              f"scored; Phase One Acc {100 * d['phase_one']:.1f})", "",
              "| new-task questions seen | new adapter Acc | stale adapter Acc |", "|---:|---:|---:|"]
    for k, n, s in zip(d["k"], d["new"], d["stale"]):
      lines.append(f"| {k} | {100 * n:.1f} | {100 * s:.1f} |")
    lines.append(f"\nrecovered (as accurate as with {d['k'][-1]} questions) after {d['recovered_at']} question(s)")
  return "\n".join(lines)


def plot(results: dict, path: str) -> str:
  """A PNG with four panels: per-task Acc before/after, the cross-task matrix, drift, and each task's Phase-Two
  gain beside the ceiling of task focus; returns the path."""
  fig, axes = pyplot().subplots(1, 4, figsize=(20, 4.8))
  tasks = list(results["phase_two"])
  x = np.arange(len(tasks))
  before = [100 * results["phase_two"][t]["before"]["acc"] for t in tasks]
  after = [100 * results["phase_two"][t]["after"]["acc"] for t in tasks]
  axes[0].bar(x - 0.2, before, 0.4, label="Phase One")
  axes[0].bar(x + 0.2, after, 0.4, label="Phase One + Two")
  axes[0].set_xticks(x, tasks, rotation=30)
  axes[0].set_ylabel("Acc (%)")
  axes[0].legend()
  axes[0].set_title("Per task, later questions")
  cross = results["cross_task"]
  if cross:
    m = np.array([[100 * cross[i][j] for j in cross] for i in cross])
    im = axes[1].imshow(m, cmap="viridis")
    axes[1].set_xticks(range(len(cross)), list(cross), rotation=30)
    axes[1].set_yticks(range(len(cross)), list(cross))
    axes[1].set_xlabel("questions of task")
    axes[1].set_ylabel("adapter of task")
    fig.colorbar(im, ax=axes[1], label="Acc (%)")
  axes[1].set_title("Cross-task")
  d = results.get("drift")
  if d:
    axes[2].plot(d["k"], [100 * a for a in d["new"]], "o-", label=f"new adapter ({d['to']})")
    axes[2].plot(d["k"], [100 * a for a in d["stale"]], "s--", label=f"stale adapter ({d['from']})")
    axes[2].axhline(100 * d["phase_one"], color="grey", ls=":", label="Phase One")
    axes[2].set_xlabel("new-task questions seen")
    axes[2].set_ylabel("Acc (%)")
    axes[2].legend()
  axes[2].set_title("Task switch")
  ceiling = results.get("ceiling")
  if ceiling:
    names = list(ceiling)
    gains = [100 * (results["phase_two"][t]["after"]["acc"] - results["phase_two"][t]["before"]["acc"]) for t in names]
    xs = np.arange(len(names))
    axes[3].bar(xs - 0.2, gains, 0.4, label="Phase Two (policy)")
    axes[3].bar(xs + 0.2, [100 * ceiling[t]["gain"] for t in names], 0.4, label="ceiling (teacher, focused)")
    axes[3].axhline(0, color="black", lw=0.8)
    axes[3].set_xticks(xs, names, rotation=30)
    axes[3].set_ylabel("Acc gain (points)")
    axes[3].legend()
  axes[3].set_title("Gain from task focus")
  fig.tight_layout()
  return save_figure(fig, path)


def write_dpo_events(results: dict, logdir: str) -> str:
  """The DPO history of every task's adapters (run's results["_adapters"]) as TensorBoard scalars in logdir:
  tags dpo/<task>/<metric> (loss, delta, accuracy, grad_norm, steer_norm, ...) against the DPO step, and
  dpo/<task>/update_<k>/<metric> when a task's adapter was retrained (several update positions). Written
  after the run: train_steer keeps no log of its own here. Returns logdir."""
  writer = SummaryWriter(logdir)
  try:
    for task, adapters in results["_adapters"].items():
      for k, adapter in enumerate(adapters):
        prefix = f"dpo/{task}" + (f"/update_{k}" if len(adapters) > 1 else "")
        for row in adapter.stats.get("history", []):
          writer.scalars(row["step"], {f"{prefix}/{key}": v for key, v in row.items() if key != "step"})
  finally:
    writer.close()
  return logdir


def public(results: dict) -> dict:
  """The JSON-able part of run()'s results (no memories or adapter arrays)."""
  return {k: v for k, v in results.items() if not k.startswith("_")}
