"""Pallas fused depthwise temporal conv + residual (interpret mode) against lax.conv_general_dilated."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from shared.kernels import temporal_conv as tc

# (name, B, T, C, K, left, residual, dtype)
CASES = [
    ("causal", 2, 53, 24, 5, 4, True, jnp.float32),
    ("centred_no_residual", 1, 41, 20, 7, 3, False, jnp.float32),
    ("fsmn_shift_bf16", 2, 37, 40, 11, tc.fsmn_padding(11, 2)[0], True, jnp.bfloat16),
]


@pytest.mark.parametrize("name,b,t,c,k,left,residual,dtype", CASES, ids=[c[0] for c in CASES])
def test_matches_conv_general_dilated(name, b, t, c, k, left, residual, dtype):
  kx, kw, kg = jax.random.split(jax.random.PRNGKey(len(name)), 3)
  x = jax.random.normal(kx, (b, t, c), jnp.float32).astype(dtype)
  w = (jax.random.normal(kw, (k, c), jnp.float32) * 0.3).astype(dtype)
  ct = jax.random.normal(kg, (b, t, c), jnp.float32).astype(dtype)

  @jax.jit
  def both(x, w):
    res = []
    for impl in ("pallas", "shifted", "xla"):
      up = (lambda a: a) if impl in ("pallas", "shifted") else (lambda a: a.astype(jnp.float32))
      fn = lambda x, w: tc.temporal_conv(up(x), up(w), left=left, residual=residual, implementation=impl,
                                         block_sizes=(16, 16))
      y, vjp = jax.vjp(fn, x, w)
      res.append((y,) + vjp(ct.astype(y.dtype)))
    return res

  pallas, shifted, ref = both(x, w)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for ours in (pallas, shifted):
    assert ours[0].dtype == dtype and ours[0].shape == x.shape
  for got, want, what in [*zip(pallas, ref, ("y", "dx", "dw")), *zip(shifted, ref, ("shifted y", "dx", "dw"))]:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=f"{name}: {what}")


def test_reference_is_funasr_fsmn():
  """`reference` = FunASR's FSMN memory: F.pad(left, right) -> depthwise Conv1d (no bias) -> + input."""
  b, t, c, k = 2, 19, 6, 11
  left, right = tc.fsmn_padding(k, 1)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((b, t, c)).astype(np.float32)
  w = rng.standard_normal((c, 1, k)).astype(np.float32)  # torch Conv1d(c, c, k, groups=c) weight
  conv = torch.nn.Conv1d(c, c, k, groups=c, bias=False)
  conv.weight.data = torch.from_numpy(w)
  xt = torch.from_numpy(x).transpose(1, 2)
  want = (conv(torch.nn.functional.pad(xt, (left, right))) + xt).transpose(1, 2).detach().numpy()
  got = tc.reference(jnp.asarray(x), jnp.asarray(w[:, 0, :].T), left=left)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_gpu_lowering_traces_to_triton():
  x = jax.ShapeDtypeStruct((2, 1000, 512), jnp.bfloat16)
  w = jax.ShapeDtypeStruct((11, 512), jnp.bfloat16)
  f = lambda x, w: tc.temporal_conv(x, w, left=5, implementation="pallas", interpret=False)
  g = jax.grad(lambda x, w: f(x, w).astype(jnp.float32).sum(), (0, 1))
  text = jax.jit(g).trace(x, w).lower(lowering_platforms=("cuda",)).as_text()
  assert text.count("triton") >= 3  # forward, dx, dw kernels
