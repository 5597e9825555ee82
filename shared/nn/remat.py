"""The one table of remat (activation checkpointing) policies, and the names activations carry for them.

  policy = remat_policy(cfg.remat_policy)            # a jax.checkpoint policy, or None = no remat
  check_remat_policy(name, key="remat_policy")       # ConfigError naming the key and the valid names
  Layer = remat(Layer, cfg.remat_policy, static_argnums=(k,))   # Layer itself for "none"

`trainer.remat` (shared.config) and every model config's `remat_policy` take the same names:
  none                              no remat: the backward pass keeps every activation it needs
  full | nothing | nothing_saveable  keep only each block's inputs, recompute the rest (jax's default)
  dots | dots_saveable              keep matmul outputs, recompute the elementwise ops (the same policy:
                                    jax.checkpoint_policies.checkpoint_dots is dots_saveable)
  dots_no_batch                     keep matmul outputs without batch dimensions (projections and MLPs,
                                    not attention scores)
  save_attention_out                keep only ATTENTION_OUT activations
  save_residual                     keep only RESIDUAL activations
  save_attention_out_and_residual   keep both
  offload_residual                  keep ATTENTION_OUT on the device, move RESIDUAL to pinned host memory

Names given with jax.ad_checkpoint.checkpoint_name by the shared blocks (a name policy keeps them):
  ATTENTION_OUT "attention_out"  the attention kernel's output [B, L, H, Dh] (or [B, L, H*Dh]), before the
      output projection, whose weight gradient needs it: shared.nn.attention.Attention,
      shared.nn.mha.MultiHeadAttention, shared.models.wan_dit WanAttention (cross-attention) and
      WanBlock.post_attention (self-attention; also UniTalking's joint attention). Keeping it spares the
      recomputation of the attention-weighted values; the scores are recomputed for dq/dk/dv.
  RESIDUAL "residual"  the residual stream [B, L, D] after each sub-block (self-attention, cross-attention,
      MLP) of shared.models.llm.DecoderLayer, mbart Encoder/DecoderLayer, umt5 UMT5Layer, whisper
      WhisperLayer and wan_dit WanBlock. (A scanned block's output is the next block's input, which the
      scan keeps anyway; the names matter for the residuals inside a block.)
"""
from __future__ import annotations

import flax.linen as nn
import jax
from jax.ad_checkpoint import checkpoint_name  # noqa: F401  (re-exported for the blocks)

from shared.errors import ConfigError

ATTENTION_OUT = "attention_out"
RESIDUAL = "residual"
NAMES = (ATTENTION_OUT, RESIDUAL)

_cp = jax.checkpoint_policies

POLICIES = {
    "none": None,
    "full": _cp.nothing_saveable,
    "nothing": _cp.nothing_saveable,
    "nothing_saveable": _cp.nothing_saveable,
    "dots": _cp.checkpoint_dots,
    "dots_saveable": _cp.dots_saveable,
    "dots_no_batch": _cp.dots_with_no_batch_dims_saveable,
    "save_attention_out": _cp.save_only_these_names(ATTENTION_OUT),
    "save_residual": _cp.save_only_these_names(RESIDUAL),
    "save_attention_out_and_residual": _cp.save_only_these_names(ATTENTION_OUT, RESIDUAL),
    "offload_residual": _cp.save_and_offload_only_these_names(
        names_which_can_be_saved=[ATTENTION_OUT], names_which_can_be_offloaded=[RESIDUAL],
        offload_src="device", offload_dst="pinned_host"),
}


def check_remat_policy(name, key: str = "remat_policy") -> None:
  """Raises ConfigError naming `key` and the valid names unless `name` is a key of POLICIES."""
  if not isinstance(name, str) or name not in POLICIES:
    raise ConfigError(f"config key {key} = {name!r}: expected one of {tuple(POLICIES)}")


def remat_policy(name: str, key: str = "remat_policy"):
  """name -> a jax.checkpoint policy, or None for "none" (no remat)."""
  check_remat_policy(name, key)
  return POLICIES[name]


def remat(module_cls, name: str, **kw):
  """module_cls itself for "none", else nn.remat(module_cls, policy=..., prevent_cse=False, **kw)
  (kw: e.g. static_argnums=(k,) for a `deterministic` flag, counting self as 0)."""
  policy = remat_policy(name)
  if policy is None:
    return module_cls
  return nn.remat(module_cls, policy=policy, prevent_cse=False, **kw)
