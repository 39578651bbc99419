"""Qwen3-VL configuration: one class for dense and MoE checkpoints.

Reads a Hugging Face ``config.json`` in both spellings that exist in the wild:
- transformers 4.57 Hub files: ``rope_theta`` + ``rope_scaling``, ``num_experts``;
- transformers 5 saves: ``rope_parameters``, ``num_local_experts``.
``to_hf_dict`` writes the transformers 5 spelling. ``PRESETS`` holds the published sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np


class ConfigError(ValueError):
  """A config value this port does not support, or a malformed config file."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  depth: int = 27
  hidden_size: int = 1152
  intermediate_size: int = 4304
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 16
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  out_hidden_size: int = 4096
  num_position_embeddings: int = 2304
  deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
  hidden_act: str = "gelu_pytorch_tanh"
  rope_theta: float = 10000.0
  layer_norm_eps: float = 1e-6  # fixed in HF, not a config key
  # "auto" | "xla" | "pallas" | "chunked" (taskmem_jax/kernels): a runtime choice, not part of the checkpoint;
  # auto = pallas on GPU/TPU, xla on CPU; chunked = flash attention in plain XLA (memory O(L), any device).
  attention_impl: str = "auto"
  # Per-layer rematerialisation in training (layers.REMAT_POLICIES: "none" | "full" | "dots"); runtime only.
  remat: str = "none"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Width of one pixel_values row: C * T * P * P."""
    return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int = 151936
  hidden_size: int = 4096
  intermediate_size: int = 22016
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  head_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 500000.0
  mrope_section: tuple[int, int, int] = (24, 20, 20)
  max_position_embeddings: int = 128000
  hidden_act: str = "silu"
  # MoE; num_experts == 0 means a dense model.
  num_experts: int = 0
  num_experts_per_tok: int = 0
  moe_intermediate_size: int = 0
  decoder_sparse_step: int = 1
  mlp_only_layers: tuple[int, ...] = ()
  router_aux_loss_coef: float = 0.001
  # "auto" | "xla" | "pallas" | "chunked" (taskmem_jax/kernels): a runtime choice, not part of the checkpoint;
  # auto = pallas on GPU/TPU, xla on CPU; chunked = flash attention in plain XLA (memory O(L), any device).
  attention_impl: str = "auto"
  # Per-layer rematerialisation in training (layers.REMAT_POLICIES: "none" | "full" | "dots"); runtime only.
  remat: str = "none"

  @property
  def is_moe(self) -> bool:
    return self.num_experts > 0

  def is_moe_layer(self, layer: int) -> bool:
    return (self.is_moe and layer not in self.mlp_only_layers
            and (layer + 1) % self.decoder_sparse_step == 0)

  def mrope_axis(self) -> np.ndarray:
    """Which position axis (0=t, 1=h, 2=w) drives each of the head_dim/2 frequencies.

    Interleaved MRoPE: h at j%3==1 below 3*sec[1], w at j%3==2 below 3*sec[2], t elsewhere.
    """
    j = np.arange(self.head_dim // 2)
    axis = np.zeros_like(j)
    axis[(j % 3 == 1) & (j < 3 * self.mrope_section[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * self.mrope_section[2])] = 2
    return axis


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
  text: TextConfig = dataclasses.field(default_factory=TextConfig)
  vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  tie_word_embeddings: bool = False

  @property
  def is_moe(self) -> bool:
    return self.text.is_moe

  @property
  def model_type(self) -> str:
    return "qwen3_vl_moe" if self.is_moe else "qwen3_vl"

  def __post_init__(self):
    validate(self)

  def replace(self, **changes) -> "Qwen3VLConfig":
    return dataclasses.replace(self, **changes)

  # --- Hugging Face config.json ------------------------------------------------------------

  @classmethod
  def from_hf_dict(cls, cfg: dict[str, Any], source: str = "config") -> "Qwen3VLConfig":
    return _from_hf_dict(cfg, source)

  @classmethod
  def from_json_file(cls, path: str | os.PathLike) -> "Qwen3VLConfig":
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: config file not found")
    try:
      with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ConfigError(f"{path}: not valid JSON ({e})") from e
    return _from_hf_dict(cfg, path)

  def to_hf_dict(self) -> dict[str, Any]:
    return _to_hf_dict(self)


def validate(cfg: Qwen3VLConfig) -> None:
  """Raises ConfigError naming the field and value of anything this port cannot run."""
  t, v = cfg.text, cfg.vision

  def fail(field, value, why):
    raise ConfigError(f"{field}={value!r}: {why}")

  if t.hidden_act != "silu":
    fail("text_config.hidden_act", t.hidden_act, "only 'silu' is supported")
  if v.hidden_act not in ("gelu_pytorch_tanh", "gelu"):
    fail("vision_config.hidden_act", v.hidden_act, "only 'gelu_pytorch_tanh' and 'gelu' are supported")
  for field, value in (("text_config.attention_impl", t.attention_impl),
                       ("vision_config.attention_impl", v.attention_impl)):
    if value not in ("auto", "xla", "pallas", "chunked"):
      fail(field, value, "expected 'auto', 'xla', 'pallas' or 'chunked'")
  for field, value in (("text_config.remat", t.remat), ("vision_config.remat", v.remat)):
    if value not in ("none", "full", "dots"):
      fail(field, value, "expected 'none', 'full' or 'dots'")
  for field, value in (("text_config.num_attention_heads", t.num_attention_heads),
                       ("text_config.num_key_value_heads", t.num_key_value_heads),
                       ("text_config.head_dim", t.head_dim), ("vision_config.num_heads", v.num_heads),
                       ("vision_config.hidden_size", v.hidden_size), ("vision_config.depth", v.depth),
                       ("vision_config.patch_size", v.patch_size),
                       ("vision_config.temporal_patch_size", v.temporal_patch_size),
                       ("vision_config.spatial_merge_size", v.spatial_merge_size)):
    if not isinstance(value, int) or value <= 0:
      fail(field, value, "must be a positive integer")
  if t.num_attention_heads % t.num_key_value_heads:
    fail("text_config.num_key_value_heads", t.num_key_value_heads,
         f"must divide num_attention_heads={t.num_attention_heads}")
  if len(t.mrope_section) != 3 or sum(t.mrope_section) != t.head_dim // 2:
    fail("text_config.rope_parameters.mrope_section", list(t.mrope_section),
         f"needs 3 entries summing to head_dim/2={t.head_dim // 2}")
  if v.hidden_size % v.num_heads:
    fail("vision_config.num_heads", v.num_heads, f"must divide hidden_size={v.hidden_size}")
  if v.head_dim % 4:
    fail("vision_config.hidden_size", v.hidden_size, "vision head_dim must be a multiple of 4 (2-D rotary)")
  side = int(round(v.num_position_embeddings**0.5))
  if side * side != v.num_position_embeddings:
    fail("vision_config.num_position_embeddings", v.num_position_embeddings, "must be a perfect square")
  for i in v.deepstack_visual_indexes:
    if not 0 <= i < v.depth:
      fail("vision_config.deepstack_visual_indexes", list(v.deepstack_visual_indexes),
           f"every index must be in [0, depth={v.depth})")
  if len(v.deepstack_visual_indexes) > t.num_hidden_layers:
    fail("vision_config.deepstack_visual_indexes", list(v.deepstack_visual_indexes),
         f"more DeepStack taps than decoder layers ({t.num_hidden_layers})")
  if v.out_hidden_size != t.hidden_size:
    fail("vision_config.out_hidden_size", v.out_hidden_size, f"must equal text hidden_size={t.hidden_size}")
  if t.is_moe:
    if not 0 < t.num_experts_per_tok <= t.num_experts:
      fail("text_config.num_experts_per_tok", t.num_experts_per_tok, f"must be in [1, {t.num_experts}]")
    if t.moe_intermediate_size <= 0:
      fail("text_config.moe_intermediate_size", t.moe_intermediate_size, "must be positive")
    if t.decoder_sparse_step <= 0:
      fail("text_config.decoder_sparse_step", t.decoder_sparse_step, "must be positive")
  for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
    if not 0 <= getattr(cfg, name) < t.vocab_size:
      fail(name, getattr(cfg, name), f"must be below text_config.vocab_size={t.vocab_size}")


# Keys whose values we ignore because they only matter to training or to HF internals.
_IGNORED_TEXT_KEYS = {
    "model_type", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range",
    "use_cache", "output_router_logits", "sliding_window", "tie_word_embeddings", "dtype", "torch_dtype",
    "norm_topk_prob", "transformers_version", "_name_or_path", "architectures", "use_sliding_window",
    "layer_types", "max_window_layers",
}


def _rope(text: dict, source: str) -> tuple[float, tuple[int, ...]]:
  """(rope_theta, mrope_section) from either the v5 rope_parameters or 4.57 rope_theta+rope_scaling."""
  params = dict(text.get("rope_parameters") or {})
  scaling = text.get("rope_scaling") or {}
  for key in ("rope_type", "mrope_section", "mrope_interleaved", "type"):
    if key not in params and key in scaling:
      params[key] = scaling[key]
  theta = params.get("rope_theta", text.get("rope_theta", 500000.0))
  rope_type = params.get("rope_type", params.get("type", "default"))
  if rope_type != "default":
    raise ConfigError(f"{source}: text_config.rope_parameters.rope_type={rope_type!r}: only 'default' "
                      "(interleaved MRoPE) is supported")
  for key in ("factor", "original_max_position_embeddings"):
    if key in params and params[key] not in (None, 1, 1.0):
      raise ConfigError(f"{source}: text_config.rope_parameters.{key}={params[key]!r}: rope scaling is "
                        "not supported")
  section = tuple(int(s) for s in params.get("mrope_section", (24, 20, 20)))
  return float(theta), section


def _from_hf_dict(cfg: dict[str, Any], source: str) -> Qwen3VLConfig:
  if not isinstance(cfg, dict):
    raise ConfigError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
  model_type = cfg.get("model_type")
  if model_type not in ("qwen3_vl", "qwen3_vl_moe"):
    raise ConfigError(f"{source}: model_type={model_type!r}: expected 'qwen3_vl' or 'qwen3_vl_moe'")
  for key in ("text_config", "vision_config"):
    if not isinstance(cfg.get(key), dict):
      raise ConfigError(f"{source}: missing or malformed field {key!r}")
  text, vision = cfg["text_config"], cfg["vision_config"]

  if text.get("attention_bias", False):
    raise ConfigError(f"{source}: text_config.attention_bias=True: Qwen3-VL has no attention biases")
  theta, section = _rope(text, source)
  num_experts = 0
  if model_type == "qwen3_vl_moe":
    num_experts = text.get("num_local_experts", text.get("num_experts"))
    if num_experts is None:
      raise ConfigError(f"{source}: missing field text_config.num_local_experts (or num_experts) for a "
                        "qwen3_vl_moe model")

  def get(d, key, prefix, default=dataclasses.MISSING):
    if key in d and d[key] is not None:
      return d[key]
    if default is dataclasses.MISSING:
      raise ConfigError(f"{source}: missing field {prefix}.{key}")
    return default

  def positive(d, key, prefix, default=dataclasses.MISSING):
    value = get(d, key, prefix, default)
    if value is None and default is None:
      return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ConfigError(f"{source}: {prefix}.{key}={value!r}: must be a positive integer")
    return value

  hidden = positive(text, "hidden_size", "text_config")
  heads = positive(text, "num_attention_heads", "text_config")
  layers = positive(text, "num_hidden_layers", "text_config")
  sparse_step = positive(text, "decoder_sparse_step", "text_config", 1)
  mlp_only = tuple(get(text, "mlp_only_layers", "text_config", ()))
  any_dense_layer = not num_experts or any(
      i in mlp_only or (i + 1) % sparse_step for i in range(layers))
  text_cfg = TextConfig(
      vocab_size=positive(text, "vocab_size", "text_config"),
      hidden_size=hidden,
      # Only dense layers use it; a MoE model whose every layer is sparse may omit it.
      intermediate_size=positive(text, "intermediate_size", "text_config") if any_dense_layer
      else get(text, "intermediate_size", "text_config", 0),
      num_hidden_layers=layers,
      num_attention_heads=heads,
      num_key_value_heads=positive(text, "num_key_value_heads", "text_config", heads),
      head_dim=positive(text, "head_dim", "text_config", None) or hidden // heads,
      rms_norm_eps=float(get(text, "rms_norm_eps", "text_config", 1e-6)),
      rope_theta=theta,
      mrope_section=section,
      max_position_embeddings=get(text, "max_position_embeddings", "text_config", 128000),
      hidden_act=get(text, "hidden_act", "text_config", "silu"),
      num_experts=int(num_experts or 0),
      num_experts_per_tok=get(text, "num_experts_per_tok", "text_config", 0) if num_experts else 0,
      moe_intermediate_size=get(text, "moe_intermediate_size", "text_config", 0) if num_experts else 0,
      decoder_sparse_step=sparse_step,
      mlp_only_layers=mlp_only,
      router_aux_loss_coef=float(get(text, "router_aux_loss_coef", "text_config", 0.001)),
      attention_impl=get(text, "attention_impl", "text_config", "auto"),
  )
  vision_rope = vision.get("rope_parameters") or {}
  if vision_rope.get("rope_type", "axial") != "axial":
    raise ConfigError(f"{source}: vision_config.rope_parameters.rope_type={vision_rope['rope_type']!r}: "
                      "only 'axial' is supported")
  defaults = VisionConfig()
  vision_cfg = VisionConfig(**{
      f.name: (tuple(vision[f.name]) if f.name == "deepstack_visual_indexes" and f.name in vision
               else vision.get(f.name, getattr(defaults, f.name)))
      for f in dataclasses.fields(VisionConfig) if f.name not in ("rope_theta", "layer_norm_eps")
  }, rope_theta=float(vision_rope.get("rope_theta", 10000.0)))
  # The top-level flag decides tying; text_config.tie_word_embeddings is ignored (as transformers 5 does).
  top = {f.name: f.default for f in dataclasses.fields(Qwen3VLConfig)}
  try:
    return Qwen3VLConfig(
        text=text_cfg, vision=vision_cfg,
        image_token_id=cfg.get("image_token_id", top["image_token_id"]),
        video_token_id=cfg.get("video_token_id", top["video_token_id"]),
        vision_start_token_id=cfg.get("vision_start_token_id", top["vision_start_token_id"]),
        vision_end_token_id=cfg.get("vision_end_token_id", top["vision_end_token_id"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )
  except ConfigError as e:
    raise ConfigError(f"{source}: {e}") from None


def _to_hf_dict(cfg: Qwen3VLConfig) -> dict[str, Any]:
  t, v = cfg.text, cfg.vision
  text = {
      "model_type": f"{cfg.model_type}_text",
      "vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
      "num_hidden_layers": t.num_hidden_layers, "num_attention_heads": t.num_attention_heads,
      "num_key_value_heads": t.num_key_value_heads, "head_dim": t.head_dim, "rms_norm_eps": t.rms_norm_eps,
      "max_position_embeddings": t.max_position_embeddings, "hidden_act": t.hidden_act,
      "attention_bias": False,
      "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                          "mrope_section": list(t.mrope_section), "mrope_interleaved": True},
  }
  if t.is_moe:
    text.update(num_local_experts=t.num_experts, num_experts_per_tok=t.num_experts_per_tok,
                moe_intermediate_size=t.moe_intermediate_size, decoder_sparse_step=t.decoder_sparse_step,
                mlp_only_layers=list(t.mlp_only_layers), router_aux_loss_coef=t.router_aux_loss_coef)
  vision = {
      "model_type": f"{cfg.model_type}_vision",
      "depth": v.depth, "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
      "num_heads": v.num_heads, "in_channels": v.in_channels, "patch_size": v.patch_size,
      "temporal_patch_size": v.temporal_patch_size, "spatial_merge_size": v.spatial_merge_size,
      "out_hidden_size": v.out_hidden_size, "num_position_embeddings": v.num_position_embeddings,
      "deepstack_visual_indexes": list(v.deepstack_visual_indexes), "hidden_act": v.hidden_act,
      "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
  }
  arch = "Qwen3VLMoeForConditionalGeneration" if cfg.is_moe else "Qwen3VLForConditionalGeneration"
  return {
      "architectures": [arch], "model_type": cfg.model_type, "text_config": text, "vision_config": vision,
      "image_token_id": cfg.image_token_id, "video_token_id": cfg.video_token_id,
      "vision_start_token_id": cfg.vision_start_token_id, "vision_end_token_id": cfg.vision_end_token_id,
      "tie_word_embeddings": cfg.tie_word_embeddings,
  }


# --- Published sizes (../shared/research/qwen3vl-arch.md §1.3), plus tiny test shapes -----------

_SMALL_VIT = dict(depth=24, hidden_size=1024, intermediate_size=4096, deepstack_visual_indexes=(5, 11, 17))
_LARGE_VIT = dict(depth=27, hidden_size=1152, intermediate_size=4304, deepstack_visual_indexes=(8, 16, 24))
_COMMON_TEXT = dict(vocab_size=151936, head_dim=128, rope_theta=5_000_000.0, mrope_section=(24, 20, 20),
                    max_position_embeddings=262144, rms_norm_eps=1e-6)


def _preset(hidden, layers, heads, kv, inter, vit, tie, moe=None) -> Qwen3VLConfig:
  text = TextConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    num_key_value_heads=kv, intermediate_size=inter, **_COMMON_TEXT, **(moe or {}))
  return Qwen3VLConfig(text=text, vision=VisionConfig(out_hidden_size=hidden, **vit), tie_word_embeddings=tie)


def _moe(experts, top_k, moe_inter):
  return dict(num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=moe_inter)


PRESETS: dict[str, Qwen3VLConfig] = {
    "2B": _preset(2048, 28, 16, 8, 6144, _SMALL_VIT, tie=True),
    "4B": _preset(2560, 36, 32, 8, 9728, _SMALL_VIT, tie=True),
    "8B": _preset(4096, 36, 32, 8, 12288, _LARGE_VIT, tie=False),
    "32B": _preset(5120, 64, 64, 8, 25600, _LARGE_VIT, tie=False),
    "30B-A3B": _preset(2048, 48, 32, 4, 6144, _LARGE_VIT, tie=False, moe=_moe(128, 8, 768)),
    "235B-A22B": _preset(4096, 94, 64, 4, 12288, _LARGE_VIT, tie=False, moe=_moe(128, 8, 1536)),
    # ~1M parameters, the shape of the parity fixture (qwen3vl-arch.md §11): demos and CPU tests.
    "tiny": Qwen3VLConfig(
        text=TextConfig(vocab_size=256, hidden_size=96, intermediate_size=192, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=5e6,
                        mrope_section=(6, 5, 5), max_position_embeddings=4096),
        vision=VisionConfig(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=96,
                            num_position_embeddings=64, deepstack_visual_indexes=(0, 1, 2)),
        image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253),
    "tiny-moe": None,  # filled below
}
PRESETS["tiny-moe"] = PRESETS["tiny"].replace(text=dataclasses.replace(
    PRESETS["tiny"].text, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=40, mlp_only_layers=(3,)))


def preset(name: str) -> Qwen3VLConfig:
  if name not in PRESETS:
    raise ConfigError(f"preset={name!r}: unknown; choose one of {sorted(PRESETS)}")
  return PRESETS[name]
