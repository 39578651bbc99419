"""Tiny random transformers Qwen3-VL / Qwen3-VL-MoE checkpoints and inputs (qwen3vl-arch.md §11).

The reference side of every parity test: PyTorch modules from transformers, never our code.
"""

from __future__ import annotations

import numpy as np
import torch

VISION = dict(depth=4, hidden_size=64, intermediate_size=128, num_heads=4, in_channels=3, patch_size=16,
              temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=96, num_position_embeddings=64,
              deepstack_visual_indexes=[0, 1, 2], hidden_act="gelu_pytorch_tanh")
TEXT = dict(vocab_size=256, hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=4096, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [6, 5, 5],
                             "mrope_interleaved": True})
MOE = dict(TEXT, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=40, decoder_sparse_step=1,
           mlp_only_layers=[3])  # H=96 != 2I=80 != I=40, so the two expert layouts differ in shape
TOKENS = dict(image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253)
IMG, VID, VS, VE = 250, 251, 252, 253
PAD = 0


def hf_model(moe: bool, seed: int = 0, init_std: float = 0.2, tie: bool = False):
  """A random transformers model in fp32 eager attention (the tightest reference)."""
  from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLMoeConfig
  from transformers import Qwen3VLMoeForConditionalGeneration
  torch.manual_seed(seed)
  if moe:
    config = Qwen3VLMoeConfig(text_config=dict(MOE, initializer_range=init_std),
                              vision_config=dict(VISION, initializer_range=init_std),
                              tie_word_embeddings=tie, **TOKENS)
    model = Qwen3VLMoeForConditionalGeneration(config)
  else:
    config = Qwen3VLConfig(text_config=dict(TEXT, initializer_range=init_std),
                           vision_config=dict(VISION, initializer_range=init_std), tie_word_embeddings=tie,
                           **TOKENS)
    model = Qwen3VLForConditionalGeneration(config)
  model.config._attn_implementation = "eager"
  for sub in (model.config.text_config, model.config.vision_config):
    sub._attn_implementation = "eager"
  with torch.no_grad():  # norms and biases start at 1/0; perturb them so the test sees them
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(torch.randn_like(p) * 0.1)
  return model.eval()


def inputs(seed: int = 0, padded_row: bool = True) -> dict[str, np.ndarray]:
  """One image (grid 1x4x6: 6 tokens) and one 2-frame-group video (grid 2x4x4: 2x4 tokens, each group
  after its timestamp text), the §5 sequence; plus a left-padded text+image row."""
  rng = np.random.default_rng(seed)
  row0 = [1, 2, 3, VS] + [IMG] * 6 + [VE, 4, 5] + [6, 7, VS] + [VID] * 4 + [VE] + [6, 7, VS] + [VID] * 4 + [VE] + [8, 9, 10]
  rows = [row0]
  image_grids = [[1, 4, 6]]
  if padded_row:
    row1 = [11, 12, VS] + [IMG] * 4 + [VE] + [13, 14, 15, 16, 17, 18, 19]
    rows.append([PAD] * (len(row0) - len(row1)) + row1)
    image_grids.append([1, 4, 4])
  ids = np.array(rows, np.int64)
  mask = np.ones_like(ids)
  if padded_row:
    mask[1, : len(row0) - len(row1)] = 0
  image_grid = np.array(image_grids, np.int64)
  video_grid = np.array([[2, 4, 4]], np.int64)
  patch = 3 * 2 * 16 * 16
  return dict(
      input_ids=ids, attention_mask=mask,
      pixel_values=rng.standard_normal((int(image_grid.prod(1).sum()), patch)).astype(np.float32),
      image_grid_thw=image_grid,
      pixel_values_videos=rng.standard_normal((int(video_grid.prod(1).sum()), patch)).astype(np.float32),
      video_grid_thw=video_grid,
  )


def mm_token_type_ids(ids: np.ndarray) -> np.ndarray:
  return np.where(ids == IMG, 1, np.where(ids == VID, 2, 0))


def hf_logits(model, batch: dict[str, np.ndarray]) -> np.ndarray:
  kwargs = {k: torch.from_numpy(v) for k, v in batch.items()}
  kwargs["mm_token_type_ids"] = torch.from_numpy(mm_token_type_ids(batch["input_ids"]))
  with torch.no_grad():
    return model(**kwargs).logits.float().numpy()


def rel_err(ours, ref, mask=None) -> float:
  """max |ours - ref| / max |ref| over the real (unpadded) positions."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if mask is not None:
    ours, ref = ours[mask.astype(bool)], ref[mask.astype(bool)]
  return float(np.abs(ours - ref).max() / np.abs(ref).max())
