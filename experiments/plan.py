"""Per-device memory plan (parameters, gradients, optimizer, KV cache, activations) for Phase One and
Phase Two; the arithmetic and its assumptions are in taskmem_jax/plan.py.

  python -m experiments.plan --preset=30B-A3B --target=tpu-v5p-32 --sharding=fsdp_tensor
  python -m experiments.plan --preset=30B-A3B --devices=8 --sharding=fsdp --batch=16 --seq=8192 --noremat
  python -m experiments.plan --preset=30B-A3B --target=8xH100 --vision_tokens=2500   # a 50-s window
  python -m experiments.plan --preset=30B-A3B --target=16xH100 --batch=16            # 2 hosts, a copy each
"""

from absl import flags

from taskmem_jax import cli
from taskmem_jax import plan as plan_lib
from taskmem_jax.models import qwen3_vl

_PRESET = flags.DEFINE_string("preset", "30B-A3B", "model preset (qwen3_vl.PRESETS)")
_TARGET = flags.DEFINE_string("target", None, f"named device set: {', '.join(sorted(plan_lib.TARGETS))}")
_DEVICES = flags.DEFINE_integer("devices", 8, "device count when no --target")
_PROCESSES = flags.DEFINE_integer("processes", None, "hosts (JAX processes) the devices belong to; default the "
                                  "target's host count, else 1. Phase One / Two are data parallel over them")
_MEMORY = flags.DEFINE_float("memory_gib", None, "memory per device (GiB); default the target's")
_SHARDING = flags.DEFINE_enum("sharding", "fsdp", ["single", "fsdp", "fsdp_tensor", "expert"], "mesh preset")
_TENSOR = flags.DEFINE_integer("tensor", None, "tensor-parallel size (fsdp_tensor)")
_EXPERT = flags.DEFINE_integer("expert", None, "expert-parallel size (expert)")
_BATCH = flags.DEFINE_integer("batch", 8, "global training rows per step")
_SEQ = flags.DEFINE_integer("seq", 4096, "tokens per training row")
_KV_BATCH = flags.DEFINE_integer("kv_batch", None, "sampler rows (KV cache); default --batch")
_KV_SEQ = flags.DEFINE_integer("kv_seq", None, "KV cache length; default --seq")
_REMAT = flags.DEFINE_bool("remat", True, "per-layer rematerialisation")
_FLASH = flags.DEFINE_bool("flash", True, "flash attention (no L x L probabilities kept)")
_STEER_LAYERS = flags.DEFINE_integer("steer_layers", 1, "Phase-Two steered layers")
_BYTES = flags.DEFINE_integer("bytes_per", 2, "bytes per weight / activation element (2 = bf16)")
_VISION = flags.DEFINE_integer("vision_tokens", 0, "merged vision tokens per row (part of --seq); their tower's "
                               "activations count in Phase One")


def main(argv):
  del argv
  devices, memory, per_host = plan_lib.target(_TARGET.value) if _TARGET.value else (_DEVICES.value, None, None)
  processes = _PROCESSES.value or (devices // per_host if per_host else 1)
  result = plan_lib.plan(qwen3_vl.preset(_PRESET.value), devices=devices, sharding=_SHARDING.value,
                         batch=_BATCH.value, seq=_SEQ.value, kv_batch=_KV_BATCH.value, kv_seq=_KV_SEQ.value,
                         remat=_REMAT.value, flash=_FLASH.value, steer_layers=_STEER_LAYERS.value,
                         bytes_per=_BYTES.value, tensor=_TENSOR.value, expert=_EXPERT.value,
                         memory_gib=_MEMORY.value or memory, preset_name=_PRESET.value,
                         vision_tokens=_VISION.value, processes=processes)
  print(plan_lib.format_table(result))


if __name__ == "__main__":
  cli.run(main)
