"""Pallas flash attention (interpret mode) against the "xla" reference: values, dq/dk/dv, masks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import kernels
from shared.kernels import block_mask as bm
from shared.kernels import xla
from shared.kernels.flash_attention import flash_attention

BLOCKS = (16, 32, 16, 16)


def _inputs(seed, b, lq, lk, h, hkv, d, dtype):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (b, lq, h, d), jnp.float32).astype(dtype)
  k = jax.random.normal(ks[1], (b, lk, hkv, d), jnp.float32).astype(dtype)
  v = jax.random.normal(ks[2], (b, lk, hkv, d), jnp.float32).astype(dtype)
  ct = jax.random.normal(ks[3], (b, lq, h, d), jnp.float32)
  return q, k, v, ct


def _packed(b, length, cuts):
  seg = np.zeros((b, length), np.int32)
  for c in cuts:
    seg[:, c:] += 1
  return jnp.asarray(seg)


# (name, (B, Lq, Lk, H, Hkv, D), dtype, attention kwargs)
CASES = [
    ("ragged_gqa_cross_d128", (2, 70, 45, 4, 2, 128), jnp.float32, dict()),
    ("causal_offset_kvcache_mqa", (1, 40, 72, 2, 1, 32), jnp.float32, dict(causal=True, causal_offset=32)),
    ("segments_causal", (2, 90, 90, 2, 1, 16), jnp.float32,
     dict(segment_ids=_packed(2, 90, (33, 61)), causal=True)),
    ("tv2a_gqa", (2, 87, 87, 4, 2, 16), jnp.float32, dict(block_mask=bm.tv2a(50, 37))),
    ("prefix_causal_segments_bf16_d64", (1, 100, 100, 4, 1, 64), jnp.bfloat16,
     dict(block_mask=bm.prefix_causal(30, 100), segment_ids=_packed(1, 100, (70,)))),
]


def _reference(q, k, v, kw):
  kw = dict(kw)
  mask = kw.pop("block_mask", None)
  return xla.attention(q, k, v, mask=None if mask is None else jnp.asarray(mask.dense()), **kw)


@pytest.mark.parametrize("name,shape,dtype,kw", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_match_xla(name, shape, dtype, kw):
  q, k, v, ct = _inputs(len(name), *shape, dtype)

  up = lambda x: x.astype(jnp.float32)
  ours = lambda q, k, v: flash_attention(q, k, v, block_sizes=BLOCKS, **kw)
  # bf16 kernel vs the float32 reference on the same (bf16-representable) inputs; fp32 at "highest"
  ref = lambda q, k, v: _reference(up(q), up(k), up(v), kw)

  @jax.jit
  def both(q, k, v):
    res = []
    for fn in (ours, ref):
      o, vjp = jax.vjp(fn, q, k, v)
      res.append((o,) + vjp(ct.astype(o.dtype)))
    return res

  (out, *grads), (rout, *rgrads) = both(q, k, v)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  assert out.dtype == dtype and out.shape == q.shape
  for got, want, what in zip([out] + grads, [rout] + rgrads, ("out", "dq", "dk", "dv")):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=f"{name}: {what}")


def test_tv2a_audio_keys_never_reach_video_outputs():
  """Perturbing audio keys/values leaves every video output bit-identical (kernel and xla path)."""
  lv, la = 45, 38
  q, k, v, _ = _inputs(7, 1, lv + la, lv + la, 2, 1, 16, jnp.float32)
  mask = bm.tv2a(lv, la)
  noise = jax.random.normal(jax.random.PRNGKey(9), k.shape) * 50.0
  audio = (jnp.arange(lv + la) >= lv)[None, :, None, None]
  k2, v2 = jnp.where(audio, k + noise, k), jnp.where(audio, v - noise, v)
  for impl in ("pallas", "xla"):
    fn = jax.jit(lambda q, k, v: kernels.attention(q, k, v, block_mask=mask, implementation=impl))
    a, b = np.asarray(fn(q, k, v)), np.asarray(fn(q, k2, v2))
    assert np.array_equal(a[:, :lv], b[:, :lv]), impl
    assert not np.allclose(a[:, lv:], b[:, lv:]), impl  # audio queries do see the perturbation


def test_fully_masked_rows_and_nested_jit_gradients():
  """Queries whose every key is masked (causal, negative offset) output 0 with dq = 0, like xla; also
  differentiates through an inner jit (custom_vjp residuals must not capture the inner trace)."""
  q, k, v, ct = _inputs(3, 1, 40, 40, 2, 2, 16, jnp.float32)
  kw = dict(causal=True, causal_offset=-20)
  inner = jax.jit(lambda q, k, v: flash_attention(q, k, v, block_sizes=BLOCKS, **kw))
  loss = lambda fn: (lambda q, k, v: jnp.sum(fn(q, k, v) * ct))
  out, grads = jax.jit(lambda *a: (inner(*a), jax.grad(loss(inner), (0, 1, 2))(*a)))(q, k, v)
  ref = lambda q, k, v: xla.attention(q, k, v, **kw)
  rout, rgrads = jax.jit(lambda *a: (ref(*a), jax.grad(loss(ref), (0, 1, 2))(*a)))(q, k, v)
  assert np.all(np.asarray(out[:, :20]) == 0.0) and np.all(np.asarray(grads[0][:, :20]) == 0.0)
  for got, want in zip((out,) + tuple(grads), (rout,) + tuple(rgrads)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gpu_lowering_traces_to_triton():
  """The GPU path lowers (Pallas -> Triton IR) for CUDA from this CPU host; it is not run here."""
  q = jax.ShapeDtypeStruct((1, 300, 4, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((1, 300, 2, 128), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((1, 300), jnp.int32)
  mask = bm.tv2a(200, 100)

  def fwd_bwd(q, k, v, seg):
    f = lambda q, k, v: flash_attention(q, k, v, block_mask=mask, segment_ids=seg, causal=True,
                                        interpret=False).astype(jnp.float32).sum()
    return jax.grad(f, (0, 1, 2))(q, k, v)

  text = jax.jit(fwd_bwd).trace(q, k, k, seg).lower(lowering_platforms=("cuda",)).as_text()
  assert text.count("__gpu$xla.gpu.triton") + text.count("triton_kernel_call") >= 3


def test_tpu_lowering_traces_to_mosaic(monkeypatch):
  """The TPU path lowers to Mosaic from this CPU host (jax asks the default device for its TPU kind,
  so the test names one); Mosaic's own compiler does not run here."""
  from jax._src.pallas.mosaic import tpu_info
  from shared.kernels import flash_attention as fa
  monkeypatch.setattr(tpu_info, "get_device_kind", lambda: "TPU v5 lite")
  monkeypatch.setattr(tpu_info, "get_num_device_cores", lambda: 1)
  monkeypatch.setattr(fa, "_backend", lambda interpret: "tpu")
  q = jax.ShapeDtypeStruct((1, 1000, 4, 128), jnp.bfloat16)
  k = jax.ShapeDtypeStruct((1, 1000, 2, 128), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((1, 1000), jnp.int32)
  mask = bm.tv2a(600, 400)

  def fwd_bwd(q, k, v, seg):
    f = lambda q, k, v: fa.flash_attention(q, k, v, block_mask=mask, segment_ids=seg, causal=True,
                                           interpret=False).astype(jnp.float32).sum()
    return jax.grad(f, (0, 1, 2))(q, k, v)

  text = jax.jit(fwd_bwd).trace(q, k, k, seg).lower(lowering_platforms=("tpu",)).as_text()
  assert text.count("tpu_custom_call") >= 3
