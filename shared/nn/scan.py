"""Scanned layer stacks with an optional remat policy (shared by the encoder/decoder families).

  stack = scan_layers(Layer, cfg, num_layers, in_axes, static_argnum)(cfg)
  h, ys = stack(h, *args)     # Layer.__call__(h, *args) -> (h, y); params stacked [num_layers, ...]
`in_axes`: one entry per argument after the carry (nn.broadcast, or 0 for per-layer slices such as
a KV cache); `static_argnum`: position of the `deterministic` flag in Layer.__call__ counting self
as 0 (kept static under nn.remat). cfg.remat_policy is a name in shared.nn.remat.POLICIES.
"""
from __future__ import annotations

import flax.linen as nn

from shared.nn.remat import remat


def scan_layers(layer_cls, cfg, num_layers: int, in_axes: tuple, static_argnum: int):
  layer_cls = remat(layer_cls, cfg.remat_policy, static_argnums=(static_argnum,))
  return nn.scan(layer_cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=in_axes, length=num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
