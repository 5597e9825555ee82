"""Tiny Transformer encoder with logical-axis annotations and scanned, rematerialisable blocks."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared import kernels

REMAT = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
}


def _param(mod, name, shape, axes, init=nn.initializers.lecun_normal()):
  return mod.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Block(nn.Module):
  dim: int
  heads: int
  mlp: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, _=None):
    """x [B, L, D] -> [B, L, D]."""
    b, l, d = x.shape
    hd = d // self.heads
    ln = lambda name: nn.LayerNorm(name=name, dtype=jnp.float32, param_dtype=jnp.float32,
                                   scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))
    h = ln("ln1")(x).astype(self.dtype)
    wqkv = _param(self, "qkv", (d, 3, self.heads, hd), ("embed", None, "heads", "kv"))
    qkv = jnp.einsum("bld,dthk->blthk", h, wqkv.astype(self.dtype))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    a = kernels.attention(q, k, v)
    wo = _param(self, "out", (self.heads, hd, d), ("heads", "kv", "embed"))
    a = jnp.einsum("blhk,hkd->bld", a, wo.astype(self.dtype))
    x = x + a.astype(x.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    h = ln("ln2")(x).astype(self.dtype)
    h = nn.gelu(h @ _param(self, "fc1", (d, self.mlp), ("embed", "mlp")).astype(self.dtype))
    h = nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))
    x = x + (h @ _param(self, "fc2", (self.mlp, d), ("mlp", "embed")).astype(self.dtype)).astype(x.dtype)
    return x, None


class SortTransformer(nn.Module):
  """tokens [B, L] int32 -> logits [B, L, vocab] float32."""
  vocab: int
  length: int
  dim: int
  heads: int
  layers: int
  mlp: int
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, tokens):
    emb = self.param("embed", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
                     (self.vocab, self.dim), jnp.float32)
    pos = self.param("pos", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
                     (self.length, self.dim), jnp.float32)
    x = jnp.take(emb, tokens, axis=0) + pos[None, : tokens.shape[1]]
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    block = Block
    if REMAT[self.remat] is not None:
      block = nn.remat(Block, policy=REMAT[self.remat], prevent_cse=False)
    stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    x, _ = stack(self.dim, self.heads, self.mlp, self.dtype, name="blocks")(x, None)
    x = nn.LayerNorm(name="ln_f", dtype=jnp.float32, param_dtype=jnp.float32)(x)
    return jnp.einsum("bld,vd->blv", x, emb, preferred_element_type=jnp.float32)
