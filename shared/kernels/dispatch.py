"""Choosing an attention implementation per call, with logged fallbacks.

Implementations:
  "xla"          reference einsum/softmax (shared/kernels/xla.py), every backend, every feature.
  "xla_chunked"  the same over query chunks (lax.map + remat): long sequences in bounded memory.
  "cudnn"        jax.nn.dot_product_attention(implementation="cudnn"): GPU, bf16/fp16, head_dim % 8 == 0
                 and <= 256; no segment ids, dense masks, block masks or causal offsets here.
  "pallas"       ours (shared/kernels/flash_attention.py): GPU (Triton), TPU (Mosaic) and CPU (interpret
                 mode, only when asked for by name); bias and dense masks are not supported (block masks are).
  "splash"       jax.experimental.pallas.ops.tpu.splash_attention: TPU; lengths multiples of 128, no bias
                 or dense masks; block masks become splash NumpyMasks.

"auto": CPU -> xla (xla_chunked when the logits would exceed ~512 MB); GPU -> cudnn, then pallas, then
xla; TPU -> splash, then pallas, then xla. An implementation that cannot take a call (checked up front, and by
catching a trace-time error) hands it to the next candidate, logging why once per (implementation,
reason). GPU/TPU paths were written against the jax APIs but not run on hardware in this repository.
"""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from shared.kernels import xla as _xla

log = logging.getLogger("shared.kernels")
IMPLEMENTATIONS = ("xla", "xla_chunked", "cudnn", "pallas", "splash")
CHUNK_THRESHOLD = 1 << 27  # logits elements (float32) above which CPU "auto" chunks the queries
_logged: set = set()


def log_once(key, message: str) -> None:
  if key not in _logged:
    _logged.add(key)
    log.warning(message)


@dataclasses.dataclass(frozen=True)
class Call:
  """What an implementation needs to know to accept or refuse a call."""
  backend: str
  batch: int
  heads: int
  kv_heads: int
  q_len: int
  kv_len: int
  head_dim: int
  dtype: str
  bias: bool
  mask: bool
  segment_ids: bool
  causal: bool
  causal_offset: int
  block_mask: bool


def refusal(impl: str, call: Call, *, explicit: bool) -> str | None:
  """None if `impl` can take `call`, else the reason it cannot."""
  if impl in ("xla", "xla_chunked"):
    return None
  if impl == "cudnn":
    if call.backend != "gpu":
      return f"cuDNN needs a GPU (backend is {call.backend})"
    if call.dtype not in ("bfloat16", "float16"):
      return f"cuDNN attention takes bf16/fp16, got {call.dtype}"
    if call.head_dim % 8 or call.head_dim > 256:
      return f"cuDNN needs head_dim % 8 == 0 and <= 256, got {call.head_dim}"
    if call.segment_ids or call.mask or call.block_mask:
      return "segment ids / dense or block masks are not routed to cuDNN (open mask-only bugs)"
    if call.causal and (call.causal_offset or call.q_len != call.kv_len):
      return "cuDNN causal mask is top-left aligned: no causal_offset / unequal lengths"
    return None
  if impl == "pallas":
    if call.bias or call.mask:
      return "our Pallas kernel takes no bias or dense mask (express masks as a BlockMask)"
    if call.causal and call.causal_offset < 0:
      return "causal_offset must be a static int for the Pallas kernel"
    if call.backend == "tpu" and call.head_dim % 128 and call.head_dim not in (64,):
      return f"Mosaic TPU tiles want head_dim 64 or a multiple of 128, got {call.head_dim}"
    if call.backend == "cpu" and not explicit:
      return "Pallas on CPU runs in interpret mode (slow): only used when asked for by name"
    if call.backend == "gpu" and (call.head_dim & (call.head_dim - 1) or call.head_dim > 256):
      return f"Triton tiles need a power-of-two head_dim <= 256, got {call.head_dim}"
    if call.dtype not in ("float32", "bfloat16", "float16"):
      return f"dtype {call.dtype} not supported"
    return None
  if impl == "splash":
    if call.backend != "tpu":
      return f"splash attention needs a TPU (backend is {call.backend})"
    if call.bias or call.mask:
      return "splash takes no bias or dense mask"
    if call.q_len % 128 or call.kv_len % 128 or call.head_dim % 128:
      return "splash needs lengths and head_dim that are multiples of 128"
    if call.causal and call.causal_offset:
      return "causal_offset is not supported by splash here"
    if call.block_mask and call.q_len * call.kv_len > (1 << 28):
      return "block mask too large to hand to splash as a dense NumpyMask"
    return None
  raise ValueError(f"unknown attention implementation {impl!r}; expected one of {('auto',) + IMPLEMENTATIONS}")


def candidates(call: Call) -> tuple[str, ...]:
  """Preference order of "auto" for this call (before refusals)."""
  big = call.batch * call.heads * call.q_len * call.kv_len > CHUNK_THRESHOLD
  plain = ("xla_chunked",) if big else ("xla",)
  if call.backend == "gpu":
    return ("cudnn", "pallas") + plain
  if call.backend == "tpu":
    return ("splash", "pallas") + plain
  return plain


def _cudnn(q, k, v, *, bias, causal, scale, **_):
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, is_causal=causal, implementation="cudnn")


def _pallas(q, k, v, *, segment_ids, causal, scale, causal_offset, block_mask, **_):
  from shared.kernels.flash_attention import flash_attention
  return flash_attention(q, k, v, segment_ids=segment_ids, causal=causal, scale=scale,
                         causal_offset=causal_offset, block_mask=block_mask)


def _splash(q, k, v, *, segment_ids, causal, scale, block_mask, interpret=False, **_):
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  b, lq, h, d = q.shape
  lk, hkv = k.shape[1], k.shape[2]
  g = h // hkv
  if block_mask is not None:
    dense = block_mask.dense()
    if causal:
      dense &= np.tril(np.ones((lq, lk), bool))
    base = sa.NumpyMask(dense)
  elif causal:
    base = sa.CausalMask((lq, lk))
  else:
    base = sa.FullMask((lq, lk))
  kernel = sa.make_splash_mqa_single_device(sa.MultiHeadMask([base] * g), interpret=interpret)
  scale = d ** -0.5 if scale is None else scale
  qs = (q.astype(jnp.float32) * scale).astype(q.dtype).reshape(b, lq, hkv, g, d).transpose(0, 2, 3, 1, 4)
  ks, vs = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, Hkv, Lk, D]
  if segment_ids is not None:
    q_seg, kv_seg = segment_ids if isinstance(segment_ids, (tuple, list)) else (segment_ids, segment_ids)
    seg = sa.SegmentIds(q=jnp.asarray(q_seg, jnp.int32), kv=jnp.asarray(kv_seg, jnp.int32))
    per_head = jax.vmap(lambda qh, kh, vh, s: kernel(qh, kh, vh, segment_ids=s), (0, 0, 0, None))
    out = jax.vmap(per_head)(qs, ks, vs, seg)
  else:
    out = jax.vmap(jax.vmap(kernel))(qs, ks, vs)  # [B, Hkv, g, Lq, D]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, lq, h, d).astype(q.dtype)


def _run_xla(q, k, v, *, chunked: bool, **kw):
  fn = _xla.attention_chunked if chunked else _xla.attention
  return fn(q, k, v, **kw)


def run(impl: str, q, k, v, *, bias, mask, segment_ids, causal, scale, causal_offset, block_mask):
  if impl in ("xla", "xla_chunked"):
    return _run_xla(q, k, v, block_mask=block_mask, mask=mask, chunked=impl == "xla_chunked", bias=bias,
                    segment_ids=segment_ids, causal=causal, scale=scale, causal_offset=causal_offset)
  fn = {"cudnn": _cudnn, "pallas": _pallas, "splash": _splash}[impl]
  return fn(q, k, v, bias=bias, segment_ids=segment_ids, causal=causal, scale=scale,
            causal_offset=causal_offset, block_mask=block_mask)


def describe(q, k, *, bias, mask, segment_ids, causal, causal_offset, block_mask) -> Call:
  return Call(backend=jax.default_backend(), batch=q.shape[0], heads=q.shape[2], kv_heads=k.shape[2],
              q_len=q.shape[1], kv_len=k.shape[1], head_dim=q.shape[3], dtype=jnp.dtype(q.dtype).name,
              bias=bias is not None, mask=mask is not None, segment_ids=segment_ids is not None,
              causal=bool(causal), causal_offset=int(causal_offset) if not isinstance(causal_offset, jax.Array)
              else -1, block_mask=block_mask is not None)


def choose(call: Call, implementation: str) -> list[str]:
  """Implementations to try, in order; logs (once) each one skipped and why."""
  if implementation == "auto":
    order, explicit = candidates(call), False
  else:
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f"unknown attention implementation {implementation!r}; "
                       f"expected one of {('auto',) + IMPLEMENTATIONS}")
    order = (implementation,) + tuple(c for c in candidates(call) if c != implementation)
    explicit = True
  chosen = []
  for impl in order:
    why = refusal(impl, call, explicit=explicit and impl == implementation)
    if why is None:
      chosen.append(impl)
    elif not chosen:  # only refusals that actually moved the choice are worth a log line
      log_once((impl, why), f"attention: {impl!r} cannot take this call ({why}); falling back")
  if "xla" not in chosen and "xla_chunked" not in chosen:
    chosen.append("xla")
  return chosen
