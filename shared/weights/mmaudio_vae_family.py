"""MMAudio VAE <-> its PyTorch checkpoint (v1-16.pth / v1-44.pth: a plain VAE state_dict).

A row reads
  our  encoder/down_1/block_0/nin_shortcut/weight [k, in, out]
  their  encoder.down.1.block.0.nin_shortcut.weight [out, in, k]
  our  decoder/mid/attn_1/qkv/weight  <->  their  decoder.mid.attn_1.qkv.weight   (mid names keep "_1")
  our  encoder/learnable_gain []      <->  their  encoder.learnable_gain []
The checkpoints hold the raw MPConv1D weights (MMAudio normalises them in remove_weight_norm() after
loading; our MPConv1D normalises in its forward), so weights transfer unchanged both ways. The
persistent buffers data_mean / data_std [1, data_dim, 1] exist for 80 and 128 mels only: import checks
them against the config's statistics, export writes them.

Entry points: `import_mmaudio_vae(state_dict, config)`, `export_mmaudio_vae(params, config)`,
`load_mmaudio_vae(path, config)` (.safetensors or a torch .pth/.pt via torch.load(weights_only=True)).
The checkpoints carry no config.json, so this family is not in the shared.weights registry.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError
from shared.models.mmaudio_vae import MMAudioVAE, MMAudioVAEConfig, init_params
from shared.weights import io, table
from shared.weights.io import to_numpy
from shared.weights.table import IDENTITY, Row

CONV = table.transpose((2, 1, 0), "conv1d")   # [out, in, k] -> [k, in, out]
STAT_KEYS = ("data_mean", "data_std")


@functools.lru_cache(maxsize=16)
def param_shapes(config: MMAudioVAEConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(lambda: init_params(MMAudioVAE(config), jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _their_key(path: tuple[str, ...]) -> str:
  parts = []
  for i, p in enumerate(path):
    parts.append(p if i > 0 and path[i - 1] == "mid" else re.sub(r"^(down|up|block|attn)_(\d+)$", r"\1.\2", p))
  return ".".join(parts)


def name_table(config: MMAudioVAEConfig) -> list[Row]:
  return [Row("/".join(path), _their_key(path), CONV if path[-1] == "weight" else IDENTITY)
          for path in sorted(param_shapes(config))]


def buffers(config: MMAudioVAEConfig) -> dict[str, np.ndarray]:
  """data_mean / data_std [1, data_dim, 1] as MMAudio's VAE registers them (80 or 128 mels only)."""
  if not config.has_stat_buffers:
    return {}
  return {k: v.reshape(1, -1, 1) for k, v in zip(STAT_KEYS, config.stats())}


def import_mmaudio_vae(state_dict: dict[str, Any], config: MMAudioVAEConfig, *, dtype=jnp.float32) -> dict:
  """MMAudio VAE state_dict -> our params (strict: every key read, every param set, stats checked)."""
  want = buffers(config)
  missing = [k for k in want if k not in state_dict]
  unexpected = [k for k in STAT_KEYS if k in state_dict and k not in want]
  if missing or unexpected:
    raise CheckpointError(f"MMAudio VAE state_dict: missing keys {missing}, unexpected keys {unexpected} "
                          f"(data_dim={config.data_dim}; the stat buffers exist for 80 and 128 mels only)")
  for k, v in want.items():
    got = to_numpy(state_dict[k])
    if got.size != v.size or not np.allclose(got.reshape(v.shape), v, atol=1e-5):
      raise CheckpointError(f"MMAudio VAE state_dict key {k} {tuple(got.shape)} differs from the config's "
                            f"mel statistics {v.shape}; pass them as MMAudioVAEConfig({k}=...)")
  return table.import_params(name_table(config), io.StateDictReader(state_dict), param_shapes(config), dtype,
                             "MMAudio VAE state_dict", ignore=[re.escape(k) for k in want])


def export_mmaudio_vae(params: dict, config: MMAudioVAEConfig, *, dtype=np.float32) -> dict[str, np.ndarray]:
  """Our params -> MMAudio VAE state_dict of numpy arrays (load_state_dict(strict=True) accepts it)."""
  out = table.export_state_dict(name_table(config), params, param_shapes(config), "the MMAudio VAE", dtype)
  out.update({k: v.astype(dtype) for k, v in buffers(config).items()})
  return out


def load_mmaudio_vae(path: str, config: MMAudioVAEConfig, *, dtype=jnp.float32,
                     compute_dtype=jnp.float32) -> tuple[MMAudioVAE, dict]:
  """A weights file (.safetensors, or .pth/.pt read with torch.load(weights_only=True)) -> (model, params)."""
  return MMAudioVAE(config, dtype=compute_dtype), import_mmaudio_vae(io.read_state_dict(path), config, dtype=dtype)
