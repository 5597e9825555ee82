"""Block masks: dense semantics and the per-block tables kernels use to skip tiles."""
from __future__ import annotations

import numpy as np

from shared.kernels import block_mask as bm


def test_tv2a_dense():
  m = bm.tv2a(5, 3).dense()
  assert m.shape == (8, 8)
  assert not m[:5, 5:].any() and m[:5, :5].all() and m[5:].all()


def test_prefix_causal_dense():
  m = bm.prefix_causal(3, 7).dense()
  want = np.tril(np.ones((7, 7), bool))
  want[:3, :3] = True
  np.testing.assert_array_equal(m, want)


def test_block_table_matches_brute_force_and_skips():
  rng = np.random.default_rng(0)
  for _ in range(8):
    lv, la = rng.integers(5, 80, size=2)
    bq, bk = rng.choice([8, 16, 32], size=2)
    off = int(rng.integers(-30, 90))
    for mask, causal in ((bm.tv2a(lv, la), False), (bm.prefix_causal(lv, lv + la), False),
                         (bm.tv2a(lv, la), True), (None, True)):
      n = lv + la
      dense = np.ones((n, n), bool) if mask is None else mask.dense()
      if causal:
        dense = dense & (np.arange(n)[None, :] <= np.arange(n)[:, None] + off)
      nq, nk = -(-n // bq), -(-n // bk)
      want = np.zeros((nq, nk), np.int8)
      for i in range(nq):
        for j in range(nk):
          tile = dense[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
          padded_keys = (j + 1) * bk > n
          want[i, j] = 2 if tile.all() and not padded_keys else (1 if tile.any() else 0)
      got = bm.block_table(n, n, bq, bk, block_mask=mask, causal=causal, causal_offset=off, kinds=True)
      np.testing.assert_array_equal(got, want)
      np.testing.assert_array_equal(bm.block_table(n, n, bq, bk, block_mask=mask, causal=causal,
                                                   causal_offset=off), want > 0)
  # TV2A with aligned blocks skips exactly the video-query x audio-key tiles
  t = bm.block_table(128, 128, 32, 32, block_mask=bm.tv2a(64, 64), kinds=True)
  assert (t == bm.FULL_TILE).sum() == 16 - 4 and (t[:2, 2:] == bm.SKIP_TILE).all()
  # causal: the diagonal tiles are PARTIAL, those below FULL, those above SKIP
  t = bm.block_table(96, 96, 32, 32, causal=True, kinds=True)
  np.testing.assert_array_equal(t, [[1, 0, 0], [2, 1, 0], [2, 2, 1]])


def test_xla_paths_build_the_block_mask_in_graph():
  """xla / xla_chunked with block_mask= equal the reference given the dense mask (chunks cross the
  video/audio and prefix/target boundaries)."""
  import jax
  import jax.numpy as jnp

  from shared.kernels import xla
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(ks[0], (1, 75, 2, 8))
  k = jax.random.normal(ks[1], (1, 75, 1, 8))
  v = jax.random.normal(ks[2], (1, 75, 1, 8))
  for mask in (bm.tv2a(41, 34), bm.prefix_causal(20, 75)):
    fns = (lambda q, k, v: xla.attention(q, k, v, mask=jnp.asarray(mask.dense())),
           lambda q, k, v: xla.attention(q, k, v, block_mask=mask),
           lambda q, k, v: xla.attention_chunked(q, k, v, block_mask=mask, chunk_size=16))
    want, *got = jax.jit(lambda *a: [f(*a) for f in fns])(q, k, v)
    for g in got:
      np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)
