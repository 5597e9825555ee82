"""Attention and convolution kernels, and the dispatcher that picks an implementation.

`attention(q, k, v, *, bias, mask, segment_ids, causal, scale, implementation)` with q [B, Lq, H, D],
k/v [B, Lk, Hkv, D] is the one entry point every model calls. Implementations: "xla" (reference),
and as they land "cudnn", "pallas", "splash"; "auto" picks the fastest that supports the call.
"""
from __future__ import annotations

from shared.kernels import xla as _xla

IMPLEMENTATIONS = ("xla",)


def attention(q, k, v, *, bias=None, mask=None, segment_ids=None, causal=False, scale=None,
              causal_offset: int = 0, implementation: str = "auto"):
  """Multi-head / grouped-query attention. Returns [B, Lq, H, D] in q.dtype. See shared/kernels/xla.py."""
  if implementation not in ("auto",) + IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"expected one of {('auto',) + IMPLEMENTATIONS}")
  return _xla.attention(q, k, v, bias=bias, mask=mask, segment_ids=segment_ids, causal=causal,
                        scale=scale, causal_offset=causal_offset)
