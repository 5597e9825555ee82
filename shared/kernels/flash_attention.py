"""Pallas flash attention (forward + backward) with grouped queries, causal, segment ids, block masks.

Layout inside: [B, H, L, D]; the public `flash_attention` takes the project layout q [B, Lq, H, D],
k/v [B, Lk, Hkv, D] and returns [B, Lq, H, D] in q.dtype, the same semantics as shared/kernels/xla.py
(rows that see no key give zeros). Softmax statistics are float32.

Kernel shape (FlashAttention-2 style, one program per (batch, head, query block)): the program loops
over *compacted lists of key blocks* taken from a static per-tile table built from `causal` and the
`BlockMask` (shared/kernels/block_mask.py): SKIP tiles (TV2A's video-query x audio-key tiles, tiles
above the causal diagonal) are never loaded; FULL tiles run without any mask arithmetic; PARTIAL
tiles (diagonals, label boundaries, key padding, anything with segment ids) recompute the exact
element mask from positions, segment ids and the block mask's label vectors. Backward = two kernels: dq (per query block, over its
key list) and dk/dv (per key block, over the transposed list); grouped-query dk/dv are computed per
query head in float32 and summed over the group.

Lengths that are not block multiples are zero-padded; padded keys are masked by position.
Lowerings: interpret mode (CPU tests), Triton (GPU, jax.experimental.pallas.triton compiler params) and
Mosaic TPU (same kernel; block tables in SMEM; query-side vectors stored as [L, 1] columns and key-side
ones as [1, L] rows so TPU tiling rules hold). Only interpret mode has been *run*; the tests also lower
the GPU path to Triton IR and the TPU path to Mosaic from a CPU host, but neither was compiled by the
device compilers nor run on hardware. Each program keeps its whole K/V (or Q/dO) sequence resident, so
very long sequences on TPU may need a larger vmem limit. No Mosaic GPU (Hopper wgmma) variant yet.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from shared.kernels import block_mask as bm

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class _Cfg:
  scale: float
  causal: bool
  causal_offset: int
  q_len: int
  kv_len: int
  q_pad: int
  kv_pad: int
  groups: int
  blocks: tuple  # (bq, bk, bq_bwd, bk_bwd)
  rules: tuple | None  # block-mask (q_label, k_label, rule) triples; None = no block mask
  bm_offset: int
  has_seg: bool
  backend: str  # "interpret" | "triton" | "tpu"
  num_warps: int
  num_stages: int


def _backend(interpret: bool | None) -> str:
  if interpret or (interpret is None and jax.default_backend() == "cpu"):
    return "interpret"
  return "tpu" if jax.default_backend() == "tpu" else "triton"


def _compiler_params(cfg: _Cfg, ndims: int):
  if cfg.backend == "triton":
    from jax.experimental.pallas import triton as plgpu
    return dict(compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
  if cfg.backend == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    return dict(compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",) * ndims))
  return dict(interpret=True)


def _lists(table: np.ndarray):
  """int8 [n, m] tile kinds -> (count int32 [2n], index int32 [2nm]): for each row, the PARTIAL columns
  (entries 0..n-1 / rows 0..n-1) then the FULL ones (entries n..2n-1), compacted to the left."""
  n, m = table.shape
  cnt = np.zeros((2, n), np.int32)
  idx = np.zeros((2, n, m), np.int32)
  for kind_i, kind in enumerate((bm.PARTIAL_TILE, bm.FULL_TILE)):
    for i in range(n):
      cols = np.nonzero(table[i] == kind)[0]
      cnt[kind_i, i] = len(cols)
      idx[kind_i, i, :len(cols)] = cols
  return cnt.reshape(-1), idx.reshape(-1)  # numpy: made device constants inside each trace that uses them


def _loop(cnt_ref, idx_ref, row: int, n_rows: int, n_cols: int, body, init):
  """Runs body(masked, col, carry) over the row's FULL tiles (no mask work), then its PARTIAL ones."""
  def step(masked, base):
    return lambda t, carry: body(masked, idx_ref[base + row * n_cols + t], carry)
  carry = lax.fori_loop(0, cnt_ref[n_rows + row], step(False, n_rows * n_cols), init)
  return lax.fori_loop(0, cnt_ref[row], step(True, 0), carry)


def _visible(cfg: _Cfg, qpos, kpos, qseg, kseg, qlab, klab):
  """bool [bq, bk] element mask for one tile, or None when nothing can be masked.

  Query-side vectors are columns [bq, 1], key-side vectors rows [1, bk] (a layout TPUs accept too).
  """
  shape = (qpos.shape[0], kpos.shape[1])
  m = None

  def _and(a, b):
    return b if a is None else a & b

  if cfg.kv_pad != cfg.kv_len:
    m = _and(m, jnp.broadcast_to(kpos < cfg.kv_len, shape))
  if cfg.causal:
    m = _and(m, kpos <= qpos + cfg.causal_offset)
  if cfg.has_seg:
    m = _and(m, qseg == kseg)
  if cfg.rules is not None:
    allowed = None
    for a, b, r in cfg.rules:
      c = (qlab == a) & (klab == b)
      if r == bm.CAUSAL:
        c = c & (kpos <= qpos + cfg.bm_offset)
      allowed = c if allowed is None else allowed | c
    m = _and(m, jnp.zeros(shape, bool) if allowed is None else jnp.broadcast_to(allowed, shape))
  return m


def _dot(a, b, trans_a=False, trans_b=False):
  return pl.dot(a, b, trans_a=trans_a, trans_b=trans_b)


def _tile_logits(cfg, masked, q, k, qpos, kpos, qseg, kseg, qlab, klab):
  s = _dot(q, k, trans_b=True).astype(jnp.float32) * cfg.scale
  mask = _visible(cfg, qpos, kpos, qseg, kseg, qlab, klab) if masked else None
  if mask is not None:
    s = jnp.where(mask, s, NEG_INF)
  return s, mask


def _col(ref, sl):  # query-side [L, 1] ref -> [n, 1] rows `sl`
  return None if ref is None else ref[sl, :]


def _row(ref, sl):  # key-side [1, L] ref -> [1, n] columns `sl`
  return None if ref is None else ref[:, sl]


def _iota(n: int, axis: int, offset):
  shape = (n, 1) if axis == 0 else (1, n)
  return offset + lax.broadcasted_iota(jnp.int32, shape, axis)


def _fwd_kernel(cnt_ref, idx_ref, q_ref, k_ref, v_ref, qseg_ref, kseg_ref, qlab_ref, klab_ref,
                o_ref, lse_ref, *, cfg: _Cfg, nk: int):
  bq, bk = cfg.blocks[0], cfg.blocks[1]
  i = pl.program_id(2)
  q = q_ref[...]
  qpos = _iota(bq, 0, i * bq)
  qseg = None if qseg_ref is None else qseg_ref[...]
  qlab = None if qlab_ref is None else qlab_ref[...]

  def body(masked, j, carry):
    acc, m_prev, l_prev = carry
    start = pl.multiple_of(j * bk, bk)
    sl = pl.ds(start, bk)
    k, v = k_ref[sl, :], v_ref[sl, :]
    s, mask = _tile_logits(cfg, masked, q, k, qpos, _iota(bk, 1, start), qseg, _row(kseg_ref, sl), qlab,
                           _row(klab_ref, sl))
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    p = jnp.exp(s - m_next)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    alpha = jnp.exp(m_prev - m_next)
    l_next = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
    acc = alpha * acc + _dot(p.astype(v.dtype), v).astype(jnp.float32)
    return acc, m_next, l_next

  d = q_ref.shape[-1]
  init = (jnp.zeros((bq, d), jnp.float32), jnp.full((bq, 1), NEG_INF, jnp.float32),
          jnp.zeros((bq, 1), jnp.float32))
  acc, m, l = _loop(cnt_ref, idx_ref, i, cfg.q_pad // bq, nk, body, init)
  seen = l > 0.0
  l_safe = jnp.where(seen, l, 1.0)
  o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(seen, m + jnp.log(l_safe), 0.0)


def _dq_kernel(cnt_ref, idx_ref, q_ref, k_ref, v_ref, qseg_ref, kseg_ref, qlab_ref, klab_ref,
               do_ref, lse_ref, delta_ref, dq_ref, *, cfg: _Cfg, nk: int):
  bq, bk = cfg.blocks[2], cfg.blocks[3]
  i = pl.program_id(2)
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]  # [bq, 1]
  qpos = _iota(bq, 0, i * bq)
  qseg = None if qseg_ref is None else qseg_ref[...]
  qlab = None if qlab_ref is None else qlab_ref[...]

  def body(masked, j, dq):
    start = pl.multiple_of(j * bk, bk)
    sl = pl.ds(start, bk)
    k, v = k_ref[sl, :], v_ref[sl, :]
    s, mask = _tile_logits(cfg, masked, q, k, qpos, _iota(bk, 1, start), qseg, _row(kseg_ref, sl), qlab,
                           _row(klab_ref, sl))
    p = jnp.exp(s - lse)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    dp = _dot(do, v, trans_b=True).astype(jnp.float32)
    ds = p * (dp - delta)
    return dq + _dot(ds.astype(k.dtype), k).astype(jnp.float32)

  dq = _loop(cnt_ref, idx_ref, i, cfg.q_pad // bq, nk, body, jnp.zeros(q_ref.shape, jnp.float32))
  dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dkv_kernel(cnt_ref, idx_ref, q_ref, k_ref, v_ref, qseg_ref, kseg_ref, qlab_ref, klab_ref,
                do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, cfg: _Cfg, nq: int):
  bq, bk = cfg.blocks[2], cfg.blocks[3]
  j = pl.program_id(2)
  k, v = k_ref[...], v_ref[...]
  kpos = _iota(bk, 1, j * bk)
  kseg = None if kseg_ref is None else kseg_ref[...]
  klab = None if klab_ref is None else klab_ref[...]

  def body(masked, i, carry):
    dk, dv = carry
    start = pl.multiple_of(i * bq, bq)
    sl = pl.ds(start, bq)
    q, do = q_ref[sl, :], do_ref[sl, :]
    lse, delta = lse_ref[sl, :], delta_ref[sl, :]  # [bq, 1]
    s, mask = _tile_logits(cfg, masked, q, k, _iota(bq, 0, start), kpos, _col(qseg_ref, sl), kseg,
                           _col(qlab_ref, sl), klab)
    p = jnp.exp(s - lse)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    dv = dv + _dot(p.astype(do.dtype), do, trans_a=True).astype(jnp.float32)
    dp = _dot(do, v, trans_b=True).astype(jnp.float32)
    ds = p * (dp - delta)
    dk = dk + _dot(ds.astype(q.dtype), q, trans_a=True).astype(jnp.float32)
    return dk, dv

  zeros = jnp.zeros(k_ref.shape, jnp.float32)
  dk, dv = _loop(cnt_ref, idx_ref, j, cfg.kv_pad // bk, nq, body, (zeros, zeros))
  dk_ref[...] = dk * cfg.scale
  dv_ref[...] = dv


def _specs(cfg: _Cfg, bq: int, bk: int, q_whole: bool):
  """BlockSpecs for (q, k, v, qseg, kseg, qlab, klab) on grid (B, H, n): program tile on one side,
  whole sequence on the other (the side the kernel loops over). Query-side vectors are stored as
  columns [.., Lq, 1], key-side ones as rows [.., 1, Lk]."""
  g = cfg.groups
  if q_whole:  # grid over key blocks; loop over query blocks
    q_spec = lambda dd: pl.BlockSpec((None, None, cfg.q_pad, dd), lambda bi, hi, n: (bi, hi, 0, 0))
    kv_spec = lambda dd: pl.BlockSpec((None, None, bk, dd), lambda bi, hi, n: (bi, hi // g, n, 0))
    qv_spec = pl.BlockSpec((None, cfg.q_pad, 1), lambda bi, hi, n: (bi, 0, 0))
    kv1_spec = pl.BlockSpec((None, 1, bk), lambda bi, hi, n: (bi, 0, n))
    ql_spec = pl.BlockSpec((cfg.q_pad, 1), lambda bi, hi, n: (0, 0))
    kl_spec = pl.BlockSpec((1, bk), lambda bi, hi, n: (0, n))
  else:
    q_spec = lambda dd: pl.BlockSpec((None, None, bq, dd), lambda bi, hi, n: (bi, hi, n, 0))
    kv_spec = lambda dd: pl.BlockSpec((None, None, cfg.kv_pad, dd), lambda bi, hi, n: (bi, hi // g, 0, 0))
    qv_spec = pl.BlockSpec((None, bq, 1), lambda bi, hi, n: (bi, n, 0))
    kv1_spec = pl.BlockSpec((None, 1, cfg.kv_pad), lambda bi, hi, n: (bi, 0, 0))
    ql_spec = pl.BlockSpec((bq, 1), lambda bi, hi, n: (n, 0))
    kl_spec = pl.BlockSpec((1, cfg.kv_pad), lambda bi, hi, n: (0, 0))
  return q_spec, kv_spec, qv_spec, kv1_spec, ql_spec, kl_spec


def _scalar_spec(cfg: _Cfg, arr):
  """Whole small int32 table: SMEM on TPU, an ordinary (global-memory) block elsewhere."""
  if cfg.backend == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    return pl.BlockSpec(memory_space=pltpu.SMEM)
  return pl.BlockSpec(arr.shape, lambda bi, hi, n: (0,) * arr.ndim)


def _call(kernel, cfg, tables, bq, bk, q_whole, arrays, extra_in, out_shape, out_specs, grid_n):
  q, k, v, qseg, kseg, qlab, klab = arrays
  b, h, _, dim = q.shape
  q_spec, kv_spec, qv_spec, kv1_spec, ql_spec, kl_spec = _specs(cfg, bq, bk, q_whole)
  cnt, idx = jnp.asarray(tables[0]), jnp.asarray(tables[1])
  ins = [cnt, idx, q, k, v]
  specs = [_scalar_spec(cfg, cnt), _scalar_spec(cfg, idx), q_spec(dim), kv_spec(dim), kv_spec(dim)]
  for arr, spec in ((qseg, qv_spec), (kseg, kv1_spec), (qlab, ql_spec), (klab, kl_spec)):
    ins.append(arr)
    specs.append(None if arr is None else spec)
  for arr, spec_fn in extra_in:
    ins.append(arr)
    specs.append(spec_fn(q_spec, qv_spec))
  return pl.pallas_call(kernel, grid=(b, h, grid_n), in_specs=specs, out_specs=out_specs,
                        out_shape=out_shape, name=kernel.func.__name__.strip("_"),
                        **_compiler_params(cfg, 3))(*ins)


def _forward(cfg: _Cfg, fwd_tables, arrays):
  q = arrays[0]
  b, h, _, d = q.shape
  bq, bk = cfg.blocks[0], cfg.blocks[1]
  nq, nk = cfg.q_pad // bq, cfg.kv_pad // bk
  kernel = functools.partial(_fwd_kernel, cfg=cfg, nk=nk)
  out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, cfg.q_pad, 1), jnp.float32)]
  out_specs = [pl.BlockSpec((None, None, bq, d), lambda bi, hi, n: (bi, hi, n, 0)),
               pl.BlockSpec((None, None, bq, 1), lambda bi, hi, n: (bi, hi, n, 0))]
  return _call(kernel, cfg, fwd_tables, bq, bk, False, arrays, (), out_shape, out_specs, nq)


def _backward(cfg: _Cfg, dq_tables, dkv_tables, arrays, o, lse, do):
  q, k = arrays[0], arrays[1]
  b, h, _, d = q.shape
  bq, bk = cfg.blocks[2], cfg.blocks[3]
  nq, nk = cfg.q_pad // bq, cfg.kv_pad // bk
  delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)  # [B, H, Lq, 1]
  # dq: grid over query blocks
  rows = pl.BlockSpec((None, None, bq, 1), lambda bi, hi, n: (bi, hi, n, 0))
  extra = [(do, lambda qs, _: qs(d)), (lse, lambda *_: rows), (delta, lambda *_: rows)]
  dq = _call(functools.partial(_dq_kernel, cfg=cfg, nk=nk), cfg, dq_tables, bq, bk, False, arrays, extra,
             jax.ShapeDtypeStruct(q.shape, q.dtype),
             pl.BlockSpec((None, None, bq, d), lambda bi, hi, n: (bi, hi, n, 0)), nq)
  # dk, dv: grid over key blocks, per query head (float32), summed over each group below
  whole_q = pl.BlockSpec((None, None, cfg.q_pad, 1), lambda bi, hi, n: (bi, hi, 0, 0))
  extra = [(do, lambda qs, _: qs(d)), (lse, lambda *_: whole_q), (delta, lambda *_: whole_q)]
  kv_shape = jax.ShapeDtypeStruct((b, h, cfg.kv_pad, d), jnp.float32)
  kv_out = pl.BlockSpec((None, None, bk, d), lambda bi, hi, n: (bi, hi, n, 0))
  dk, dv = _call(functools.partial(_dkv_kernel, cfg=cfg, nq=nq), cfg, dkv_tables, bq, bk, True, arrays,
                 extra, [kv_shape, kv_shape], [kv_out, kv_out], nk)
  hkv = k.shape[1]
  dk = dk.reshape(b, hkv, cfg.groups, cfg.kv_pad, d).sum(2).astype(k.dtype)
  dv = dv.reshape(b, hkv, cfg.groups, cfg.kv_pad, d).sum(2).astype(arrays[2].dtype)
  return dq, dk, dv


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def default_blocks(q_len: int, kv_len: int, head_dim: int, backend: str) -> tuple[int, int, int, int]:
  """(bq, bk, bq_bwd, bk_bwd): GPU-ish defaults, shrunk (to powers of two >= 16) for short sequences."""
  if backend == "tpu":
    base = (128, 128, 128, 128)
  else:
    base = (128, 64 if head_dim > 64 else 128, 64, 64)
  fit = lambda blk, n: max(16, min(blk, _next_pow2(n)))
  return (fit(base[0], q_len), fit(base[1], kv_len), fit(base[2], q_len), fit(base[3], kv_len))


def flash_attention(q, k, v, *, segment_ids=None, causal: bool = False, scale: float | None = None,
                    causal_offset: int = 0, block_mask: bm.BlockMask | None = None,
                    block_sizes: tuple[int, int, int, int] | None = None, interpret: bool | None = None,
                    num_warps: int | None = None, num_stages: int = 2):
  """q [B, Lq, H, D], k/v [B, Lk, Hkv, D] -> [B, Lq, H, D] (q.dtype); differentiable in q, k, v.

  segment_ids: int [B, L] or a pair ([B, Lq], [B, Lk]); block_mask: BlockMask over (Lq, Lk);
  block_sizes: (bq, bk, bq_bwd, bk_bwd), powers of two; interpret: None = only on CPU.
  """
  b, lq, h, d = q.shape
  lk, hkv = k.shape[1], k.shape[2]
  if h % hkv:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {hkv}")
  backend = _backend(interpret)
  blocks = tuple(block_sizes or default_blocks(lq, lk, d, backend))
  q_mult, k_mult = max(blocks[0], blocks[2]), max(blocks[1], blocks[3])
  q_pad, kv_pad = -(-lq // q_mult) * q_mult, -(-lk // k_mult) * k_mult
  cfg = _Cfg(scale=float(d ** -0.5 if scale is None else scale), causal=bool(causal),
             causal_offset=int(causal_offset), q_len=lq, kv_len=lk, q_pad=q_pad, kv_pad=kv_pad,
             groups=h // hkv, blocks=blocks, rules=None if block_mask is None else block_mask.rule_list(),
             bm_offset=0 if block_mask is None else block_mask.causal_offset,
             has_seg=segment_ids is not None, backend=backend,
             num_warps=num_warps or (4 if d <= 64 else 8), num_stages=num_stages)
  def tab(bq_, bk_):  # tile kinds over the padded grid; segment ids make every visited tile PARTIAL
    t = bm.block_table(lq, lk, bq_, bk_, block_mask=block_mask, causal=causal, causal_offset=causal_offset,
                       kinds=True)
    if segment_ids is not None:
      t = np.minimum(t, bm.PARTIAL_TILE)
    return np.pad(t, ((0, q_pad // bq_ - t.shape[0]), (0, kv_pad // bk_ - t.shape[1])))

  fwd_tables = _lists(tab(blocks[0], blocks[1]))
  bwd_table = tab(blocks[2], blocks[3])
  dq_tables, dkv_tables = _lists(bwd_table), _lists(bwd_table.T)

  def to_kernel(x, length):  # [B, L, H, D] -> [B, H, L_pad, D]
    return jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  qseg = kseg = qlab = klab = None
  if segment_ids is not None:
    qs, ks = segment_ids if isinstance(segment_ids, (tuple, list)) else (segment_ids, segment_ids)
    qseg = jnp.pad(jnp.asarray(qs, jnp.int32), ((0, 0), (0, q_pad - lq)), constant_values=-1)[:, :, None]
    kseg = jnp.pad(jnp.asarray(ks, jnp.int32), ((0, 0), (0, kv_pad - lk)), constant_values=-2)[:, None, :]
  if block_mask is not None:
    qlab = jnp.asarray(np.pad(block_mask.q_labels, (0, q_pad - lq), constant_values=-1)[:, None])
    klab = jnp.asarray(np.pad(block_mask.k_labels, (0, kv_pad - lk), constant_values=-1)[None, :])

  @jax.custom_vjp
  def run(qk, kk, vk, qseg, kseg, qlab, klab):
    return _forward(cfg, fwd_tables, (qk, kk, vk, qseg, kseg, qlab, klab))[0]

  def run_fwd(qk, kk, vk, qseg, kseg, qlab, klab):
    arrays = (qk, kk, vk, qseg, kseg, qlab, klab)
    o, lse = _forward(cfg, fwd_tables, arrays)
    return o, (arrays, o, lse)

  def run_bwd(res, do):
    arrays, o, lse = res
    dq, dk, dv = _backward(cfg, dq_tables, dkv_tables, arrays, o, lse, do)
    return dq, dk, dv, None, None, None, None

  run.defvjp(run_fwd, run_bwd)
  out = run(to_kernel(q, q_pad), to_kernel(k, kv_pad), to_kernel(v, kv_pad), qseg, kseg, qlab, klab)
  return out.transpose(0, 2, 1, 3)[:, :lq]


def flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, *, causal: bool = False,
          backward: bool = False, density: float | None = None) -> float:
  """Matmul FLOPs of attention (4·B·H·Lq·Lk·D forward; ×2.5 more for backward), times the visible fraction."""
  frac = density if density is not None else (0.5 if causal else 1.0)
  f = 4.0 * batch * heads * q_len * kv_len * head_dim * frac
  return f * 3.5 if backward else f

