"""Position tables that are not rotary: Whisper's fixed sinusoids (stored as a parameter, as in the
checkpoints) and learned absolute tables (MBart, offset 2) built on shared.nn.linear.Embed.

  whisper_sinusoids(length, channels) -> [length, channels] float32: [sin(p * w_i) | cos(p * w_i)],
  w_i = exp(-i * log(10000) / (channels / 2 - 1)), i < channels / 2 (transformers' `sinusoids`).
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
