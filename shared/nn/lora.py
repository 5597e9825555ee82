"""LoRA: low-rank updates on any Dense selected by module name, and merge/unmerge on param trees.

A `LoraConfig` is passed down to every `shared.nn.linear.Dense`; a Dense whose module name is in
`targets` (e.g. ("q_proj", "v_proj"), the same names peft's `target_modules` uses) gets two extra
parameters next to its kernel: lora_a [in, rank] and lora_b [rank, out] (zero at init), and computes
    y = x @ kernel + dropout(x) @ lora_a @ lora_b * scale,   scale = alpha / rank  (alpha / sqrt(rank) with rslora).
Stacked (scanned) layers simply carry a leading layers axis on all three, handled by the helpers below.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax.numpy as jnp
from flax import traverse_util


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = ("q_proj", "v_proj")
  use_rslora: bool = False

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))

  @property
  def scale(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

  def applies_to(self, module_name: str | None) -> bool:
    return module_name is not None and module_name in self.targets


def is_lora_path(path: Sequence[str]) -> bool:
  return path[-1] in ("lora_a", "lora_b")


def lora_mask(params) -> Any:
  """A tree like `params` with True on LoRA leaves (for optax.masked / multi_transform)."""
  flat = traverse_util.flatten_dict(_unbox(params))
  return traverse_util.unflatten_dict({k: is_lora_path(k) for k in flat})


def _unbox(tree):
  import flax.linen as nn
  return nn.meta.unbox(tree)


def _delta(a, b, scale):
  return jnp.einsum("...ir,...ro->...io", a.astype(jnp.float32), b.astype(jnp.float32)) * scale


def merge(params, config: LoraConfig, keep_lora: bool = False):
  """kernel += lora_a @ lora_b * scale for every LoRA'd Dense; drops the LoRA leaves unless keep_lora."""
  flat = traverse_util.flatten_dict(_unbox(params))
  out = {}
  for k, v in flat.items():
    if is_lora_path(k):
      if keep_lora:
        out[k] = v
      continue
    if k[-1] == "kernel" and k[:-1] + ("lora_a",) in flat:
      d = _delta(flat[k[:-1] + ("lora_a",)], flat[k[:-1] + ("lora_b",)], config.scale)
      v = (v.astype(jnp.float32) + d).astype(v.dtype)
    out[k] = v
  return traverse_util.unflatten_dict(out)


def unmerge(params, config: LoraConfig):
  """Inverse of merge(..., keep_lora=True): kernel -= lora_a @ lora_b * scale."""
  flat = traverse_util.flatten_dict(_unbox(params))
  out = {}
  for k, v in flat.items():
    if k[-1] == "kernel" and k[:-1] + ("lora_a",) in flat:
      d = _delta(flat[k[:-1] + ("lora_a",)], flat[k[:-1] + ("lora_b",)], config.scale)
      v = (v.astype(jnp.float32) - d).astype(v.dtype)
    out[k] = v
  return traverse_util.unflatten_dict(out)


def split(params):
  """-> (lora_params, base_params): two disjoint flat-path trees whose union is `params`."""
  flat = traverse_util.flatten_dict(_unbox(params))
  lora = {k: v for k, v in flat.items() if is_lora_path(k)}
  base = {k: v for k, v in flat.items() if not is_lora_path(k)}
  return traverse_util.unflatten_dict(lora), traverse_util.unflatten_dict(base)


def combine(*trees):
  """Union of disjoint param trees (inverse of split)."""
  out = {}
  for t in trees:
    out.update(traverse_util.flatten_dict(_unbox(t)))
  return traverse_util.unflatten_dict(out)
