"""Ahead-of-time compilation for hardware this host does not have (experiments/aot.py, taskmem_jax/aot.py).

With libtpu (the test extra installs it) the real TPU compiler, Mosaic included, compiles the forward, a
Phase One update and a DPO step of the tiny models for a 4-chip v5e topology, with the Pallas kernels under
the fsdp and expert presets; the Mosaic kernel calls in the compiled module are counted, so an interpret-mode
fallback (plain XLA ops) cannot pass. For CUDA the same entries are lowered over 4 forced host devices
and their Triton kernel calls counted. Each case is one CLI run, so JAX starts with its own flags.

The TPU compiles are nearly all of the time, and part of it grows with depth: tiny runs cut to 3 decoder layers
(--num_layers; the fewest that hold its 3 DeepStack taps, and dpo_step's steer, at layer 1, has layers above
it for the backward). tiny-moe keeps its 4, the last a dense MLP (mlp_only_layers), so that the expert preset
compiles both kinds of layer.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRIES = "forward,phase_one_update,dpo_step"
LAYERS = {"tiny": 3, "tiny-moe": 4}


def _run(tmp_path, model, *flags, devices=1, entries=ENTRIES):
  out = tmp_path / "aot.jsonl"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "experiments.aot", "--seq_len=256", "--batch=4", f"--model={model}",
                         f"--num_layers={LAYERS[model]}", f"--entries={entries}", f"--json={out}", *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  rows = {r["entry"]: r for r in map(json.loads, out.read_text().splitlines())}
  assert sorted(rows) == sorted(entries.split(",")), rows
  return rows, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model,preset", [("tiny", "fsdp"), ("tiny-moe", "expert")])
def test_tpu_compile_with_kernels_under_a_mesh(tmp_path, model, preset):
  rows, stdout = _run(tmp_path, model, "--topology=v5e:2x2", f"--preset={preset}", "--attention=pallas")
  layers = LAYERS[model]
  for entry, row in rows.items():
    assert row["compiled"] and not row["error"], row
    assert row["fits"] and row["hbm_bytes"] == 16 * 1024**3, row
    assert row["arg_bytes"] > 0 and row["code_bytes"] > 0, row
    assert row["temp_bytes"] > 0 or entry == "forward", row  # a backward pass needs scratch
  # One Mosaic flash call per text layer and one per vision block's (absent here: text-only) forward;
  # the update adds the two backward kernels and the rematerialised forward of every layer.
  assert rows["forward"]["kernel_calls"] == layers, rows["forward"]
  assert rows["phase_one_update"]["kernel_calls"] == 4 * layers, rows["phase_one_update"]
  assert layers < rows["dpo_step"]["kernel_calls"] < 4 * layers, rows["dpo_step"]  # backward from the steer up
  assert "| forward | yes |" in stdout


@pytest.mark.slow
def test_tpu_compile_chunked_attention_has_no_kernels(tmp_path):
  # The forward alone: the attention implementation is chosen there, and the backward differentiates it.
  rows, _ = _run(tmp_path, "tiny", "--topology=v5e:2x2", "--preset=fsdp", "--attention=chunked", entries="forward")
  assert rows["forward"]["compiled"] and rows["forward"]["kernel_calls"] == 0, rows


@pytest.mark.slow
def test_cuda_lowering_counts_triton_kernels(tmp_path):
  rows, _ = _run(tmp_path, "tiny", "--platform=cuda", "--devices=4", "--preset=fsdp", devices=4)
  for row in rows.values():
    assert not row["compiled"] and row["error"].startswith("lowered only"), row
  assert rows["forward"]["kernel_calls"] == LAYERS["tiny"], rows["forward"]
  assert rows["phase_one_update"]["kernel_calls"] == 4 * LAYERS["tiny"], rows["phase_one_update"]


@pytest.mark.slow
def test_bad_topology_and_entry_are_named(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "experiments.aot", "--entries=forward,backward"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "unknown ['backward']" in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "experiments.aot", "--topology=v9z:2x2"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "unknown TPU generation 'v9z'" in proc.stderr


def test_extrapolate_in_depth():
  """Bytes linear in depth; dpo_step's temporaries by the layers above the steer (22 of 48, scaled); the
  update's donated outputs are not counted twice in fits."""
  from taskmem_jax import aot
  gib = 1024**3
  row = lambda entry, layers: aot.Row(entry, True, "", layers * gib, layers * gib, (10 + layers) * gib, 0,  # noqa: E731
                                      4 * layers, 110 * gib, True, 0.0)
  update = aot.extrapolate(row("phase_one_update", 3), row("phase_one_update", 6), 3, 6, 48)
  assert (update.arg_bytes, update.temp_bytes, update.kernel_calls) == (48 * gib, 58 * gib, 192)
  assert update.fits  # 48 + 58 <= 110: the outputs alias the arguments (48 + 48 + 58 would not fit)
  dpo = aot.extrapolate(row("dpo_step", 3), row("dpo_step", 6), 3, 6, 48)
  # above the steer: 3 - 1 = 2 layers, 6 - 3 = 3, 48 - 22 = 26; temp 13 -> 16 GiB: 3 GiB per layer above
  assert [aot.steer_layer_at(n) for n in (3, 6, 48)] == [1, 3, 22]
  assert dpo.temp_bytes == (13 + 3 * 24) * gib and dpo.arg_bytes == 48 * gib and not dpo.fits


def test_process_mesh_lays_out_a_copy_per_host():
  """--processes: "data" over the hosts, each host's chips laid out by the preset (the multi-host run's
  sharding.data_parallel_mesh), and AdamW moments over all chips (ZeRO-1)."""
  script = (
      "import jax\n"
      "from taskmem_jax import aot\n"
      "from taskmem_jax import sharding as shd\n"
      "devices = jax.devices()\n"
      "mesh = aot.process_mesh('fsdp_tensor', devices, 2)\n"
      "assert dict(mesh.shape) == {'data': 2, 'fsdp': 2, 'expert': 1, 'tensor': 2}, mesh.shape\n"
      "assert [d.id for d in mesh.devices[0].flat] == [0, 1, 2, 3], mesh.devices\n"
      "assert aot.process_mesh('fsdp', devices, 1).shape['data'] == 1\n"
      "rules = shd.zero_rules('fsdp_tensor')\n"
      "spec = shd.spec_for(('embed', 'heads'), (2048, 4096), mesh, rules)\n"
      "assert spec == jax.sharding.PartitionSpec(('fsdp', 'data'), 'tensor'), spec\n"
      "try:\n"
      "  aot.process_mesh('fsdp', devices, 3)\n"
      "except ValueError as e:\n"
      "  assert 'processes=3' in str(e)\n"
      "else:\n"
      "  raise AssertionError('no error')\n"
      "print('ok')\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
