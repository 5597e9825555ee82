"""Reference attention in plain XLA ops: the semantics every other implementation must match.

Shapes: q [B, Lq, H, D]; k, v [B, Lk, Hkv, D] with H % Hkv == 0 (grouped queries).
Softmax is computed in float32 whatever the input dtype; the output has q's dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so fully masked rows give zeros-weighted averages rather than NaN


def combine_masks(*, batch: int, heads: int, q_len: int, kv_len: int, mask=None, segment_ids=None,
                  causal: bool = False, causal_offset: int = 0):
  """Returns a bool mask broadcastable to [B, H, Lq, Lk] (True = may attend), or None.

  segment_ids: int [B, L] (same for q and kv) or a pair (q_segment_ids [B, Lq], kv_segment_ids [B, Lk]).
  causal_offset: position of query 0 within the key sequence (KV-cache decoding: kv_len - q_len).
  """
  out = None
  if mask is not None:
    out = jnp.asarray(mask, bool)
  if segment_ids is not None:
    q_seg, kv_seg = segment_ids if isinstance(segment_ids, (tuple, list)) else (segment_ids, segment_ids)
    seg = q_seg[:, None, :, None] == kv_seg[:, None, None, :]
    out = seg if out is None else out & seg
  if causal:
    qi = jnp.arange(q_len)[:, None] + causal_offset
    ki = jnp.arange(kv_len)[None, :]
    c = (ki <= qi)[None, None]
    out = c if out is None else out & c
  return out


def attention(q, k, v, *, bias=None, mask=None, segment_ids=None, causal=False, scale=None,
              causal_offset: int = 0, block_mask=None, _q_start=0):
  """softmax(q k^T * scale + bias, masked) v.  Returns [B, Lq, H, D] in q.dtype.

  block_mask: optional shared.kernels.block_mask.BlockMask, ANDed with the other masks.
  """
  b, lq, h, d = q.shape
  lk, hkv = k.shape[1], k.shape[2]
  if h % hkv:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {hkv}")
  g = h // hkv
  scale = d ** -0.5 if scale is None else scale
  qg = q.reshape(b, lq, hkv, g, d)
  logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32)
  logits = logits.reshape(b, h, lq, lk) * scale
  if bias is not None:
    logits = logits + jnp.asarray(bias, jnp.float32)
  m = combine_masks(batch=b, heads=h, q_len=lq, kv_len=lk, mask=mask, segment_ids=segment_ids,
                    causal=causal, causal_offset=causal_offset)
  if block_mask is not None:  # rows _q_start.. of the block mask (chunked callers pass their offset)
    rows = block_mask.rows(_q_start, lq)[None, None]
    m = rows if m is None else m & rows
  if m is not None:
    logits = jnp.where(m, logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1)
  if m is not None:  # rows with no visible key give zeros, not a uniform average
    probs = jnp.where(jnp.any(m, axis=-1, keepdims=True), probs, 0.0)
  probs = probs.reshape(b, hkv, g, lq, lk).astype(v.dtype)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, lq, h, d).astype(q.dtype)


def _split_rows(x, lq: int, n: int, c: int):
  """x broadcastable to [B, H, Lq, Lk] -> [n, ...] query chunks (rows padded), or x itself if no row dim."""
  if x is None:
    return None, False
  x = jnp.asarray(x)
  x = x.reshape((1,) * (4 - x.ndim) + x.shape)
  if x.shape[-2] == 1:
    return x, False
  x = jnp.pad(x, ((0, 0), (0, 0), (0, n * c - lq), (0, 0)))
  x = x.reshape(x.shape[:2] + (n, c, x.shape[-1]))
  return jnp.moveaxis(x, 2, 0), True


def attention_chunked(q, k, v, *, bias=None, mask=None, segment_ids=None, causal=False, scale=None,
                      causal_offset: int = 0, block_mask=None, chunk_size: int = 512):
  """`attention` over query chunks of `chunk_size` (lax.map + remat): O(chunk · Lk) memory, same values.

  For long sequences on CPU (and any backend without a fused kernel). Shapes as in `attention`.
  """
  b, lq, h, d = q.shape
  if lq <= chunk_size:
    return attention(q, k, v, bias=bias, mask=mask, segment_ids=segment_ids, causal=causal, scale=scale,
                     causal_offset=causal_offset, block_mask=block_mask)
  n = -(-lq // chunk_size)
  c = chunk_size
  qc = jnp.pad(q, ((0, 0), (0, n * c - lq), (0, 0), (0, 0))).reshape(b, n, c, h, d).swapaxes(0, 1)
  q_seg = kv_seg = None
  if segment_ids is not None:
    q_seg, kv_seg = segment_ids if isinstance(segment_ids, (tuple, list)) else (segment_ids, segment_ids)
    q_seg = jnp.pad(q_seg, ((0, 0), (0, n * c - lq)), constant_values=-1).reshape(b, n, c).swapaxes(0, 1)
  mask_c, mask_split = _split_rows(mask, lq, n, c)
  bias_c, bias_split = _split_rows(bias, lq, n, c)

  @jax.checkpoint
  def one(xs):
    i, qi, segi, mi, bi = xs
    return attention(qi, k, v, bias=bi if bias_split else bias_c, mask=mi if mask_split else mask_c,
                     segment_ids=None if segi is None else (segi, kv_seg), causal=causal, scale=scale,
                     causal_offset=causal_offset + i * c, block_mask=block_mask, _q_start=i * c)

  xs = (jnp.arange(n), qc, q_seg, mask_c if mask_split else None, bias_c if bias_split else None)
  out = jax.lax.map(one, xs)  # [n, B, c, H, D]
  return out.swapaxes(0, 1).reshape(b, n * c, h, d)[:, :lq]
