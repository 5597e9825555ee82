"""diffusers' 2-D ResNet pieces (models/resnet.py, models/upsampling.py, models/downsampling.py), channels last,
shared by shared.models.autoencoder_kl (no time embedding) and shared.models.unet2d (with one).

  ResnetBlock2D(out_channels, groups, eps, act_fn, use_time_emb, output_scale_factor)(x [B, H, W, Cin], temb [B, T])
      -> [B, H, W, out_channels]:  h = conv1(act(norm1(x))) [+ time_emb_proj(act(temb))[:, None, None]];
      h = conv2(act(norm2(h))); (x, or conv_shortcut(x) 1x1 when Cin != out_channels) + h, / output_scale_factor
  Downsample2D(padding)(x [B, H, W, C]) -> [B, H', W', out_channels]: 3x3 stride-2 `conv`, zero padding `padding`
      on every side (H' = ceil(H / 2) for 1), or for diffusers' padding=0 one row / column on the bottom and right
      only (H' = floor(H / 2))
  Upsample2D()(x [B, h, w, C], size=None) -> [B, H, W, out_channels]: nearest_resize to `size` (2x when None), 3x3 `conv`
  nearest_resize(x, size): torch F.interpolate(mode="nearest") on channels last

Parameter names are diffusers' (norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut; conv), so the families'
name tables map them one to one. Precision: parameters in `param_dtype`, convs / Linear in `dtype` (the compute
dtype), GroupNorm statistics in float32 (shared.nn.norms.GroupNorm); the block's output is in `dtype`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError
from shared.nn.conv import Conv, torch_default_kernel_init
from shared.nn.linear import Dense
from shared.nn.norms import GroupNorm

Dtype = Any


def _mish(x):
  return x * jnp.tanh(jax.nn.softplus(x))


# diffusers.models.activations.ACT2CLS (torch nn.GELU is the exact, erf form)
ACTIVATIONS = {"silu": jax.nn.silu, "swish": jax.nn.silu, "mish": _mish, "relu": jax.nn.relu,
               "gelu": lambda x: jax.nn.gelu(x, approximate=False)}


def conv2d(features: int, k: int, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, stride: int = 1,
           padding=None, name: str | None = None) -> Conv:
  """A k x k Conv (torch Conv2d), `same` padding k // 2 unless `padding` ((top, bottom), (left, right)) is given."""
  pad = ((k // 2, k // 2),) * 2 if padding is None else padding
  return Conv(features, (k, k), strides=(stride, stride), padding=pad, dtype=dtype, param_dtype=param_dtype,
              name=name)


class ResnetBlock2D(nn.Module):
  """diffusers ResnetBlock2D (resnet_time_scale_shift "default", dropout 0, no up/down sampling inside).
  x [B, H, W, Cin], temb [B, T] (only with use_time_emb) -> [B, H, W, out_channels] in `dtype`.
  `out_axes`: logical axes to constrain the output to (None: no constraint)."""
  out_channels: int
  groups: int
  eps: float = 1e-6
  act_fn: str = "silu"
  use_time_emb: bool = False
  output_scale_factor: float = 1.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  out_axes: Sequence[str | None] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
    if (temb is not None) != self.use_time_emb:
      raise ConfigError(f"ResnetBlock2D {self.name}: use_time_emb={self.use_time_emb} but temb is "
                       f"{'given' if temb is not None else 'None'}")
    act = ACTIVATIONS[self.act_fn]
    dt, pdt = self.dtype, self.param_dtype
    gn = lambda name: GroupNorm(self.groups, self.eps, dt, pdt, name=name)  # noqa: E731
    h = conv2d(self.out_channels, 3, dt, pdt, name="conv1")(act(gn("norm1")(x)))
    if self.use_time_emb:
      t = Dense(self.out_channels, True, ("embed", "mlp"), dt, pdt, kernel_init=torch_default_kernel_init,
                name="time_emb_proj")(act(temb.astype(dt)))
      h = h + t[:, None, None, :]
    h = conv2d(self.out_channels, 3, dt, pdt, name="conv2")(act(gn("norm2")(h)))
    skip = x.astype(dt)
    if x.shape[-1] != self.out_channels:
      skip = conv2d(self.out_channels, 1, dt, pdt, name="conv_shortcut")(skip)
    out = skip + h
    if self.output_scale_factor != 1.0:
      out = out / jnp.asarray(self.output_scale_factor, dt)
    if self.out_axes is not None:
      out = nn.with_logical_constraint(out, tuple(self.out_axes))
    return out


class Downsample2D(nn.Module):
  """diffusers Downsample2D(use_conv=True): 3x3 stride-2 `conv` to out_channels (default: the input's channels).
  padding p > 0 pads p on every side; p = 0 pads only right / bottom by one (diffusers pads (0, 1, 0, 1) then)."""
  out_channels: int | None = None
  padding: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.padding
    pad = ((p, p), (p, p)) if p > 0 else ((0, 1), (0, 1))
    return conv2d(self.out_channels or x.shape[-1], 3, self.dtype, self.param_dtype, stride=2, padding=pad,
                  name="conv")(x)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch F.interpolate(mode="nearest") of channels-last x [B, h, w, C] to [B, H, W, C] (static shapes):
  source index floor(i * h / H); an exact 2x is a repeat."""
  for axis, (n_in, n_out) in ((1, (x.shape[1], size[0])), (2, (x.shape[2], size[1]))):
    if n_out == 2 * n_in:
      x = jnp.repeat(x, 2, axis=axis)
    elif n_out != n_in:
      x = jnp.take(x, jnp.asarray((np.arange(n_out) * n_in) // n_out, jnp.int32), axis=axis)
  return x


class Upsample2D(nn.Module):
  """diffusers Upsample2D(use_conv=True): nearest upsampling to `size` (H, W) (2x when None; diffusers'
  upsample_size, e.g. a UNet skip's odd size), then a 3x3 `conv` to out_channels (default: the input's)."""
  out_channels: int | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
    size = (2 * x.shape[1], 2 * x.shape[2]) if size is None else size
    return conv2d(self.out_channels or x.shape[-1], 3, self.dtype, self.param_dtype, name="conv")(
        nearest_resize(x, size))
