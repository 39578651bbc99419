"""Qwen3VLConfig: both config.json spellings, tying, round trips, validation errors and the presets.

The reference configs are written by transformers itself (qwen3vl-arch.md §1.2); the 4.57 Hub
spelling is derived from the transformers-5 save by hand, as the Hub files differ from it.
"""

import copy
import json
import re

import pytest
import transformers

import hf_fixtures as fx
from taskmem_jax.models.qwen3_vl import PRESETS, ConfigError, Qwen3VLConfig, count_params, preset


def _write(directory, cfg: dict, name="config.json"):
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / name
  path.write_text(json.dumps(cfg, indent=2))
  return path


@pytest.fixture(scope="module")
def moe_v5(tmp_path_factory) -> dict:
  """config.json of a transformers-5 save of the tiny MoE model (rope_parameters, num_local_experts)."""
  path = tmp_path_factory.mktemp("moe_v5")
  fx.hf_model(moe=True).save_pretrained(path)
  return json.loads((path / "config.json").read_text())


@pytest.fixture(scope="module")
def dense_v5(tmp_path_factory) -> dict:
  """config.json of the tiny dense config as transformers 5 writes it (no weights needed)."""
  path = tmp_path_factory.mktemp("dense_v5")
  transformers.Qwen3VLConfig(text_config=dict(fx.TEXT), vision_config=dict(fx.VISION), tie_word_embeddings=False,
                             **fx.TOKENS).save_pretrained(path)
  return json.loads((path / "config.json").read_text())


def hub_457(v5: dict) -> dict:
  """The 4.57 Hub spelling of a transformers-5 MoE config.json."""
  cfg = copy.deepcopy(v5)
  text = cfg["text_config"]
  rope = text.pop("rope_parameters")
  text["rope_theta"] = rope["rope_theta"]
  text["rope_scaling"] = {"rope_type": "default", "mrope_section": rope["mrope_section"], "mrope_interleaved": True}
  text["num_experts"] = text.pop("num_local_experts")
  text["norm_topk_prob"] = True
  cfg["vision_config"]["model_type"] = "qwen3_vl_moe"
  return cfg


# --- both spellings ------------------------------------------------------------------------------

def test_v5_and_hub_spellings_give_equal_configs(moe_v5, tmp_path):
  assert "rope_parameters" in moe_v5["text_config"] and "num_local_experts" in moe_v5["text_config"]
  hub = hub_457(moe_v5)
  assert "rope_parameters" not in hub["text_config"] and "num_local_experts" not in hub["text_config"]
  a = Qwen3VLConfig.from_json_file(_write(tmp_path / "v5", moe_v5))
  b = Qwen3VLConfig.from_json_file(_write(tmp_path / "hub", hub))
  assert a == b
  for cfg in (a, b):
    t = cfg.text
    assert cfg.is_moe and cfg.model_type == "qwen3_vl_moe"
    assert t.num_experts == 8
    assert t.num_experts_per_tok == 2
    assert t.moe_intermediate_size == 40
    assert t.mlp_only_layers == (3,)
    assert t.mrope_section == (6, 5, 5)
    assert t.rope_theta == 5e6
    assert t.head_dim == 32
    assert t.hidden_size == 96 and t.num_hidden_layers == 4
    assert t.num_attention_heads == 4 and t.num_key_value_heads == 2
    assert t.vocab_size == 256 and t.intermediate_size == 192
    assert [t.is_moe_layer(i) for i in range(4)] == [True, True, True, False]
    assert cfg.vision.depth == 4 and cfg.vision.hidden_size == 64 and cfg.vision.out_hidden_size == 96
    assert cfg.vision.deepstack_visual_indexes == (0, 1, 2)
    assert cfg.vision.rope_theta == 10000.0
    assert (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
        250, 251, 252, 253)
    assert cfg.tie_word_embeddings is False


def test_hub_spelling_legacy_type_key(moe_v5):
  """Very old rope_scaling dicts say "type" instead of "rope_type"."""
  hub = hub_457(moe_v5)
  scaling = hub["text_config"]["rope_scaling"]
  scaling["type"] = scaling.pop("rope_type")
  assert Qwen3VLConfig.from_hf_dict(hub) == Qwen3VLConfig.from_hf_dict(moe_v5)


def test_dense_v5(dense_v5):
  cfg = Qwen3VLConfig.from_hf_dict(dense_v5)
  assert not cfg.is_moe and cfg.model_type == "qwen3_vl"
  assert cfg.text.num_experts == 0 and cfg.text.num_experts_per_tok == 0
  assert cfg.text.head_dim == 32 and cfg.text.mrope_section == (6, 5, 5)
  assert not any(cfg.text.is_moe_layer(i) for i in range(4))


def test_dense_ignores_moe_keys(dense_v5):
  """A dense model_type with stray MoE keys stays dense."""
  cfg = copy.deepcopy(dense_v5)
  cfg["text_config"].update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=40)
  assert Qwen3VLConfig.from_hf_dict(cfg) == Qwen3VLConfig.from_hf_dict(dense_v5)


# --- head_dim ------------------------------------------------------------------------------------

def test_explicit_head_dim_kept(moe_v5):
  text = moe_v5["text_config"]
  assert text["hidden_size"] // text["num_attention_heads"] == 24 != text["head_dim"] == 32
  assert Qwen3VLConfig.from_hf_dict(moe_v5).text.head_dim == 32
  cfg = copy.deepcopy(moe_v5)
  cfg["text_config"]["head_dim"] = 16
  cfg["text_config"]["rope_parameters"]["mrope_section"] = [4, 2, 2]
  assert Qwen3VLConfig.from_hf_dict(cfg).text.head_dim == 16


def test_missing_head_dim_is_hidden_over_heads(moe_v5):
  cfg = copy.deepcopy(moe_v5)
  del cfg["text_config"]["head_dim"]
  cfg["text_config"]["rope_parameters"]["mrope_section"] = [4, 4, 4]  # sums to 24 / 2
  assert Qwen3VLConfig.from_hf_dict(cfg).text.head_dim == 24


# --- tying -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("top,text,expected", [(False, True, False), (True, True, True), (True, False, True),
                                               (None, True, False)])
def test_top_level_tie_flag_decides(moe_v5, tmp_path, top, text, expected):
  cfg = copy.deepcopy(moe_v5)
  cfg["text_config"]["tie_word_embeddings"] = text
  if top is None:
    cfg.pop("tie_word_embeddings", None)
  else:
    cfg["tie_word_embeddings"] = top
  assert Qwen3VLConfig.from_hf_dict(cfg).tie_word_embeddings is expected
  # transformers 5 agrees.
  _write(tmp_path, cfg)
  assert transformers.AutoConfig.from_pretrained(tmp_path).tie_word_embeddings is expected


# --- round trips -------------------------------------------------------------------------------------

def _all_configs(moe_v5, dense_v5):
  configs = dict(PRESETS)
  configs["fixture-moe"] = Qwen3VLConfig.from_hf_dict(moe_v5)
  configs["fixture-dense"] = Qwen3VLConfig.from_hf_dict(dense_v5)
  configs["fixture-moe-hub"] = Qwen3VLConfig.from_hf_dict(hub_457(moe_v5))
  tied = copy.deepcopy(dense_v5)
  tied["tie_word_embeddings"] = True
  configs["fixture-dense-tied"] = Qwen3VLConfig.from_hf_dict(tied)
  return configs


def test_to_hf_dict_round_trip_is_identity(moe_v5, dense_v5, tmp_path):
  for name, cfg in _all_configs(moe_v5, dense_v5).items():
    d = cfg.to_hf_dict()
    assert Qwen3VLConfig.from_hf_dict(d) == cfg, name
    # Through a JSON file too (lists instead of tuples, floats re-parsed).
    path = _write(tmp_path / name, d)
    assert Qwen3VLConfig.from_json_file(path) == cfg, name
    assert d["model_type"] == cfg.model_type


def test_transformers_reads_our_config(moe_v5, dense_v5, tmp_path):
  for name, cfg in _all_configs(moe_v5, dense_v5).items():
    _write(tmp_path / name, cfg.to_hf_dict())
    hf = transformers.AutoConfig.from_pretrained(tmp_path / name)
    t, v = cfg.text, cfg.vision
    expected_cls = transformers.Qwen3VLMoeConfig if cfg.is_moe else transformers.Qwen3VLConfig
    assert type(hf) is expected_cls, name
    ht, hv = hf.text_config, hf.vision_config
    assert ht.hidden_size == t.hidden_size, name
    assert ht.num_hidden_layers == t.num_hidden_layers, name
    assert ht.num_attention_heads == t.num_attention_heads, name
    assert ht.num_key_value_heads == t.num_key_value_heads, name
    assert ht.head_dim == t.head_dim, name
    assert ht.vocab_size == t.vocab_size, name
    assert ht.intermediate_size == t.intermediate_size, name
    assert ht.hidden_act == t.hidden_act, name
    assert ht.attention_bias is False, name
    assert list(ht.rope_parameters["mrope_section"]) == list(t.mrope_section), name
    assert ht.rope_parameters["rope_type"] == "default", name
    assert float(ht.rope_parameters["rope_theta"]) == t.rope_theta, name
    if cfg.is_moe:
      assert ht.num_experts == t.num_experts, name
      assert ht.num_experts_per_tok == t.num_experts_per_tok, name
      assert ht.moe_intermediate_size == t.moe_intermediate_size, name
      assert list(ht.mlp_only_layers) == list(t.mlp_only_layers), name
      assert ht.decoder_sparse_step == t.decoder_sparse_step, name
    assert list(hv.deepstack_visual_indexes) == list(v.deepstack_visual_indexes), name
    assert hv.depth == v.depth and hv.hidden_size == v.hidden_size and hv.num_heads == v.num_heads, name
    assert hv.out_hidden_size == v.out_hidden_size, name
    assert hv.num_position_embeddings == v.num_position_embeddings, name
    assert hf.tie_word_embeddings is cfg.tie_word_embeddings, name
    assert hf.image_token_id == cfg.image_token_id and hf.video_token_id == cfg.video_token_id, name


# --- errors ----------------------------------------------------------------------------------------

def _set(path: str, value):
  def edit(cfg):
    *parents, leaf = path.split(".")
    d = cfg
    for p in parents:
      d = d[p]
    d[leaf] = value
  return edit


def _delete(path: str):
  def edit(cfg):
    *parents, leaf = path.split(".")
    d = cfg
    for p in parents:
      d = d[p]
    del d[leaf]
  return edit


BAD = {
    "text_act_gelu": (_set("text_config.hidden_act", "gelu"), ["text_config.hidden_act", "'gelu'"]),
    "rope_yarn": (_set("text_config.rope_parameters.rope_type", "yarn"), ["rope_type", "'yarn'"]),
    "rope_scaling_factor": (_set("text_config.rope_parameters.factor", 4.0), ["factor", "4.0"]),
    "attention_bias": (_set("text_config.attention_bias", True), ["text_config.attention_bias", "True"]),
    "mrope_sum": (_set("text_config.rope_parameters.mrope_section", [6, 5, 4]),
                  ["mrope_section", "[6, 5, 4]", "16"]),
    "mrope_len": (_set("text_config.rope_parameters.mrope_section", [8, 8]), ["mrope_section", "[8, 8]"]),
    "kv_heads": (_set("text_config.num_key_value_heads", 3), ["text_config.num_key_value_heads", "3"]),
    "model_type": (_set("model_type", "llama"), ["model_type", "'llama'"]),
    "deepstack": (_set("vision_config.deepstack_visual_indexes", [0, 1, 4]),
                  ["vision_config.deepstack_visual_indexes", "[0, 1, 4]", "depth=4"]),
    "deepstack_negative": (_set("vision_config.deepstack_visual_indexes", [-1, 1, 2]),
                           ["vision_config.deepstack_visual_indexes", "[-1, 1, 2]"]),
    "image_token": (_set("image_token_id", 256), ["image_token_id", "256", "vocab_size=256"]),
    "video_token": (_set("video_token_id", 300), ["video_token_id", "300"]),
    "missing_hidden": (_delete("text_config.hidden_size"), ["text_config.hidden_size"]),
    "missing_layers": (_delete("text_config.num_hidden_layers"), ["text_config.num_hidden_layers"]),
    "missing_vocab": (_delete("text_config.vocab_size"), ["text_config.vocab_size"]),
    "missing_text_config": (_delete("text_config"), ["text_config"]),
    "out_hidden": (_set("vision_config.out_hidden_size", 64), ["vision_config.out_hidden_size", "64"]),
    "vision_act": (_set("vision_config.hidden_act", "relu"), ["vision_config.hidden_act", "'relu'"]),
    "vision_heads": (_set("vision_config.num_heads", 3), ["vision_config.num_heads", "3"]),
    "pos_embed_square": (_set("vision_config.num_position_embeddings", 60),
                         ["vision_config.num_position_embeddings", "60"]),
    "top_k": (_set("text_config.num_experts_per_tok", 9), ["text_config.num_experts_per_tok", "9"]),
    "vision_rope": (_set("vision_config.rope_parameters.rope_type", "default"),
                    ["vision_config.rope_parameters.rope_type", "'default'"]),
    "zero_heads": (_set("text_config.num_attention_heads", 0), ["text_config.num_attention_heads", "0"]),
    "zero_kv_heads": (_set("text_config.num_key_value_heads", 0), ["text_config.num_key_value_heads", "0"]),
    "zero_vision_heads": (_set("vision_config.num_heads", 0), ["vision_config.num_heads", "0"]),
    "moe_without_experts": (_delete("text_config.num_local_experts"), ["text_config.num_local_experts"]),
    # layer 3 of the tiny MoE is dense (mlp_only_layers), so it needs intermediate_size.
    "missing_intermediate": (_delete("text_config.intermediate_size"), ["text_config.intermediate_size"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsupported_values_raise_config_error(moe_v5, tmp_path, case):
  edit, fragments = BAD[case]
  cfg = copy.deepcopy(moe_v5)
  edit(cfg)
  path = _write(tmp_path, cfg)
  with pytest.raises(ConfigError, match=re.escape(fragments[0])) as info:
    Qwen3VLConfig.from_json_file(path)
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  assert str(path) in message  # the file is named too
  # from_hf_dict raises the same error without a file.
  with pytest.raises(ConfigError, match=re.escape(fragments[0])):
    Qwen3VLConfig.from_hf_dict(cfg)


def test_hub_rope_scaling_yarn_rejected(moe_v5):
  hub = hub_457(moe_v5)
  hub["text_config"]["rope_scaling"]["rope_type"] = "yarn"
  with pytest.raises(ConfigError, match="rope_type='yarn'"):
    Qwen3VLConfig.from_hf_dict(hub)


def test_direct_construction_validates():
  cfg = preset("8B")
  with pytest.raises(ConfigError, match="text_config.num_key_value_heads=5"):
    cfg.replace(text=type(cfg.text)(**{**cfg.text.__dict__, "num_key_value_heads": 5}))


def test_config_file_missing(tmp_path):
  path = tmp_path / "nowhere" / "config.json"
  with pytest.raises(FileNotFoundError, match="config file not found") as info:
    Qwen3VLConfig.from_json_file(path)
  assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["{not json", '{"model_type": "qwen3_vl",', ""])
def test_config_file_invalid_json(tmp_path, text):
  path = tmp_path / "config.json"
  path.write_text(text)
  with pytest.raises(ConfigError, match="not valid JSON") as info:
    Qwen3VLConfig.from_json_file(path)
  assert str(path) in str(info.value)


def test_config_file_not_an_object(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("[1, 2]")
  with pytest.raises(ConfigError, match="expected a JSON object") as info:
    Qwen3VLConfig.from_json_file(path)
  assert str(path) in str(info.value)


def test_unknown_preset():
  with pytest.raises(ConfigError, match="preset='70B'"):
    preset("70B")


# --- presets ---------------------------------------------------------------------------------------

PUBLISHED = {"2B": 2.13e9, "4B": 4.44e9, "8B": 8.77e9, "32B": 33.4e9, "30B-A3B": 31.1e9, "235B-A22B": 235.7e9}
ACTIVE = {"30B-A3B": (3.0e9, 4.0e9), "235B-A22B": (21e9, 23.5e9)}


def test_presets_cover_published_sizes():
  assert set(PUBLISHED) <= set(PRESETS)


def test_tiny_presets_match_the_fixture(moe_v5, dense_v5):
  """The tiny presets, where present, are the parity fixture's shapes (qwen3vl-arch.md §11)."""
  if "tiny" in PRESETS:
    assert preset("tiny") == Qwen3VLConfig.from_hf_dict(dense_v5)
  if "tiny-moe" in PRESETS:
    assert preset("tiny-moe") == Qwen3VLConfig.from_hf_dict(moe_v5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_param_counts(name):
  counts = count_params(preset(name))
  assert abs(counts["total"] / PUBLISHED[name] - 1) < 0.02, (name, counts)
  assert counts["total"] == counts["vision"] + counts["text"]
  if name in ACTIVE:
    lo, hi = ACTIVE[name]
    assert lo < counts["active"] < hi, (name, counts)
  else:
    assert counts["active"] == counts["total"]


def test_preset_shapes():
  for name in PUBLISHED:
    cfg = preset(name)
    assert cfg.text.head_dim == 128, name
    assert cfg.text.vocab_size == 151936 and cfg.text.rope_theta == 5e6, name
    assert cfg.text.mrope_section == (24, 20, 20), name
    assert cfg.vision.out_hidden_size == cfg.text.hidden_size, name
  a3b = preset("30B-A3B")
  assert a3b.is_moe and a3b.text.num_hidden_layers == 48
  assert a3b.text.num_experts == 128 and a3b.text.num_experts_per_tok == 8
  assert a3b.text.moe_intermediate_size == 768
  assert a3b.text.hidden_size == 2048 and a3b.text.num_attention_heads == 32 and a3b.text.num_key_value_heads == 4
  assert a3b.text.head_dim == 128 != a3b.text.hidden_size // a3b.text.num_attention_heads
  assert a3b.vision.deepstack_visual_indexes == (8, 16, 24) and a3b.vision.depth == 27
  assert preset("2B").tie_word_embeddings and preset("4B").tie_word_embeddings
  assert not preset("8B").tie_word_embeddings and not preset("32B").tie_word_embeddings
  assert preset("4B").vision.deepstack_visual_indexes == (5, 11, 17)


def test_config_file_not_utf8(tmp_path):
  path = tmp_path / "config.json"
  path.write_bytes(b'{"model_type": "\xff\xfe"}')
  with pytest.raises(ConfigError, match=re.escape(str(path))):
    Qwen3VLConfig.from_json_file(path)
