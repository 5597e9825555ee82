"""RMSNorm, LayerNorm and GroupNorm computed in float32 whatever the input dtype; output in `dtype`.

x [..., D] -> [..., D]. Scale (and LayerNorm / GroupNorm bias) [D] with logical axis "norm", created in
`param_dtype`.
RMSNorm matches transformers' LlamaRMSNorm/Qwen3RMSNorm: x * rsqrt(mean(x^2) + eps) * weight.
GroupNorm matches torch.nn.GroupNorm (affine) on channels-last x [B, *spatial, C].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError

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


class GroupNorm(nn.Module):
  """torch.nn.GroupNorm(num_groups, C, eps, affine=True) on channels-last x [B, *spatial, C]: channels split into
  num_groups groups of C / num_groups consecutive channels; mean and biased variance over the spatial dims and the
  group, in float32. scale / bias [C] in `param_dtype`; output in `dtype`. eps defaults to torch's 1e-5 (the
  diffusers VAEs and Transformer2D pass 1e-6)."""
  num_groups: int
  eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, g = x.shape[-1], self.num_groups
    if c % g:
      where = f" {self.name}" if self.name else ""
      raise ConfigError(f"GroupNorm{where}: {c} channels are not a multiple of norm_num_groups {g}")
    xf = x.astype(jnp.float32).reshape(x.shape[0], -1, g, c // g)
    mean = jnp.mean(xf, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 3), keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (c,), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), (c,), self.param_dtype)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)
