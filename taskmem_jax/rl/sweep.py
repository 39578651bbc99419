"""Reward-weight sweeps: a grid or a random search over config fields, expanded into runs, summarised.

A sweep spec is "field=v1,v2,...;field2=..." over dotted config fields (e.g. reward.usefulness_scale).
Values are parsed as numbers where they look like numbers. A random search draws `n` settings, each field
uniformly from its listed values, or uniformly from [lo, hi] when written "lo:hi".
Runs either go one after another, each in its own workdir (any config field may vary), or as one
population job (rl/population.py; only reward.* fields may vary, since the members share everything else).
"""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np

from taskmem_jax.io import atomic_write_json, atomic_write_text


class SweepError(ValueError):
  """A malformed sweep spec or a setting the config does not have."""


def _value(text: str):
  text = text.strip()
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  return text


def parse_spec(spec: str) -> dict[str, list]:
  """"a=1,2;b.c=0.1:0.5" -> {"a": [1, 2], "b.c": ["0.1:0.5"]} (ranges kept as text for `sample`)."""
  fields = {}
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    name, sep, values = part.partition("=")
    if not sep or not name.strip() or not values.strip():
      raise SweepError(f"sweep spec part {part!r}: expected field=value1,value2,...")
    items = [v.strip() for v in values.split(",") if v.strip()]
    fields[name.strip()] = [v if ":" in v else _value(v) for v in items]
  if not fields:
    raise SweepError(f"sweep spec {spec!r} names no field")
  return fields


def grid(fields: dict[str, list]) -> list[dict]:
  """Every combination, in the order the fields and values are listed."""
  for name, values in fields.items():
    if any(isinstance(v, str) and ":" in v for v in values):
      raise SweepError(f"{name}: a range lo:hi needs a random search (--random=N), not a grid")
  names = list(fields)
  return [dict(zip(names, combo)) for combo in itertools.product(*(fields[n] for n in names))]


def sample(fields: dict[str, list], n: int, seed: int = 0) -> list[dict]:
  """n random settings: each field uniform over its values, or over [lo, hi] for a "lo:hi" range."""
  rng = np.random.default_rng(seed)
  settings = []
  for _ in range(n):
    setting = {}
    for name, values in fields.items():
      value = values[int(rng.integers(len(values)))]
      if isinstance(value, str) and ":" in value:
        lo, hi = (float(x) for x in value.split(":"))
        value = float(rng.uniform(lo, hi))
      setting[name] = value
    settings.append(setting)
  return settings


def apply(cfg, setting: dict):
  """A copy of the ml_collections cfg with the dotted fields of `setting` replaced (each must exist)."""
  cfg = cfg.copy_and_resolve_references()
  for name, value in setting.items():
    parts = name.split(".")
    node = cfg
    for key in parts[:-1]:
      if key not in node:
        raise SweepError(f"sweep field {name!r}: the config has no {key!r}")
      node = node[key]
    if parts[-1] not in node:
      raise SweepError(f"sweep field {name!r}: the config has no {parts[-1]!r} (fields: {sorted(node.keys())})")
    old = node[parts[-1]]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[parts[-1]] = value
  return cfg


def population_overrides(settings: list[dict]) -> list[dict]:
  """Sweep settings -> cfg.population entries (RewardConfig overrides); only reward.* fields may vary."""
  overrides = []
  for setting in settings:
    other = [k for k in setting if not k.startswith("reward.")]
    if other:
      raise SweepError(f"population mode varies only reward.* fields; {other} would need separate runs")
    overrides.append({k.removeprefix("reward."): v for k, v in setting.items()})
  return overrides


SUMMARY_KEYS = ("reward", "pass_rate", "faithfulness", "redundancy", "format_failure", "memory_tokens",
                "reward/richness")


def final_metrics(history: list[dict], last: int = 3) -> dict:
  """Means of SUMMARY_KEYS over a run's last `last` steps (NaNs skipped)."""
  rows = history[-last:]
  out = {}
  for key in SUMMARY_KEYS:
    values = [r[key] for r in rows if key in r and r[key] is not None and not math.isnan(r[key])]
    out[key] = float(np.mean(values)) if values else float("nan")
  return out


def summarise(runs: list[dict], path_prefix: str) -> str:
  """Writes <prefix>.json and <prefix>.md (a markdown table, one row per run); returns the table."""
  keys = sorted({k for r in runs for k in r["setting"]})
  header = ["run", *keys, *SUMMARY_KEYS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in runs:
    cells = [r["name"], *(str(r["setting"].get(k, "")) for k in keys),
             *(f"{r['final'][k]:.3f}" for k in SUMMARY_KEYS)]
    lines.append("| " + " | ".join(cells) + " |")
  table = "\n".join(lines) + "\n"
  atomic_write_json(path_prefix + ".json", runs)
  atomic_write_text(path_prefix + ".md", table)
  return table


def read_history(workdir: str, member: int | None = None) -> list[dict]:
  """A run's metrics.jsonl lines (those of one member of a population when member is given)."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [r for r in rows if member is None or r.get("member") == member]
