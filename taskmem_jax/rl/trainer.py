"""The Phase-One training loop: B streams x G samples, judged, group-normalised, GSPO updates.

One step (taskmem-spec.md §2):
1. every stream shows its current window (previous memories from the teacher in the off-policy stage,
   from the policy's own history afterwards) and the policy samples G responses (sampling.generate, one
   prefill shared by the group);
2. each group is parsed and scored (rewards.score_group with the configured judge), advantages are
   group-normalised (rl.advantages);
3. old log-probs are recomputed with the current parameters (as verl does), and the groups are split into
   mini-batches, one AdamW update each;
4. the history takes the first parsed response of each group, the streams advance (rl.streams), and an
   orbax checkpoint holds params, optimizer state and the stream state: a killed run resumes exactly.

The loop always trains a population (rl/population.py): P = len(cfg.population) members that differ in
their reward settings, P = 1 when cfg.population is empty. Metrics go to workdir/metrics.jsonl (one line
per step and member), TensorBoard event files in workdir/tb, and charts in workdir/curves.html and
workdir/curves.png.

Several processes (jax.distributed): the job is data parallel over processes. "data" runs over them
(sharding.data_parallel_mesh) and each holds the policy sharded over its own devices; process k
samples, scores and differentiates streams k, k+n, ... on its local copy (distributed.local_view), the
gradient sums of each mini-batch are all-reduced before the one update every process applies, and the
streams' histories and the step's statistics are gathered, so every process keeps the same state and
process 0 writes the logs and the export. The result equals one process training all streams
(tests/test_multihost.py).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from taskmem_jax import distributed
from taskmem_jax.eval.curves import write_curves
from taskmem_jax.memory.prompt import WindowPrompt
from taskmem_jax.memory.memorise import sample_windows
from taskmem_jax.memory.sample import WindowSampling, sample_window
from taskmem_jax.rewards import RewardConfig, score_group
from taskmem_jax.rl import population as pop
from taskmem_jax.rl.advantages import group_advantages, nsr_gate_args
from taskmem_jax.rl.step import LossConfig, group_batch
from taskmem_jax.rl.streams import StreamSlots
from taskmem_jax.training import checkpoint as ckpt
from taskmem_jax.training.data import bucket_length
from taskmem_jax.training.optim import TrainState, add_trees, make_optimizer
from taskmem_jax.training.run_log import RunLog


def loss_config(cfg) -> LossConfig:
  return LossConfig(cfg.loss, float(cfg.clip_low), float(cfg.clip_high), cfg.aggregation, float(cfg.kl_coef),
                    float(cfg.temperature) if cfg.temperature > 0 else 1.0)


def reward_configs(cfg) -> list[RewardConfig]:
  """One RewardConfig per member: cfg.reward with each of cfg.population's overrides ([cfg.reward] if none)."""
  base = dict(cfg.reward)
  overrides = list(cfg.get("population", None) or [{}])
  return [RewardConfig.from_dict({**base, **dict(o)}) for o in overrides]


class Rollout:
  """What one member wrote for one stream's window: prompt ids, the window's video, G responses, scores."""

  def __init__(self, prompt_ids, pixels, grid, responses, parses, score):
    self.prompt_ids, self.pixels, self.grid = prompt_ids, pixels, grid
    self.responses, self.parses, self.score = responses, parses, score


def sample_groups(model, processor, items, previous, ctx_fns, cfg, judge, reward: RewardConfig, seed: int,
                  window_ids, tags=None, *, prompt: WindowPrompt) -> list[Rollout]:
  """Samples and scores G responses for each of B windows: window by window (sample_window, seed +
  window_ids[b]), or with cfg.batched_sampling in one batch (memory.memorise.sample_windows, keys of (seed,
  window_ids[b])). items[b]: window b's video item; previous[b]: the memories it shows; ctx_fns[b](previous) ->
  the judge's WindowContext; window b scores with default_rng(seed + window_ids[b]); prompt: the policy's window
  prompt."""
  sampling = WindowSampling(cfg.group_size, cfg.max_new_tokens, cfg.temperature, cfg.top_k or None, cfg.top_p or None,
                            cfg.thinking_budget or None, cfg.memory_budget or None)
  if cfg.get("batched_sampling", False):
    drawn = sample_windows(model, processor, items, previous, sampling, seed, prompt=prompt, window_ids=window_ids)
  else:
    drawn = [sample_window(model, processor, item, shown, sampling, (seed + int(b)) % (2**31), prompt=prompt)
             for item, shown, b in zip(items, previous, window_ids)]
  rollouts = []
  for samples, shown, ctx_fn, b in zip(drawn, previous, ctx_fns, window_ids):
    score = score_group(samples.parses, ctx_fn(shown), judge, reward, tags,
                        rng=np.random.default_rng((seed + int(b)) % (2**31)))
    rollouts.append(Rollout(samples.prompt_ids, samples.pixels, samples.grid, samples.responses, samples.parses, score))
  return rollouts


_SCORE_FIELDS = ("reward", "format", "quality", "richness", "thinking", "passed", "status", "faithful",
                 "non_redundant", "memory_tokens", "think_tokens")


def score_arrays(rollouts: list[Rollout]) -> dict[str, np.ndarray]:
  """One member's groups of a step as arrays: each score field [B, G], response lengths [B, G] and
  group_failed [B] (what step_metrics needs; fixed shapes, so processes can gather them)."""
  out = {name: np.stack([np.asarray(getattr(r.score, name), np.float64) for r in rollouts]) for name in _SCORE_FIELDS}
  out["response_tokens"] = np.array([[len(t) for t in r.responses] for r in rollouts], np.float64)
  out["group_failed"] = np.array([float(r.score.group_failed) for r in rollouts])
  return out


def step_metrics(rollouts: list[Rollout] | dict, advantages: np.ndarray) -> dict:
  """Means over one member's responses of a step: every reward component and quality statistic.
  rollouts: the member's Rollouts, or their score_arrays."""
  arrays = rollouts if isinstance(rollouts, dict) else score_arrays(rollouts)
  cat = lambda name: arrays[name].reshape(-1)
  status = cat("status")
  parsed = status == 0
  mem, think = cat("memory_tokens"), cat("think_tokens")
  nanmean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
  return {
      "reward": float(cat("reward").mean()), "reward/format": float(cat("format").mean()),
      "reward/quality": float(cat("quality").mean()), "reward/richness": float(cat("richness").mean()),
      "reward/thinking": float(cat("thinking").mean()), "pass_rate": float(cat("passed").mean()),
      "format_failure": float((status == 1).mean()), "judge_failure": float((status == 2).mean()),
      "faithfulness": nanmean(cat("faithful")), "redundancy": 1.0 - nanmean(cat("non_redundant")),
      "memory_tokens": float(mem[parsed].mean()) if parsed.any() else float("nan"),
      "think_tokens": float(think[think >= 0].mean()) if (think >= 0).any() else float("nan"),
      "response_tokens": float(cat("response_tokens").mean()),
      "advantage_abs": float(np.abs(advantages).mean()), "groups_failed": float(arrays["group_failed"].sum()),
  }


def _member_batches(model_config, rollouts_by_member, b: int, pad_id: int, buckets):
  """Slot b's group of every member, padded to one common length and stacked: a GroupBatch with [P, ...]."""
  rs = [rollouts[b] for rollouts in rollouts_by_member]
  longest = max(len(r.prompt_ids) + max(len(x) for x in r.responses) for r in rs)
  length = bucket_length(longest, tuple(buckets))
  return pop.stack([group_batch(model_config, r.prompt_ids, r.responses, r.pixels, r.grid, pad_id, length)
                    for r in rs])


class _Job:
  """What a run fixes before its first step: the members' rewards, the loss, the judge and window prompt, the
  model's static parts, the placement (mesh, this process's view of it) and this process's streams."""

  def __init__(self, cfg, model, processor, judge, prompt: WindowPrompt, tags):
    self.cfg, self.processor, self.judge, self.prompt, self.tags = cfg, processor, judge, prompt, tags
    self.rewards = reward_configs(cfg)
    self.size = len(self.rewards)
    self.loss_cfg = loss_config(cfg)
    self.optimizer = make_optimizer(cfg)
    self.model_config = model.config
    self.graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mesh_cfg = dict(cfg.get("mesh", None) or {})
    self.mesh, self.preset = pop.make_mesh(self.size, mesh_cfg), pop.mesh_preset(mesh_cfg)
    self.multi = jax.process_count() > 1
    # This process's streams: all of them, or k, k+n, ... of n processes (strided, so that every mini-batch
    # of consecutive streams draws on every process).
    self.mine = distributed.process_batch(cfg.num_streams, mode="strided")
    self.here = distributed.local_mesh(self.mesh) if self.multi else self.mesh  # where this process's groups run
    self.rest = pop.shard(rest, None if self.mesh is None else
                          jax.tree.map(lambda _: NamedSharding(self.mesh, PartitionSpec()), rest))
    self.rest_here = distributed.local_view(self.rest, self.mesh) if self.multi else self.rest
    self.params = params  # the initial values, until init_state places them
    self.metric_keys = None  # the group-gradient metrics' names, for gathering them across processes

  def init_state(self) -> TrainState:
    """The P members' TrainStates, created in their shards. Params loaded straight into their shards
    (experiments.phase_one.load_policy) are never gathered."""
    def init(params):
      one = TrainState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params))
      return pop.stack([one] * self.size)

    self.sharding = pop.state_sharding(jax.eval_shape(init, self.params), self.mesh, self.preset)
    self.apply = pop.make_apply(self.optimizer, self.sharding)
    state = jax.jit(init, out_shardings=self.sharding)(self.params)
    del self.params
    return state

  def local(self, tree):
    """This process's view of a global tree (the tree itself on one process)."""
    return distributed.local_view(tree, self.mesh) if self.multi and tree is not None else tree


def collect(job: _Job, state: TrainState, slots: StreamSlots, source, step: int, off_policy: bool):
  """1. Every stream of this process shows its window to every member, which samples and scores G responses
  (sample_groups: window by window, or a member's windows in one batch with cfg.batched_sampling).
  Returns (rollouts [P][this process's streams], to_global [P][streams]: a window's local -> global face
  ids, or None)."""
  cfg = job.cfg
  params_here = job.local(state.params)
  rollouts = [[] for _ in range(job.size)]
  to_global = [[] for _ in range(job.size)]
  for p in range(job.size):
    items, shown, ctx_fns = [], [], []
    for b in job.mine:
      slot = slots.slots[b]
      memory = source.teacher(slot.video) if off_policy else slot.memories[p]
      previous, mapping = memory.previous(slot.clip), None
      if hasattr(source, "prepare"):  # real video: the history in this window's local face ids (map.json)
        item, previous, mapping = source.prepare(slot.video, slot.clip, previous)
      else:
        item = source.video_item(slot.video, slot.clip)
      items.append(item)
      shown.append(previous)
      ctx_fns.append(lambda previous, slot=slot, item=item: source.context(slot.video, slot.clip, previous, item))
      to_global[p].append(mapping)
    live = nnx.merge(job.graphdef, pop.member(params_here, p), job.rest_here)
    rollouts[p] = sample_groups(live, job.processor, items, shown, ctx_fns, cfg, job.judge, job.rewards[p],
                                seed=cfg.seed * 1_000_003 + step * 1009, window_ids=list(job.mine),
                                tags=job.tags, prompt=job.prompt)
  return rollouts, to_global


def score(job: _Job, rollouts) -> np.ndarray:
  """2. Group-normalised advantages [P, this process's streams, G] (the NSR gate as configured)."""
  cfg = job.cfg
  return np.stack([np.asarray(group_advantages(
      np.stack([r.score.reward for r in rs]), eps=cfg.eps, **nsr_gate_args(cfg.nsr_gate),
      parsed=np.stack([r.score.status == 0 for r in rs]),
      correctness=np.stack([r.score.correctness for r in rs]),
      group_failed=np.array([r.score.group_failed for r in rs]))) for rs in rollouts])


def update(job: _Job, state: TrainState, ref_params, rollouts, advantages: np.ndarray):
  """3. Old (and reference) log-probs under the current parameters, then one AdamW update per mini-batch of
  streams, its gradient sums all-reduced over processes. Returns (state, one metrics dict per update, each
  value [P])."""
  cfg, loss_cfg, graphdef, rest_here = job.cfg, job.loss_cfg, job.graphdef, job.rest_here
  params_here = job.local(state.params)
  batches = [_member_batches(job.model_config, rollouts, i, job.processor.pad_token_id, cfg.buckets)
             for i in range(len(job.mine))]
  batches = [pop.shard(gb, pop.batch_sharding(gb, job.here)) for gb in batches]
  ref_here = job.local(ref_params)
  old = [pop.log_probs(graphdef, params_here, rest_here, loss_cfg.temperature, gb.inputs) for gb in batches]
  ref = [pop.log_probs(graphdef, ref_here, rest_here, loss_cfg.temperature, gb.inputs) if ref_here is not None
         else None for gb in batches]
  update_metrics = []
  for group in np.array_split(np.arange(cfg.num_streams), cfg.num_minibatches):
    grad_sum, parts = None, []
    # The parameters as the previous mini-batch left them (an update donates the old buffers).
    params_here = job.local(state.params)
    for i in np.flatnonzero(np.isin(job.mine, group)):
      if not advantages[:, i].any() and not loss_cfg.kl_coef:
        continue  # zero advantages for every member: a zero gradient (still counted in the mean below)
      grads, m = pop.group_grads(graphdef, params_here, rest_here, loss_cfg, batches[i], old[i],
                                 jnp.asarray(advantages[:, i]), ref[i])
      grad_sum = grads if grad_sum is None else add_trees(grad_sum, grads)
      parts.append(m)
    if not job.multi:
      if grad_sum is None:
        continue
      state, grad_norm = job.apply(state, grad_sum, float(len(group)))
      update_metrics.append({**{k: jnp.mean(jnp.stack([m[k] for m in parts]), axis=0) for k in parts[0]},
                             "grad_norm": grad_norm})  # each [P]
      continue
    if not distributed.any_process(grad_sum is not None):
      continue
    if job.metric_keys is None:
      job.metric_keys = sorted(pop.group_grads.eval_shape(graphdef, params_here, rest_here, loss_cfg, batches[0],
                                                          old[0], jnp.asarray(advantages[:, 0]), ref[0])[1])
    if grad_sum is None:
      grad_sum = jax.tree.map(jnp.zeros_like, params_here)
    state, grad_norm = job.apply(state, distributed.sum_over_processes(grad_sum, job.mesh, job.sharding.params),
                                 float(len(group)))
    # The groups' metrics, meaned over every process's trained groups: sums and counts gathered.
    sums = np.array([np.sum([np.asarray(m[k]) for m in parts], axis=0) if parts else np.zeros(job.size)
                     for k in job.metric_keys])  # [K, P]
    gathered = distributed.allgather_rows(np.concatenate([sums, np.full((1, job.size), len(parts))])[None])
    total = gathered.sum(0)
    update_metrics.append({**{k: total[j] / total[-1] for j, k in enumerate(job.metric_keys)},
                           "grad_norm": distributed.local_view(grad_norm, job.mesh)})
  return state, update_metrics


def advance(job: _Job, slots: StreamSlots, source, step: int, off_policy: bool, rollouts, to_global,
            advantages: np.ndarray):
  """4. Each stream's history takes the teacher's memory (off-policy) or the member's first parsed response,
  in global face ids, and the streams move on. Every process needs every stream's history and statistics:
  they are gathered in global stream order. Returns (score arrays per member, advantages [P, B, G])."""
  size = job.size
  chosen = [[next((x.description for x in rollouts[p][i].parses if x.ok), None) for i in range(len(job.mine))]
            for p in range(size)]
  chosen = [[c if c is None or g is None else g(c) for c, g in zip(chosen[p], to_global[p])] for p in range(size)]
  arrays = [score_arrays(rollouts[p]) for p in range(size)]
  if job.multi:
    chosen = [distributed.allgather_strings(c, mode="strided") for c in chosen]
    arrays = [{k: distributed.allgather_rows(v, mode="strided") for k, v in a.items()} for a in arrays]
    advantages = np.stack([distributed.allgather_rows(a, mode="strided") for a in advantages])
  for b, slot in enumerate(slots.slots):
    for p in range(size):
      if off_policy:
        teacher = source.teacher(slot.video)
        if slot.clip in teacher:
          slot.memories[p].add(slot.clip, teacher.get(slot.clip))
      elif chosen[p][b] is not None:
        slot.memories[p].add(slot.clip, chosen[p][b])
  slots.advance(step)
  return arrays, advantages


def train(cfg, model, processor, source, judge, *, prompt: WindowPrompt, tags=None, progress: bool = True,
          stop_at: int | None = None, on_step=None) -> dict:
  """Phase-One training for cfg.steps steps from cfg.workdir (resuming its latest checkpoint).

  source: a stream source (rl.streams.SynthWorldSource or one with the same methods). judge: a
  rewards.Judge. prompt: the policy's window prompt (memory.prompt.read_window_prompt). stop_at: end after
  this step, as a preemption would. on_step(step, metrics, rollouts): a hook. At the last step the policy
  is exported in HF format to cfg.export_dir (default workdir/export; member k of a population to
  .../member_k). Returns {"model" (P = 1) or "models", "history": per-step metrics (with "member" when
  P > 1), "resumed_from"}. The model's arrays are donated: use the returned ones.
  """
  job = _Job(cfg, model, processor, judge, prompt, tags)
  size = job.size
  state = job.init_state()
  ref_params = jax.tree.map(jnp.copy, state.params) if job.loss_cfg.kl_coef else None
  slots = StreamSlots(cfg.num_streams, source.num_clips, n_min=cfg.n_min, n_max=cfg.n_max,
                      p_resample=cfg.p_resample, seed=cfg.seed, members=size,
                      start_clip=getattr(source, "start_clip", None))
  primary = jax.process_index() == 0  # one writer of the logs and the export; orbax saves collectively
  os.makedirs(cfg.workdir, exist_ok=True)
  manager = ckpt.make_manager(os.path.join(cfg.workdir, "checkpoints"), keep=cfg.keep_checkpoints,
                              save_every=cfg.save_every)
  resumed_from = manager.latest_step()
  start = 0
  if resumed_from is not None:
    state, data = ckpt.restore(manager, state, resumed_from)
    state = pop.shard(state, job.sharding)
    slots.restore(data["slots"])
    start = int(data["step"])
  log = RunLog(cfg.workdir, desc="phase one", total=cfg.steps, start=start, progress=progress)
  history = log.earlier

  end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
  for step in range(start, end):
    tic = time.perf_counter()
    off_policy = step < cfg.off_policy_steps
    rollouts, to_global = collect(job, state, slots, source, step, off_policy)
    advantages = score(job, rollouts)
    sample_s = time.perf_counter() - tic
    state, update_metrics = update(job, state, ref_params, rollouts, advantages)
    arrays, adv_all = advance(job, slots, source, step, off_policy, rollouts, to_global, advantages)

    last_update = jax.device_get(update_metrics[-1]) if update_metrics else {}
    step_s = time.perf_counter() - tic
    for p in range(size):
      metrics = {"step": step + 1, **({"member": p} if size > 1 else {}),
                 "stage": "off_policy" if off_policy else "on_policy", **step_metrics(arrays[p], adv_all[p]),
                 **{k: float(v[p]) for k, v in last_update.items()}, "updates": len(update_metrics),
                 "sample_s": sample_s, "step_s": step_s}
      history.append(metrics)
      log.write([metrics], tag_prefix=f"member_{p}/" if size > 1 else "")
    ckpt.save(manager, step + 1, state, {"step": step + 1, "slots": slots.state()}, force=step + 1 == end)
    if on_step is not None:
      on_step(step + 1, history[-size:], rollouts)
    log.bar.set_postfix(reward=f"{history[-size]['reward']:.3f}", faithful=f"{history[-size]['faithfulness']:.2f}")
    log.bar.update(1)
  log.close()
  series = {"policy": history} if size == 1 else {f"member {p}: {dict(o)}": [h for h in history if h["member"] == p]
                                                   for p, o in enumerate(cfg.population)}
  if primary:
    write_curves(os.path.join(cfg.workdir, "curves.html"), series, title=f"Phase One: {cfg.workdir}")
  manager.wait_until_finished()
  manager.close()
  params_here = job.local(state.params)
  models = [nnx.merge(job.graphdef, pop.member(params_here, p), job.rest_here) for p in range(size)]
  if end == cfg.steps and primary:
    export = cfg.export_dir or os.path.join(cfg.workdir, "export")
    for p, trained in enumerate(models):
      ckpt.export_pretrained(trained, export if size == 1 else os.path.join(export, f"member_{p}"),
                             cfg.checkpoint or None)
  result = {"history": history, "resumed_from": resumed_from}
  return {**result, "model": models[0]} if size == 1 else {**result, "models": models}
