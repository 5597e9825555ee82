"""Grouped-query self/cross attention over shared.kernels.attention, optional qk-norm, KV cache.

Submodule names follow transformers (q_proj, k_proj, v_proj, o_proj, q_norm, k_norm) so LoRA
targets and weight name tables read the same on both sides.
  x [B, L, E] -> [B, L, E];  q [B, L, H, Dh], k/v [B, S, Hkv, Dh].
KV cache (decoding): cache = (k [B, S_max, Hkv, Dh], v [...]); the call writes this step's keys/values
at `cache_index` (a traced scalar: every row writes the same slot; left-padded prompts use `kv_mask`)
and attends to the whole buffer with causal offset `cache_index`. Returns (y, new_cache).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from shared import kernels
from shared.nn import kv_cache
from shared.nn.linear import Dense
from shared.nn.lora import LoraConfig
from shared.nn.norms import RMSNorm
from shared.nn.remat import ATTENTION_OUT, checkpoint_name
from shared.nn.rope import apply_rotary

Dtype = Any


class Attention(nn.Module):
  num_heads: int
  num_kv_heads: int
  head_dim: int
  qk_norm: bool = False
  norm_eps: float = 1e-6
  use_bias: bool = False
  out_bias: bool = False
  rope_interleaved: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x, *, context=None, kv=None, angles=None, kv_angles=None, mask=None, causal: bool = False,
               cache=None, cache_index=None, deterministic: bool = True):
    """x [B, L, E]; context [B, S, E] for cross-attention (keys/values from it, no rope unless kv_angles);
    kv: precomputed cross-attention (k, v), each [B, S, Hkv, Dh] (projected and normed, e.g. once per
    utterance when decoding; not at init): replaces context's projections;
    angles [B, L, R] rotary angles of the queries (and keys for self-attention);
    mask: bool broadcastable to [B, H, L, S] (True = may attend)."""
    b, l, e = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, lora=self.lora)
    q = Dense(self.num_heads * self.head_dim, self.use_bias, ("embed", "heads"), name="q_proj", **kw)(x, deterministic)
    q = q.reshape(b, l, self.num_heads, self.head_dim)
    if self.qk_norm:
      q = RMSNorm(self.norm_eps, self.dtype, self.param_dtype, name="q_norm")(q)
    if kv is not None:
      k, v = (t.astype(self.dtype) for t in kv)
    else:
      src = x if context is None else context
      k = Dense(self.num_kv_heads * self.head_dim, self.use_bias, ("embed", "kv_heads"), name="k_proj", **kw)(
          src, deterministic)
      v = Dense(self.num_kv_heads * self.head_dim, self.use_bias, ("embed", "kv_heads"), name="v_proj", **kw)(
          src, deterministic)
      k = k.reshape(b, src.shape[1], self.num_kv_heads, self.head_dim)
      v = v.reshape(b, src.shape[1], self.num_kv_heads, self.head_dim)
      if self.qk_norm:
        k = RMSNorm(self.norm_eps, self.dtype, self.param_dtype, name="k_norm")(k)
    if angles is not None:
      q = apply_rotary(q, angles, self.rope_interleaved)
      k_ang = angles if (context is None and kv is None) else kv_angles
      if k_ang is not None and kv is None:
        k = apply_rotary(k, k_ang, self.rope_interleaved)
    q = nn.with_logical_constraint(q, ("batch", None, "act_heads", "act_kv"))
    offset = 0
    new_cache = None
    if cache is not None:
      new_cache, k, v, offset = kv_cache.update(cache, k, v, cache_index, self.dtype)
    y = kernels.attention(q, k, v, mask=mask, causal=causal, causal_offset=offset,
                          implementation=self.implementation)
    y = checkpoint_name(y, ATTENTION_OUT)
    y = y.reshape(b, l, self.num_heads * self.head_dim)
    y = Dense(e, self.out_bias, ("heads", "embed"), name="o_proj", **kw)(y, deterministic)
    return y, new_cache
