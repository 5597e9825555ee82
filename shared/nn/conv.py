"""Convolutions, channels last: an N-d `Conv` and a time-causal `CausalConv3d`.

Kernels are stored [*kernel_size, in, out] with logical axes ("conv_kernel", None.., "conv_in",
"conv_out"); biases [out] with ("conv_out",). PyTorch stores [out, in, *kernel_size]: see
`torch_conv_weight` / `from_torch_conv_weight` for the transposes used by the weight tables.

All convolutions go through `jax.lax.conv_general_dilated`; inputs may carry extra leading batch
dimensions (e.g. a 2-D conv applied per frame of [B, T, H, W, C] video).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# PyTorch's default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

def _dimension_numbers(nd: int) -> tuple[str, str, str]:
  if not 1 <= nd <= 3:
    raise ValueError(f"Conv supports 1 to 3 spatial dims; got kernel_size of length {nd}")
  spatial = "DHW"[3 - nd:]
  return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def torch_conv_weight(kernel: np.ndarray) -> np.ndarray:
  """Our kernel [*k, in, out] -> PyTorch weight [out, in, *k]."""
  nd = kernel.ndim - 2
  return np.transpose(kernel, (nd + 1, nd) + tuple(range(nd)))


def from_torch_conv_weight(weight: np.ndarray) -> np.ndarray:
  """PyTorch weight [out, in, *k] -> our kernel [*k, in, out]."""
  nd = weight.ndim - 2
  return np.transpose(weight, tuple(range(2, nd + 2)) + (1, 0))


class Conv(nn.Module):
  """N-d convolution over the trailing `len(kernel_size)` spatial dims, channels last.

  x [*batch, *spatial, in] -> [*batch, *spatial', features]. `padding` is "VALID", "SAME" or one
  (low, high) pair per spatial dim.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: Any = "VALID"
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  kernel_init: Any = torch_default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    padding = self.padding if isinstance(self.padding, str) else [tuple(p) for p in self.padding]
    return _conv(self, x, padding)


def _conv(mdl, x: jax.Array, padding) -> jax.Array:
  """Creates `kernel` (and `bias`) in `mdl`'s scope and convolves x, channels last."""
  nd = len(mdl.kernel_size)
  in_features = x.shape[-1]
  kernel = mdl.param(
      "kernel",
      nn.with_logical_partitioning(mdl.kernel_init,
                                   ("conv_kernel",) + (None,) * (nd - 1) + ("conv_in", "conv_out")),
      (*mdl.kernel_size, in_features, mdl.features), mdl.param_dtype)
  batch_shape = x.shape[:-(nd + 1)]
  y = x.reshape((-1,) + x.shape[-(nd + 1):]).astype(mdl.dtype)
  y = jax.lax.conv_general_dilated(
      y, kernel.astype(mdl.dtype),
      window_strides=tuple(mdl.strides or (1,) * nd),
      padding=padding,
      dimension_numbers=_dimension_numbers(nd),
      precision=mdl.precision)
  if mdl.use_bias:
    bias = mdl.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                     (mdl.features,), mdl.param_dtype)
    y = y + bias.astype(mdl.dtype)
  return y.reshape(batch_shape + y.shape[1:])


class CausalConv3d(nn.Module):
  """3-D convolution, causal over time: x [B, T, H, W, in] -> [B, T', H', W', features].

  Time is padded only in front (`time_padding` zeros, default kt - 1, so T' = T at stride 1);
  height/width are padded symmetrically (`spatial_padding`, default k // 2). With `cache`
  [B, c, H, W, in] (the last input frames of the previous chunk) the cache is prepended and only
  max(time_padding - c, 0) zeros are added: a video processed chunk by chunk, passing each chunk
  the previous frames, gives the same result as the whole video at once.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3, 3)
  strides: Sequence[int] = (1, 1, 1)
  time_padding: int | None = None
  spatial_padding: Sequence[int] | None = None
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  kernel_init: Any = torch_default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, cache: jax.Array | None = None) -> jax.Array:
    kt, kh, kw = self.kernel_size
    pt = kt - 1 if self.time_padding is None else self.time_padding
    ph, pw = self.spatial_padding if self.spatial_padding is not None else (kh // 2, kw // 2)
    if cache is not None:
      x = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
      pt = max(pt - cache.shape[1], 0)
    return _conv(self, x, [(pt, 0), (ph, ph), (pw, pw)])
