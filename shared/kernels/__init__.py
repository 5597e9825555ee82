"""Attention and convolution kernels, and the dispatcher that picks an implementation.

`attention(q, k, v, *, bias, mask, segment_ids, causal, scale, causal_offset, implementation, block_mask)`
with q [B, Lq, H, D], k/v [B, Lk, Hkv, D] is the one entry point every model calls (semantics:
shared/kernels/xla.py). Implementations: "xla", "xla_chunked", "cudnn", "pallas", "splash"; "auto"
picks by backend, shape and mask (shared/kernels/dispatch.py). Block masks (`block_mask.tv2a`,
`block_mask.prefix_causal`, ...) let kernels skip fully masked tiles; other paths use their dense form.
`temporal_conv.temporal_conv` is the fused depthwise temporal convolution + residual (SANM FSMN memory block).
"""
from __future__ import annotations

from shared.kernels import block_mask
from shared.kernels import dispatch as _dispatch
from shared.kernels.block_mask import BlockMask
from shared.kernels.dispatch import IMPLEMENTATIONS
from shared.kernels import temporal_conv  # module: temporal_conv.temporal_conv(x, w, left=...)

__all__ = ["attention", "BlockMask", "block_mask", "IMPLEMENTATIONS", "temporal_conv", "chosen_implementation"]


def chosen_implementation(q, k, *, bias=None, mask=None, segment_ids=None, causal=False, causal_offset=0,
                          implementation: str = "auto", block_mask=None) -> str:
  """The implementation `attention` would use first for this call (after up-front refusals)."""
  call = _dispatch.describe(q, k, bias=bias, mask=mask, segment_ids=segment_ids, causal=causal,
                            causal_offset=causal_offset, block_mask=block_mask)
  return _dispatch.choose(call, implementation)[0]


def attention(q, k, v, *, bias=None, mask=None, segment_ids=None, causal=False, scale=None,
              causal_offset: int = 0, implementation: str = "auto", block_mask: BlockMask | None = None):
  """Multi-head / grouped-query attention. Returns [B, Lq, H, D] in q.dtype. See shared/kernels/xla.py.

  block_mask: a BlockMask over (Lq, Lk), ANDed with mask / segment_ids / causal.
  """
  call = _dispatch.describe(q, k, bias=bias, mask=mask, segment_ids=segment_ids, causal=causal,
                            causal_offset=causal_offset, block_mask=block_mask)
  order = _dispatch.choose(call, implementation)
  kw = dict(bias=bias, mask=mask, segment_ids=segment_ids, causal=causal, scale=scale,
            causal_offset=causal_offset, block_mask=block_mask)
  for impl in order[:-1]:
    try:
      return _dispatch.run(impl, q, k, v, **kw)
    except Exception as e:  # noqa: BLE001 -- a refusal at trace time: fall through, say why once
      _dispatch.log_once((impl, type(e).__name__), f"attention: {impl!r} failed at trace time "
                         f"({type(e).__name__}: {str(e)[:300]}); falling back to {order[-1]!r}")
  return _dispatch.run(order[-1], q, k, v, **kw)
