"""RMSNorm and LayerNorm computed in float32 whatever the input dtype; output in `dtype`.

x [..., D] -> [..., D]. Scale (and LayerNorm bias) [D] with logical axis "norm".
RMSNorm matches transformers' LlamaRMSNorm/Qwen3RMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  use_scale: bool = True

  @nn.compact
  def __call__(self, x):
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    if self.use_scale:
      scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                         (x.shape[-1],), self.param_dtype)
      y = y * scale.astype(jnp.float32)
    return y.astype(self.dtype)


class LayerNorm(nn.Module):
  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
    if self.use_scale:
      y = y * self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                         (x.shape[-1],), self.param_dtype).astype(jnp.float32)
    if self.use_bias:
      y = y + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)),
                         (x.shape[-1],), self.param_dtype).astype(jnp.float32)
    return y.astype(self.dtype)
