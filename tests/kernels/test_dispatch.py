"""The attention dispatcher: choices per backend, logged fallbacks, and the chunked XLA path."""
from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from shared import kernels
from shared.kernels import block_mask as bm
from shared.kernels import dispatch, xla


def _qkv(b=1, lq=24, lk=24, h=2, hkv=2, d=8, dtype=jnp.float32):
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  return (jax.random.normal(ks[0], (b, lq, h, d), dtype), jax.random.normal(ks[1], (b, lk, hkv, d), dtype),
          jax.random.normal(ks[2], (b, lk, hkv, d), dtype))


def test_auto_on_cpu_picks_xla_and_runs():
  q, k, v = _qkv()
  assert kernels.chosen_implementation(q, k) == "xla"
  assert kernels.chosen_implementation(q, k, block_mask=bm.tv2a(12, 12), causal=True) == "xla"
  big = jax.ShapeDtypeStruct((1, 16384, 8, 64), jnp.float32)
  assert kernels.chosen_implementation(big, big) == "xla_chunked"
  fns = (lambda *a: kernels.attention(*a, causal=True), lambda *a: xla.attention(*a, causal=True))
  got, want = jax.jit(lambda *a: [f(*a) for f in fns])(q, k, v)
  np.testing.assert_array_equal(got, want)


def test_fallbacks_are_logged_once(caplog):
  q, k, v = _qkv()
  dispatch._logged.clear()
  want = xla.attention(q, k, v, causal=True)
  with caplog.at_level(logging.WARNING, logger="shared.kernels"):
    for _ in range(3):
      for impl in ("cudnn", "splash"):
        np.testing.assert_array_equal(kernels.attention(q, k, v, causal=True, implementation=impl), want)
  msgs = [r.getMessage() for r in caplog.records]
  assert len(msgs) == 2, msgs
  assert "'cudnn'" in msgs[0] and "GPU" in msgs[0] and "'splash'" in msgs[1] and "TPU" in msgs[1]


def test_pallas_with_bias_falls_back_to_xla(caplog):
  q, k, v = _qkv()
  bias = jax.random.normal(jax.random.PRNGKey(5), (1, 2, 24, 24))
  dispatch._logged.clear()
  with caplog.at_level(logging.WARNING, logger="shared.kernels"):
    out = kernels.attention(q, k, v, bias=bias, implementation="pallas")
  np.testing.assert_array_equal(out, xla.attention(q, k, v, bias=bias))
  assert len(caplog.records) == 1 and "bias" in caplog.records[0].getMessage()


def test_choices_on_accelerators():
  """Selection logic for GPU/TPU calls (the decision only: no GPU/TPU here)."""
  gpu = dispatch.Call(backend="gpu", batch=2, heads=8, kv_heads=2, q_len=4096, kv_len=4096, head_dim=128,
                      dtype="bfloat16", bias=False, mask=False, segment_ids=False, causal=True,
                      causal_offset=0, block_mask=False)
  assert dispatch.choose(gpu, "auto")[0] == "cudnn"
  assert dispatch.choose(dataclasses.replace(gpu, block_mask=True), "auto")[0] == "pallas"
  assert dispatch.choose(dataclasses.replace(gpu, segment_ids=True, dtype="float32"), "auto")[0] == "pallas"
  assert dispatch.choose(dataclasses.replace(gpu, bias=True, head_dim=80), "auto")[0] == "cudnn"
  assert dispatch.choose(dataclasses.replace(gpu, mask=True), "auto")[0] == "xla_chunked"  # 2·8·4k·4k logits
  assert dispatch.choose(dataclasses.replace(gpu, head_dim=96, dtype="float32", q_len=512), "auto")[0] == "xla"
  tpu = dataclasses.replace(gpu, backend="tpu")
  assert dispatch.choose(tpu, "auto")[0] == "splash"
  assert dispatch.choose(dataclasses.replace(tpu, q_len=1000), "auto")[0] == "pallas"  # splash: not 128-multiple
  assert dispatch.choose(tpu, "pallas")[0] == "pallas"
  # a block mask too large for splash's dense NumpyMask goes to our kernel
  long_tpu = dataclasses.replace(tpu, block_mask=True, q_len=32768, kv_len=32768)
  assert dispatch.choose(long_tpu, "auto")[0] == "pallas"


def test_chunked_xla_matches_xla_values_and_gradients():
  q, k, v = _qkv(b=2, lq=70, lk=40, h=2, hkv=1)
  seg = (jnp.asarray(np.repeat(np.r_[np.zeros(40), np.ones(30)][None], 2, 0), jnp.int32),
         jnp.asarray(np.repeat(np.r_[np.zeros(25), np.ones(15)][None], 2, 0), jnp.int32))
  mask = jax.random.bernoulli(jax.random.PRNGKey(1), 0.8, (2, 1, 70, 40))
  bias = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 70, 40))
  kw = dict(segment_ids=seg, mask=mask, bias=bias, causal=True, causal_offset=-20)

  @jax.jit
  def both(q, k, v):
    return [jax.value_and_grad(lambda *a: jnp.sum(fn(*a) ** 2), (0, 1, 2))(q, k, v)
            for fn in (lambda *a: xla.attention_chunked(*a, chunk_size=32, **kw),
                       lambda *a: xla.attention(*a, **kw))]

  (l1, g1), (l2, g2) = both(q, k, v)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_splash_adapter_matches_xla_in_interpret_mode():
  """Our adapter to jax's TPU splash kernel (GQA layout, scale, segment ids, TV2A + causal as a splash
  mask), run by splash's own interpret mode on CPU: forward values equal the xla reference."""
  q, k, v = _qkv(b=1, lq=256, lk=256, h=4, hkv=2, d=128)
  seg = jnp.asarray(np.r_[np.zeros(100), np.ones(156)][None].astype(np.int32))
  mask = bm.tv2a(160, 96)
  out = jax.jit(lambda q, k, v: dispatch._splash(q, k, v, segment_ids=seg, causal=True, scale=0.1,
                                                 block_mask=mask, interpret=True))(q, k, v)
  want = xla.attention(q, k, v, segment_ids=seg, causal=True, scale=0.1, mask=jnp.asarray(mask.dense()))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
