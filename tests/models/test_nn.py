"""shared.nn layers against torch / transformers references: rope variants, norms, cross-attention."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from shared.nn import rope
from shared.nn.attention import Attention
from shared.nn.norms import LayerNorm, RMSNorm


def test_llama3_inv_freq_matches_transformers():
  from transformers import LlamaConfig
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192}
  cfg = LlamaConfig(hidden_size=3072, num_attention_heads=24, head_dim=128, rope_theta=500000.0,
                    rope_scaling=scaling)
  ref, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg)
  np.testing.assert_allclose(rope.inv_freq(128, 500000.0, scaling), ref.numpy(), rtol=1e-6)


def test_rotate_half_matches_transformers_and_partial_rotary():
  from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
  rng = np.random.default_rng(0)
  q = rng.normal(size=(2, 5, 3, 16)).astype(np.float32)      # [B, L, H, D]
  pos = np.stack([np.arange(5), np.arange(3, 8)])
  f = rope.inv_freq(16, 10000.0)
  ang = rope.angles(pos, f)
  ours = np.asarray(rope.apply_rotary(jnp.asarray(q), ang))
  emb = np.concatenate([np.asarray(ang)] * 2, -1)
  tq = torch.from_numpy(q).transpose(1, 2)
  ref, _ = apply_rotary_pos_emb(tq, tq, torch.from_numpy(np.cos(emb)), torch.from_numpy(np.sin(emb)))
  np.testing.assert_allclose(ours, ref.transpose(1, 2).numpy(), rtol=1e-5, atol=1e-5)
  # partial: rotate the first 8 channels only
  part = np.asarray(rope.apply_rotary(jnp.asarray(q), rope.angles(pos, rope.inv_freq(8, 10000.0))))
  np.testing.assert_array_equal(part[..., 8:], q[..., 8:])
  assert not np.allclose(part[..., :8], q[..., :8])


def test_interleaved_multi_axis_and_scaled_rope():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 4, 2, 12)).astype(np.float32)
  pos = rng.integers(0, 9, size=(1, 4, 3))                     # t, h, w per token
  ang = rope.multi_axis_angles(jnp.asarray(pos), dims=(4, 4, 4), theta=100.0)
  assert ang.shape == (1, 4, 6)
  np.testing.assert_allclose(ang[..., 2:4], pos[..., 1:2] * rope.inv_freq(4, 100.0), rtol=1e-6)
  y = np.asarray(rope.apply_rotary(jnp.asarray(x), ang, interleaved=True))
  z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * np.asarray(ang))[:, :, None]   # complex reference
  np.testing.assert_allclose(y[..., 0::2], z.real, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y[..., 1::2], z.imag, rtol=1e-5, atol=1e-5)
  # rotary preserves norms; relative: <R(p) q, R(p') k> depends on p - p' only (also with a frequency scale)
  f = rope.inv_freq(12)
  q, k = x[:, :1, :1], x[:, 1:2, :1]
  dot = lambda p1, p2: float(jnp.sum(rope.apply_rotary(q, rope.angles(jnp.full((1, 1), p1), f, 0.4)) *
                                     rope.apply_rotary(k, rope.angles(jnp.full((1, 1), p2), f, 0.4))))
  np.testing.assert_allclose(dot(3.0, 1.0), dot(10.0, 8.0), rtol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-5)


def test_norms_match_torch():
  x = np.random.default_rng(2).normal(size=(3, 7)).astype(np.float32) * 3 + 1
  for mod, ref in ((RMSNorm(1e-6), torch.nn.RMSNorm(7, eps=1e-6)), (LayerNorm(1e-5), torch.nn.LayerNorm(7))):
    p = nn.meta.unbox(mod.init(jax.random.key(0), x))
    out = mod.apply(p, x)
    np.testing.assert_allclose(out, ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
  rms = nn.meta.unbox(RMSNorm().init(jax.random.key(0), x))
  bf = RMSNorm(1e-6, dtype=jnp.bfloat16).apply(rms, jnp.asarray(x, jnp.bfloat16))
  assert bf.dtype == jnp.bfloat16


def test_cross_attention_matches_manual():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 8)).astype(np.float32)
  ctx = rng.normal(size=(2, 5, 8)).astype(np.float32)
  mask = np.ones((2, 1, 1, 5), bool)
  mask[1, ..., 3:] = False
  att = Attention(num_heads=4, num_kv_heads=2, head_dim=4)
  p = nn.meta.unbox(att.init(jax.random.key(0), x, context=ctx))["params"]
  y, _ = att.apply({"params": p}, x, context=ctx, mask=mask)
  q = (x @ p["q_proj"]["kernel"]).reshape(2, 3, 4, 4)
  k = np.repeat((ctx @ p["k_proj"]["kernel"]).reshape(2, 5, 2, 4), 2, axis=2)
  v = np.repeat((ctx @ p["v_proj"]["kernel"]).reshape(2, 5, 2, 4), 2, axis=2)
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0 + np.where(mask, 0, -1e9)
  w = np.exp(s - s.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  ref = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(2, 3, 16) @ p["o_proj"]["kernel"]
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  # precomputed cross-attention keys/values (decoding) give the same result
  kv = ((ctx @ p["k_proj"]["kernel"]).reshape(2, 5, 2, 4), (ctx @ p["v_proj"]["kernel"]).reshape(2, 5, 2, 4))
  y2, _ = att.apply({"params": p}, x, kv=kv, mask=mask)
  np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)
