"""Rotary position embeddings: frequencies, angles, and application to [B, L, H, D] tensors.

  freqs = inv_freq(rot_dim, theta, scaling)      # [rot_dim // 2] numpy float32 (llama3/linear scaling)
  ang   = angles(positions [B, L], freqs)        # [B, L, rot_dim // 2]   (1-D; `scale` for audio)
  ang   = multi_axis_angles(pos [B, L, 3], dims=(44, 42, 42), theta)   # video t/h/w (Wan style)
  y     = apply_rotary(x [B, L, H, D], ang, interleaved=False)
The first 2 * ang.shape[-1] channels of x are rotated (partial rotary); the rest pass through.
interleaved=False: HF "rotate_half" (pairs (i, i + rot/2)); True: adjacent pairs (2i, 2i+1) (Wan, GPT-J).
Angles and the rotation are computed in float32; the output has x's dtype.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError


def inv_freq(dim: int, theta: float = 10000.0, scaling: Mapping[str, Any] | None = None) -> np.ndarray:
  """Inverse frequencies [dim // 2] for a rotary dimension `dim` (even).

  scaling: None / {"rope_type": "default"}; {"rope_type": "linear", "factor"};
  {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
   "original_max_position_embeddings"} (transformers' _compute_llama3_parameters semantics).
  """
  if dim % 2:
    raise ConfigError(f"rotary dimension must be even, got {dim}")
  f = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
  f = f.astype(np.float32)
  kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
  if kind == "default":
    return f
  if kind == "linear":
    return (f / np.float32(scaling["factor"])).astype(np.float32)
  if kind == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wl, high_wl = old / low, old / high
    wavelen = 2 * math.pi / f
    out = np.where(wavelen > low_wl, f / factor, f).astype(np.float32)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, out).astype(np.float32)
  raise ConfigError(f"unsupported rope_type {kind!r}; expected default, linear or llama3")


def angles(positions, freqs, scale: float = 1.0):
  """positions [B, L] (int or float) -> [B, L, len(freqs)] float32. `scale` multiplies positions
  (e.g. audio latents at a different frame rate mapped onto the video time axis)."""
  pos = jnp.asarray(positions, jnp.float32) * scale
  return pos[..., None] * jnp.asarray(freqs, jnp.float32)


def multi_axis_angles(positions, dims: Sequence[int], theta: float = 10000.0, scales: Sequence[float] | None = None):
  """positions [B, L, A] (one coordinate per axis, e.g. t/h/w) -> [B, L, sum(dims) // 2].

  Axis a uses its own inverse frequencies over dims[a] channels (Wan: head_dim 128 -> (44, 42, 42))."""
  if positions.shape[-1] != len(dims):
    raise ConfigError(f"positions have {positions.shape[-1]} axes but dims {tuple(dims)} name {len(dims)}")
  scales = scales or (1.0,) * len(dims)
  parts = [angles(positions[..., a], inv_freq(d, theta), scales[a]) for a, d in enumerate(dims)]
  return jnp.concatenate(parts, axis=-1)


def apply_rotary(x, ang, interleaved: bool = False):
  """x [B, L, H, D], ang [B, L, R] with 2R <= D -> rotated x (first 2R channels), dtype of x."""
  r2 = 2 * ang.shape[-1]
  if r2 > x.shape[-1]:
    raise ConfigError(f"rotary needs {r2} channels but head_dim is {x.shape[-1]}")
  xf = x.astype(jnp.float32)
  rot, rest = xf[..., :r2], xf[..., r2:]
  cos = jnp.cos(ang)[:, :, None, :]
  sin = jnp.sin(ang)[:, :, None, :]
  if interleaved:
    x1, x2 = rot[..., 0::2], rot[..., 1::2]
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(rot.shape)
  else:
    half = r2 // 2
    x1, x2 = rot[..., :half], rot[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return jnp.concatenate([out, rest], axis=-1).astype(x.dtype)
