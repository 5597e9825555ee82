"""The KV-cache write shared by shared.nn.attention.Attention and shared.nn.mha.MultiHeadAttention."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def update(cache, k, v, cache_index, dtype):
  """Write this step's k, v [B, L, Hkv, Dh] into cache = (k_cache, v_cache) [B, S_max, Hkv, Dh] at
  `cache_index` (a traced scalar: every row writes the same slot).
  -> (new_cache, k_all, v_all [B, S_max, Hkv, Dh] in `dtype`, causal offset = cache_index int32)."""
  k_cache, v_cache = cache
  idx = jnp.asarray(cache_index, jnp.int32)
  zero = jnp.zeros((), jnp.int32)
  k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (zero, idx, zero, zero))
  v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (zero, idx, zero, zero))
  return (k_cache, v_cache), k_cache.astype(dtype), v_cache.astype(dtype), idx
