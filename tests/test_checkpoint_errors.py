"""from_pretrained / save_pretrained on good and bad checkpoint directories.

Every bad checkpoint must raise CheckpointError, FileNotFoundError or ConfigError with a message that
names the problem (file, key, shapes), and report all offending keys at once. The good cases:
sharded saves that both we and transformers reload, and MoE experts in the Hub layout (§6).
"""

import json
import os
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from flax import traverse_util
from safetensors.torch import load_file, save_file

import hf_fixtures as fx
from taskmem_jax.models.qwen3_vl import CheckpointError, ConfigError, from_pretrained, save_pretrained

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
Q_PROJ = "model.language_model.layers.0.self_attn.q_proj.weight"  # [nH*hd, H] = [128, 96]
GATE_UP = "model.language_model.layers.0.mlp.experts.gate_up_proj"  # v5 [E, 2I, H] = [8, 80, 96]
DOWN = "model.language_model.layers.0.mlp.experts.down_proj"  # v5 [E, H, I] = [8, 96, 40]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  """{"moe"/"dense": (transformers model, its transformers-5 checkpoint dir)}."""
  out = {}
  for name in ("moe", "dense"):
    model = fx.hf_model(moe=name == "moe")
    path = tmp_path_factory.mktemp(f"ref_{name}")
    model.save_pretrained(path)
    out[name] = (model, path)
  return out


@pytest.fixture(scope="module")
def moe_ckpt(refs):
  return refs["moe"][1]


@pytest.fixture(scope="module")
def moe_loaded(moe_ckpt):
  return from_pretrained(moe_ckpt, dtype=jnp.float32)


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _rewrite(path, edit):
  """Applies edit(state_dict) -> state_dict to path/model.safetensors."""
  file = os.path.join(path, WEIGHTS)
  save_file(edit(load_file(file)), file, metadata={"format": "pt"})


def _params(model) -> dict:
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return {k: np.asarray(v) for k, v in flat.items()}


def _assert_bit_identical(a, b):
  pa, pb = _params(a), _params(b)
  assert pa.keys() == pb.keys()
  for k in pa:
    assert pa[k].dtype == pb[k].dtype and pa[k].shape == pb[k].shape, k
    assert np.array_equal(pa[k], pb[k]), k


def _load_error(path, exc=CheckpointError, match=None) -> str:
  with pytest.raises(exc, match=match) as info:
    from_pretrained(path, dtype=jnp.float32)
  return str(info.value)


# --- missing pieces ------------------------------------------------------------------------------

def test_directory_missing(tmp_path):
  path = tmp_path / "no_such_checkpoint"
  message = _load_error(path, FileNotFoundError, "checkpoint directory not found")
  assert str(path) in message


def test_config_missing(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  os.remove(path / "config.json")
  message = _load_error(path, FileNotFoundError, "config file not found")
  assert str(path / "config.json") in message


def test_config_invalid(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  (path / "config.json").write_text('{"model_type": "qwen3_vl_moe", ')
  message = _load_error(path, ConfigError, "not valid JSON")
  assert str(path / "config.json") in message


def test_config_unsupported(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  cfg = json.loads((path / "config.json").read_text())
  cfg["model_type"] = "llama"
  (path / "config.json").write_text(json.dumps(cfg))
  message = _load_error(path, ConfigError, "model_type='llama'")
  assert str(path / "config.json") in message


def test_no_weights(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  os.remove(path / WEIGHTS)
  message = _load_error(path, CheckpointError, "no model.safetensors")
  assert INDEX in message and str(path) in message


# --- keys and shapes ------------------------------------------------------------------------------

def test_missing_keys_all_listed(moe_ckpt, tmp_path):
  gone = ["model.visual.blocks.1.attn.qkv.weight", "model.language_model.layers.2.self_attn.k_proj.weight"]
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  _rewrite(path, lambda sd: {k: v for k, v in sd.items() if k not in gone})
  message = _load_error(path, CheckpointError, "2 missing keys")
  for key in gone:
    assert key in message
  assert "unknown" not in message and "shape mismatch" not in message
  assert str(path) in message


def test_missing_lm_head_when_untied(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  _rewrite(path, lambda sd: {k: v for k, v in sd.items() if k != "lm_head.weight"})
  message = _load_error(path, CheckpointError, "1 missing keys")
  assert "lm_head.weight" in message


def test_unknown_keys_all_listed(moe_ckpt, tmp_path):
  extra = {"model.visual.blocks.0.attn.extra_bias": torch.zeros(3),
           "model.language_model.layers.9.mlp.gate_proj.weight": torch.zeros(4, 2)}
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  _rewrite(path, lambda sd: {**sd, **extra})
  message = _load_error(path, CheckpointError, "2 unknown keys")
  for key in extra:
    assert key in message
  assert "missing" not in message


@pytest.mark.parametrize("bad_shape", [(96, 128), (127, 96)], ids=["transposed", "truncated"])
def test_wrong_shape(moe_ckpt, tmp_path, bad_shape):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  _rewrite(path, lambda sd: {**sd, Q_PROJ: torch.zeros(bad_shape)})
  message = _load_error(path, CheckpointError, re.escape(f"shape mismatch for {Q_PROJ}"))
  assert "expected [128, 96]" in message
  assert f"found {list(bad_shape)}" in message
  assert WEIGHTS in message


def test_wrong_expert_shape_names_both_layouts(moe_ckpt, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  _rewrite(path, lambda sd: {**sd, GATE_UP: torch.zeros(8, 80, 95)})
  message = _load_error(path, CheckpointError, re.escape(f"shape mismatch for {GATE_UP}"))
  assert "[8, 80, 96]" in message and "[8, 96, 80]" in message  # v5 and Hub layouts
  assert "found [8, 80, 95]" in message


def test_all_problems_reported_at_once(moe_ckpt, tmp_path):
  gone, extra = "model.visual.merger.norm.bias", "model.language_model.layers.0.mlp.experts.bias"
  path = _copy(moe_ckpt, tmp_path / "ckpt")

  def edit(sd):
    sd = {k: v for k, v in sd.items() if k != gone}
    sd[extra] = torch.zeros(2)
    sd[Q_PROJ] = sd[Q_PROJ].T.contiguous()
    return sd

  _rewrite(path, edit)
  message = _load_error(path, CheckpointError)
  assert "1 missing keys" in message and gone in message
  assert "1 unknown keys" in message and extra in message
  assert f"shape mismatch for {Q_PROJ}" in message and "found [96, 128]" in message


# --- corrupt files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("corruption", ["truncated", "garbage", "empty", "bad_header"])
def test_corrupt_safetensors(moe_ckpt, tmp_path, corruption):
  path = _copy(moe_ckpt, tmp_path / "ckpt")
  file = path / WEIGHTS
  data = file.read_bytes()
  if corruption == "truncated":
    file.write_bytes(data[: len(data) // 2])
  elif corruption == "garbage":
    file.write_bytes(np.random.default_rng(0).bytes(4096))
  elif corruption == "empty":
    file.write_bytes(b"")
  else:  # a plausible header length followed by non-JSON
    file.write_bytes((64).to_bytes(8, "little") + b"x" * 64 + data[8 + 64:])
  message = _load_error(path, CheckpointError, "not a readable safetensors file")
  assert str(file) in message


# --- sharded checkpoints -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moe_sharded(moe_loaded, tmp_path_factory):
  path = tmp_path_factory.mktemp("moe_sharded")
  save_pretrained(moe_loaded, path, max_shard_bytes=200_000)
  return path


def _shards(path):
  return sorted(f for f in os.listdir(path) if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f))


@pytest.mark.parametrize("kind", ["moe", "dense"])
def test_sharded_save_reloads(refs, tmp_path, kind):
  ref, ckpt = refs[kind]
  ours = from_pretrained(ckpt, dtype=jnp.float32)
  path = tmp_path / "sharded"
  save_pretrained(ours, path, max_shard_bytes=200_000)

  shards = _shards(path)
  n = len(shards)
  assert n > 1
  assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
  assert (path / INDEX).is_file() and not (path / WEIGHTS).exists()
  assert (path / "config.json").is_file()
  index = json.loads((path / INDEX).read_text())
  assert set(index["weight_map"].values()) == set(shards)
  assert set(index["weight_map"]) == set(ref.state_dict())
  assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in ref.state_dict().values())
  # every shard but the last stays within the limit unless it holds a single tensor
  for shard in shards:
    tensors = load_file(path / shard)
    size = sum(v.numel() * v.element_size() for v in tensors.values())
    assert size <= 200_000 or len(tensors) == 1, shard

  _assert_bit_identical(from_pretrained(path, dtype=jnp.float32), ours)

  # transformers loads the sharded save, all keys present, bit-identical to the original.
  hf, info = type(ref).from_pretrained(path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info.get("mismatched_keys")
  ref_sd, hf_sd = ref.state_dict(), hf.state_dict()
  assert ref_sd.keys() == hf_sd.keys()
  for k in ref_sd:
    assert torch.equal(ref_sd[k], hf_sd[k]), k


def test_save_single_file_replaces_stale_index(moe_loaded, moe_sharded, tmp_path):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  save_pretrained(moe_loaded, path)  # one file now
  assert (path / WEIGHTS).is_file() and not (path / INDEX).exists()
  _assert_bit_identical(from_pretrained(path, dtype=jnp.float32), moe_loaded)


def test_sharded_missing_shard(moe_sharded, tmp_path):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  victim = _shards(path)[2]
  os.remove(path / victim)
  message = _load_error(path, CheckpointError, "shard files that do not exist")
  assert victim in message and INDEX in message


def test_sharded_index_names_unknown_file(moe_sharded, tmp_path):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  index = json.loads((path / INDEX).read_text())
  index["weight_map"][Q_PROJ] = "model-99999-of-99999.safetensors"
  (path / INDEX).write_text(json.dumps(index))
  message = _load_error(path, CheckpointError, "shard files that do not exist")
  assert "model-99999-of-99999.safetensors" in message


@pytest.mark.parametrize("text", ["{not json", '{"metadata": {}}', "[]", '{"weight_map": ["a"]}',
                                  '{"weight_map": {"a": 1}}'],
                         ids=["syntax", "no_weight_map", "list", "map_is_list", "file_not_str"])
def test_sharded_malformed_index(moe_sharded, tmp_path, text):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  (path / INDEX).write_text(text)
  message = _load_error(path, CheckpointError, "malformed index|'weight_map' must map")
  assert str(path / INDEX) in message


def test_sharded_corrupt_shard(moe_sharded, tmp_path):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  victim = path / _shards(path)[1]
  victim.write_bytes(victim.read_bytes()[:100])
  message = _load_error(path, CheckpointError, "not a readable safetensors file")
  assert str(victim) in message


def test_sharded_missing_key(moe_sharded, tmp_path):
  """A key the index lists but no shard holds is reported as missing."""
  path = _copy(moe_sharded, tmp_path / "ckpt")
  index = json.loads((path / INDEX).read_text())
  shard = path / index["weight_map"][Q_PROJ]
  tensors = load_file(shard)
  del tensors[Q_PROJ]
  save_file(tensors, shard, metadata={"format": "pt"})
  message = _load_error(path, CheckpointError, "1 missing keys")
  assert Q_PROJ in message


# --- MoE expert layouts ----------------------------------------------------------------------------

def test_hub_expert_layout_loads_bit_identical(moe_ckpt, moe_loaded, tmp_path):
  path = _copy(moe_ckpt, tmp_path / "hub")
  swapped = []

  def to_hub(sd):
    for k, v in list(sd.items()):
      if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
        sd[k] = v.transpose(-1, -2).contiguous()
        swapped.append(k)
    return sd

  _rewrite(path, to_hub)
  assert len(swapped) == 6  # layers 0-2 are MoE, layer 3 is in mlp_only_layers
  hub = load_file(path / WEIGHTS)
  assert tuple(hub[GATE_UP].shape) == (8, 96, 80)  # [E, H, 2I]
  assert tuple(hub[DOWN].shape) == (8, 40, 96)  # [E, I, H]
  _assert_bit_identical(from_pretrained(path, dtype=jnp.float32), moe_loaded)


def test_save_writes_v5_expert_layout(moe_ckpt, moe_sharded):
  """save_pretrained writes what transformers 5 writes: the original tensors, bit for bit."""
  original = load_file(moe_ckpt / WEIGHTS)
  saved = {}
  for shard in _shards(moe_sharded):
    saved.update(load_file(moe_sharded / shard))
  assert saved.keys() == original.keys()
  for k in original:
    assert torch.equal(saved[k], original[k]), k


def test_resharding_removes_stale_shards(moe_loaded, moe_sharded, tmp_path):
  path = _copy(moe_sharded, tmp_path / "ckpt")
  before = _shards(path)
  save_pretrained(moe_loaded, path, max_shard_bytes=4 * 1024**2)  # fewer, larger shards
  after = _shards(path)
  assert len(after) < len(before)
  weight_files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  assert weight_files == sorted(after)
  _assert_bit_identical(from_pretrained(path, dtype=jnp.float32), moe_loaded)


@pytest.mark.parametrize("moe_intermediate", [48, 96])  # 2I == H, then I == H: square expert tensors
def test_square_expert_tensors_round_trip(tmp_path, moe_intermediate):
  """Shapes cannot tell the layouts apart; like transformers 5, a square tensor is read in the
  transformers-5 layout, which is what both transformers and save_pretrained write."""
  import dataclasses
  from taskmem_jax.models.qwen3_vl import init_random, preset
  base = preset("tiny-moe")
  config = base.replace(text=dataclasses.replace(base.text, moe_intermediate_size=moe_intermediate))
  model = init_random(config, seed=3)
  save_pretrained(model, tmp_path)
  _assert_bit_identical(from_pretrained(tmp_path, dtype=jnp.float32), model)
