"""Prompt assembly for LLM systems: [instruction, modality embeddings, target] per row, batched.

  batch = assemble(instr_emb [B, Li, E], instr_len [B], mod_emb [B, Lm, E], mod_len [B],
                   target_emb [B, Lt, E], target_ids [B, Lt], target_len [B], pad_side="right")
  -> {"inputs_embeds" [B, L, E], "attention_mask" [B, L] int32, "labels" [B, L] int32 (-100 outside the
      target), "positions" [B, L] int32}, L = Li + Lm + Lt.
Each row's three segments are packed back to back (no gaps) and padded on `pad_side`: "right" for
training (labels are aligned with inputs, the loss compares logits[:, :-1] with labels[:, 1:]), "left"
for generation (no target: pass Lt = 0 arrays). Pure jnp (jit-able), no Python loop over rows.
"""
from __future__ import annotations

import jax.numpy as jnp

IGNORE = -100


def _take(x, idx):
  """x [B, L, ...], idx [B, M] (clipped) -> [B, M, ...]."""
  idx = jnp.clip(idx, 0, max(x.shape[1] - 1, 0))
  return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def assemble(instr_emb, instr_len, mod_emb, mod_len, target_emb=None, target_ids=None, target_len=None, *,
             pad_side: str = "right"):
  b, li, e = instr_emb.shape
  lm = mod_emb.shape[1]
  if target_emb is None:
    target_emb = jnp.zeros((b, 0, e), instr_emb.dtype)
    target_ids = jnp.zeros((b, 0), jnp.int32)
    target_len = jnp.zeros((b,), jnp.int32)
  lt = target_emb.shape[1]
  total_len = li + lm + lt
  a = jnp.asarray(instr_len, jnp.int32)[:, None]
  m = a + jnp.asarray(mod_len, jnp.int32)[:, None]
  c = m + jnp.asarray(target_len, jnp.int32)[:, None]
  j = jnp.broadcast_to(jnp.arange(total_len, dtype=jnp.int32)[None], (b, total_len))
  if pad_side == "left":
    j = j - (total_len - c)
  elif pad_side != "right":
    from shared.errors import ConfigError
    raise ConfigError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
  in_i, in_m, in_t = (j >= 0) & (j < a), (j >= a) & (j < m), (j >= m) & (j < c)
  valid = (j >= 0) & (j < c)
  dt = jnp.result_type(instr_emb.dtype, mod_emb.dtype)
  emb = jnp.where(in_i[..., None], _take(instr_emb, j).astype(dt), 0)
  emb = jnp.where(in_m[..., None], _take(mod_emb, j - a).astype(dt), emb)
  if lt:
    emb = jnp.where(in_t[..., None], _take(target_emb, j - m).astype(dt), emb)
    labels = jnp.where(in_t, _take(jnp.asarray(target_ids, jnp.int32), j - m), IGNORE)
  else:
    labels = jnp.full((b, total_len), IGNORE, jnp.int32)
  return {"inputs_embeds": emb, "attention_mask": valid.astype(jnp.int32), "labels": labels.astype(jnp.int32),
          "positions": jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)}


def lm_loss(logits, labels):
  """Mean next-token cross-entropy (float32) over label positions != -100: logits[:, :-1] vs labels[:, 1:]."""
  import jax
  lg = logits[:, :-1].astype(jnp.float32)
  lb = labels[:, 1:]
  mask = lb != IGNORE
  nll = -jnp.take_along_axis(jax.nn.log_softmax(lg), jnp.where(mask, lb, 0)[..., None], -1)[..., 0]
  return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1)
