"""Position tables that are not rotary: Whisper's fixed sinusoids (stored as a parameter, as in the
checkpoints), diffusers' sinusoidal timestep embedding, and learned absolute tables (MBart, offset 2) built on
shared.nn.linear.Embed.

  whisper_sinusoids(length, channels) -> [length, channels] float32: [sin(p * w_i) | cos(p * w_i)],
  w_i = exp(-i * log(10000) / (channels / 2 - 1)), i < channels / 2 (transformers' `sinusoids`).
  timestep_embedding(t [...], dim, ...) -> [..., dim] float32: diffusers' get_timestep_embedding / `Timesteps`
  (UNet2DConditionModel, Wan's WanTransformer3DModel via shared.models.wan_dit.timestep_sinusoid).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  if channels % 2:
    raise ConfigError(f"sinusoidal positions need an even number of channels, got {channels}")
  inc = math.log(max_timescale) / (channels // 2 - 1)
  inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float32))
  t = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
  return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def sinusoid_init(key, shape, dtype=jnp.float32):
  """Flax initializer for a [length, channels] table (the key is unused: the table is fixed)."""
  del key
  return jnp.asarray(whisper_sinusoids(shape[0], shape[1]), dtype)


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, scale: float = 1.0,
                       max_period: float = 10000.0):
  """diffusers get_timestep_embedding (what its `Timesteps(dim, flip_sin_to_cos, downscale_freq_shift)` module
  calls): t [...] (any shape; diffusers takes [B]) -> [..., dim] float32.
  angles = scale * t * w_i, w_i = exp(-log(max_period) * i / (dim // 2 - freq_shift)), i < dim // 2;
  [sin | cos], or [cos | sin] with flip_sin_to_cos; a zero column appended when dim is odd.
  The defaults are the usual UNet / DiT settings (flip, shift 0); get_timestep_embedding's own are flip False,
  shift 1, so pass both when porting a call."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  ang = jnp.asarray(t, jnp.float32)[..., None] * freqs
  if scale != 1:
    ang = scale * ang
  sin, cos = jnp.sin(ang), jnp.cos(ang)
  out = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  return jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, dim % 2)])
