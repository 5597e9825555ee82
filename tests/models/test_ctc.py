"""CTC greedy and prefix beam search against brute force and optax.ctc_loss."""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import optax

from shared.decoding import ctc_greedy, ctc_prefix_beam_search


def _collapse(path, blank=0):
  out, prev = [], None
  for p in path:
    if p != blank and p != prev:
      out.append(p)
    prev = p
  return tuple(out)


def _log_probs(rng, t, v, sharp=2.0):
  x = rng.normal(size=(t, v)) * sharp
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_greedy_batched_with_lengths():
  rng = np.random.default_rng(0)
  lp = np.stack([_log_probs(rng, 9, 5) for _ in range(3)])
  lengths = np.array([9, 5, 1])
  toks, n = ctc_greedy(jnp.asarray(lp), jnp.asarray(lengths))
  for i in range(3):
    ref = _collapse(lp[i, :lengths[i]].argmax(-1))
    assert tuple(np.asarray(toks[i, :n[i]])) == ref
    assert (np.asarray(toks[i, n[i]:]) == -1).all()


def test_prefix_beam_search_exact_against_brute_force():
  rng = np.random.default_rng(1)
  t, v = 5, 3
  lp = _log_probs(rng, t, v, sharp=1.0)
  exact = {}
  for path in itertools.product(range(v), repeat=t):
    lab = _collapse(path)
    exact[lab] = np.logaddexp(exact.get(lab, -np.inf), sum(lp[i, p] for i, p in enumerate(path)))
  ranked = sorted(exact.items(), key=lambda kv: -kv[1])
  nbest = ctc_prefix_beam_search(lp, beam=len(exact))  # a beam holding every prefix is exact
  assert [k for k, _ in nbest[:5]] == [k for k, _ in ranked[:5]]
  for k, s in nbest:
    np.testing.assert_allclose(s, exact[k], rtol=1e-9)


def test_prefix_scores_equal_optax_ctc_loss():
  rng = np.random.default_rng(2)
  lp = _log_probs(rng, 7, 4)
  nbest = ctc_prefix_beam_search(lp, beam=6)
  wide = dict(ctc_prefix_beam_search(lp, beam=4 ** 7))  # every prefix: exact
  for labels, score in nbest[:3]:
    if not labels:
      continue
    lab = np.zeros((1, 8), np.int32)
    lab[0, :len(labels)] = labels
    lab_pad = (np.arange(8) >= len(labels))[None].astype(np.float32)
    loss = optax.ctc_loss(jnp.asarray(lp[None], jnp.float32), jnp.zeros((1, 7)), jnp.asarray(lab),
                          jnp.asarray(lab_pad), blank_id=0)
    exact = -float(loss[0])
    assert score <= exact + 1e-4  # a pruned beam only loses alignments
    np.testing.assert_allclose(wide[labels], exact, rtol=1e-5)
  # the best beam is at least as likely as the greedy path's labelling
  greedy = _collapse(lp.argmax(-1))
  assert nbest[0][1] >= dict(nbest).get(greedy, -np.inf)
