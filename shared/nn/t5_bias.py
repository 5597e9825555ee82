"""T5 / UMT5 relative position bias: bucketed relative distances -> a learned bias per head.

  bias = RelativePositionBias(num_buckets, max_distance, num_heads, bidirectional)(q_len, k_len)
         -> [1, H, q_len, k_len] float32, added to the attention logits (shared.kernels.attention bias=).
Param: embedding [num_buckets, H] (torch: relative_attention_bias.weight, same layout), axes (None, "heads").
Buckets depend only on the (static) lengths, so they are computed on the host in numpy with
transformers' float32 arithmetic (bit-identical buckets, checked in tests/models/test_umt5.py).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Dtype = Any


def relative_position_bucket(relative_position, *, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> np.ndarray:
  """relative_position (memory - query) int array -> bucket ids in [0, num_buckets)."""
  rel = np.asarray(relative_position, np.int64)
  out = np.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    out = out + (rel > 0).astype(np.int64) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  is_small = rel < max_exact
  ratio = np.maximum(rel, 1).astype(np.float32) / np.float32(max_exact)  # max(.,1): log(0) is masked anyway
  log_ratio = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
  log_ratio = log_ratio * np.float32(num_buckets - max_exact)
  large = np.minimum(max_exact + log_ratio.astype(np.int64), num_buckets - 1)
  return out + np.where(is_small, rel, large)


class RelativePositionBias(nn.Module):
  num_buckets: int
  max_distance: int
  num_heads: int
  bidirectional: bool = True
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int, q_offset: int = 0):
    table = self.param("embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "heads")),
                       (self.num_buckets, self.num_heads), self.param_dtype)
    rel = np.arange(k_len)[None, :] - (np.arange(q_len)[:, None] + q_offset)
    buckets = relative_position_bucket(rel, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
                                       max_distance=self.max_distance)
    values = jnp.take(table.astype(jnp.float32), jnp.asarray(buckets, jnp.int32), axis=0)  # [Lq, Lk, H]
    return jnp.transpose(values, (2, 0, 1))[None]
