"""Multi-head attention for encoder-decoder families (MBart, Whisper, UMT5) over shared.kernels.attention.

Differences from shared.nn.attention.Attention (the LLM one): per-projection bias flags (Whisper's
k_proj has none), configurable projection names (HF's q_proj/k_proj/v_proj/out_proj or T5's q/k/v/o,
so LoRA targets and name tables read like the checkpoint), an explicit logit `scale` (T5: 1.0),
an additive `bias` (T5 relative positions) and precomputed cross-attention keys/values.

  x [B, L, E] -> y [B, L, E]; q [B, L, H, Dh]; k/v [B, S, H, Dh].
Call modes (returns (y, extra)):
  self-attention           context=None, cache=None                 -> extra None
  self-attention + cache   cache=(k, v) [B, S_max, H, Dh], cache_index (traced scalar) -> extra new cache;
                           this step's k/v are written at cache_index, causal offset = cache_index
  cross-attention          context [B, S, E]                        -> extra (k, v) computed from context
  cross-attention, cached  kv=(k, v) from an earlier call           -> extra None (k/v projections unused)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from shared import kernels
from shared.nn import kv_cache
from shared.nn.linear import Dense
from shared.nn.lora import LoraConfig
from shared.nn.remat import ATTENTION_OUT, checkpoint_name

Dtype = Any


class MultiHeadAttention(nn.Module):
  num_heads: int
  head_dim: int
  q_bias: bool = True
  k_bias: bool = True
  v_bias: bool = True
  out_bias: bool = True
  scale: float | None = None                  # None: head_dim ** -0.5
  names: Sequence[str] = ("q_proj", "k_proj", "v_proj", "out_proj")
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  lora: LoraConfig | None = None
  implementation: str = "auto"

  def _dense(self, features, use_bias, axes, name):
    return Dense(features, use_bias, axes, self.dtype, self.param_dtype, lora=self.lora, name=name)

  @nn.compact
  def __call__(self, x, *, context=None, kv=None, bias=None, mask=None, causal: bool = False, cache=None,
               cache_index=None, deterministic: bool = True):
    """bias: float broadcastable to [B, H, L, S]; mask: bool broadcastable to [B, H, L, S] (True = attend)."""
    b, l, e = x.shape
    hd = self.num_heads * self.head_dim
    qn, kn, vn, on = self.names
    q = self._dense(hd, self.q_bias, ("embed", "heads"), qn)(x, deterministic).reshape(b, l, self.num_heads,
                                                                                      self.head_dim)
    extra = None
    if kv is not None:
      k, v = kv
    else:
      src = x if context is None else context
      s = src.shape[1]
      k = self._dense(hd, self.k_bias, ("embed", "kv_heads"), kn)(src, deterministic).reshape(
          b, s, self.num_heads, self.head_dim)
      v = self._dense(hd, self.v_bias, ("embed", "kv_heads"), vn)(src, deterministic).reshape(
          b, s, self.num_heads, self.head_dim)
      if context is not None:
        extra = (k, v)
    q = nn.with_logical_constraint(q, ("batch", None, "act_heads", "act_kv"))
    offset = 0
    if cache is not None:
      extra, k, v, offset = kv_cache.update(cache, k, v, cache_index, self.dtype)
    y = kernels.attention(q, k.astype(self.dtype), v.astype(self.dtype), bias=bias, mask=mask, causal=causal,
                          scale=self.scale, causal_offset=offset, implementation=self.implementation)
    y = checkpoint_name(y, ATTENTION_OUT)
    y = y.reshape(b, l, hd)
    return self._dense(e, self.out_bias, ("heads", "embed"), on)(y, deterministic), extra
