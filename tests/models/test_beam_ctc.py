"""Attention + CTC joint beam search (shared.decoding.search.joint_ctc_beam_search) and its vectorised CTC
prefix scorer (shared.decoding.ctc_prefix) against brute force: every alignment, every label sequence."""
from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from shared.decoding import ctc_prefix, search

BLANK = 0


def _log_softmax(x, axis=-1):
  x = x - x.max(axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis, keepdims=True))


def _ctc_inputs(seed, b, t, v, sharp=1.5):
  return _log_softmax(np.random.default_rng(seed).normal(size=(b, t, v)) * sharp)


def _collapse(path):
  out, prev = [], None
  for p in path:
    if p != BLANK and p != prev:
      out.append(int(p))
    prev = p
  return tuple(out)


@functools.lru_cache(maxsize=None)
def _exact_cached(key):
  lp, n = np.frombuffer(key[0]).reshape(key[1]), key[2]
  table = {}
  for path in itertools.product(range(lp.shape[1]), repeat=n):
    lab = _collapse(path)
    table[lab] = np.logaddexp(table.get(lab, -np.inf), sum(lp[i, p] for i, p in enumerate(path)))
  return table


def _exact(lp, length):
  """{label sequence: log P_ctc(seq | x)} summing every alignment of the first `length` frames (float64)."""
  lp = np.ascontiguousarray(lp, np.float64)
  return _exact_cached((lp.tobytes(), lp.shape, int(length)))


def _prefix_exact(table, h):
  """log of the sum of P_ctc(z | x) over every label sequence z that starts with h."""
  return np.logaddexp.reduce([s for z, s in table.items() if z[:len(h)] == tuple(h)] + [-np.inf])


# ---------------------------------------------------------------------------------------------- prefix scorer

def test_prefix_scores_equal_brute_force_with_lengths():
  """psi(h c) for every c, the final score of h, at every depth of every prefix, per-utterance lengths."""
  t, v = 5, 4
  lengths = np.array([5, 3, 4])
  lp = _ctc_inputs(0, 3, t, v)
  lp[1, 3:] = np.nan  # past the length: never read
  x = ctc_prefix.prepare(jnp.asarray(lp), jnp.asarray(lengths), BLANK)
  tables = [_exact(lp[i, :lengths[i]], lengths[i]) for i in range(3)]
  prefixes = [p for n in range(4) for p in itertools.product(range(1, v), repeat=n)]  # all 40 label prefixes
  # one hypothesis per prefix (K = 40), grown together from the empty prefix
  k = len(prefixes)
  state = ctc_prefix.init_state(x, k, BLANK)
  for depth in range(4):
    psi = np.asarray(ctc_prefix.prefix_scores(x, state, BLANK))             # [B, K, V]
    fin = np.asarray(ctc_prefix.final_scores(state))                        # [B, K]
    cand = jnp.asarray(np.tile(np.array([[3, 1]]), (3, k, 1)))
    psi_c = np.asarray(ctc_prefix.prefix_scores(x, state, BLANK, cand))     # pre-beam layout [B, K, 2]
    for j, p in enumerate(prefixes):
      if len(p) < depth:
        continue
      h = p[:depth]
      for i in range(3):
        np.testing.assert_allclose(fin[i, j], tables[i].get(h, -np.inf), rtol=1e-5, atol=1e-5)
        for c in range(1, v):
          np.testing.assert_allclose(psi[i, j, c], _prefix_exact(tables[i], h + (c,)), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(psi_c[i, j], psi[i, j, [3, 1]])
    grow = np.array([p[depth] if len(p) > depth else 1 for p in prefixes])
    state = ctc_prefix.extend(x, state, jnp.asarray(np.tile(grow, (3, 1))), BLANK)
    for j, p in enumerate(prefixes):
      if len(p) > depth:
        np.testing.assert_allclose(np.asarray(state.psi)[0, j], _prefix_exact(tables[0], p[:depth + 1]),
                                   rtol=1e-5, atol=1e-5)


def test_final_score_equals_optax_ctc_loss_and_reorder():
  b, t, v = 2, 9, 5
  lp = _ctc_inputs(1, b, t, v)
  lengths = np.array([9, 6])
  labels = np.array([[1, 1, 3, 2], [4, 2, 2, 0]])
  label_len = np.array([4, 3])
  x = ctc_prefix.prepare(jnp.asarray(lp), jnp.asarray(lengths), BLANK)
  state = ctc_prefix.init_state(x, 1, BLANK)
  for j in range(4):
    state = ctc_prefix.extend(x, state, jnp.asarray(labels[:, j:j + 1]), BLANK)
    if j == 2:
      at3 = np.asarray(ctc_prefix.final_scores(state))[1, 0]
  got = np.asarray(ctc_prefix.final_scores(state))[:, 0]
  loss = optax.ctc_loss(jnp.asarray(lp), jnp.asarray(np.arange(t)[None] >= lengths[:, None], jnp.float32),
                        jnp.asarray(labels), jnp.asarray(np.arange(4)[None] >= label_len[:, None], jnp.float32),
                        blank_id=BLANK)
  np.testing.assert_allclose(got[0], -np.asarray(loss)[0], rtol=1e-5)
  np.testing.assert_allclose(at3, -np.asarray(loss)[1], rtol=1e-5)
  # reorder: copy / swap hypotheses within each utterance
  two = ctc_prefix.reorder(ctc_prefix.init_state(x, 1, BLANK), jnp.zeros((b, 2), jnp.int32))
  two = ctc_prefix.extend(x, two, jnp.asarray([[1, 2], [3, 4]]), BLANK)
  swapped = ctc_prefix.reorder(two, jnp.asarray([[1, 0], [1, 1]]))
  np.testing.assert_array_equal(np.asarray(swapped.last), [[2, 1], [4, 4]])
  np.testing.assert_array_equal(np.asarray(swapped.r)[:, 0, 0], np.asarray(two.r)[:, 0, 1])
  np.testing.assert_array_equal(np.asarray(swapped.psi)[1], np.asarray(two.psi)[1, [1, 1]])


# ------------------------------------------------------------------------------------------------ toy decoder

@dataclasses.dataclass(frozen=True)
class ToyDecoder:
  """Deterministic decoder: logits = table[position, previous token] + per-utterance bias.
  params {"table": [P, V + 1, V]} (row V is the start token); cache {"prev", "pos" [N], "bias" [N, V]}."""

  def prefill(self, params, bias):
    n, v = bias.shape
    cache = {"prev": jnp.full((n,), v, jnp.int32), "pos": jnp.zeros((n,), jnp.int32), "bias": bias}
    return params["table"][0, v] + bias, cache

  def step(self, params, tokens, cache):
    pos = jnp.minimum(cache["pos"] + 1, params["table"].shape[0] - 1)
    return params["table"][pos, tokens] + cache["bias"], {**cache, "prev": tokens, "pos": pos}

  def reorder(self, cache, index):
    return jax.tree_util.tree_map(lambda a: jnp.take(a, index, axis=0), cache)

  def tile(self, cache, k):
    return self.reorder(cache, jnp.repeat(jnp.arange(cache["pos"].shape[0]), k))


def _toy(seed, b, v, positions, scale=2.0):
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(positions, v + 1, v)).astype(np.float32) * scale
  bias = rng.normal(size=(b, v)).astype(np.float32)
  return {"table": jnp.asarray(table)}, jnp.asarray(bias)


def _att_logprob(params, bias, seq):
  table, v = np.asarray(params["table"], np.float64), bias.shape[-1]
  prev, total = v, 0.0
  for i, y in enumerate(seq):
    total += _log_softmax(table[i, prev] + np.asarray(bias, np.float64))[y]
    prev = y
  return total


def _joint(params, bias, lp, length, seq, *, lam, lp_pow, eos, max_len):
  """The documented score of a returned sequence (brute-force CTC)."""
  table = _exact(lp[:length], length)
  att = _att_logprob(params, bias, seq)
  if seq[-1] == eos:
    c = table.get(tuple(seq[:-1]), -np.inf)
  else:
    assert len(seq) == max_len
    c = _prefix_exact(table, seq)
  if lam > 0 and BLANK in seq:
    return -np.inf
  total = (1 - lam) * att + (lam * c if lam > 0 else 0.0)
  return total / len(seq) ** lp_pow


def _returned(tokens, scores, eos):
  """[(sequence tuple up to and including eos, score)] for the slots holding a finished hypothesis."""
  out = []
  for row, s in zip(np.asarray(tokens), np.asarray(scores)):
    if not np.isfinite(s):
      continue
    row = list(row)
    out.append((tuple(row[:row.index(eos) + 1]) if eos in row else tuple(row), float(s)))
  return out


def _run(params, bias, lp, lengths, **kw):
  logits, cache = ToyDecoder().prefill(params, bias)
  return search.joint_ctc_beam_search(ToyDecoder(), params, logits, cache, jnp.asarray(lp, jnp.float32),
                                      None if lengths is None else jnp.asarray(lengths), **kw)


# -------------------------------------------------------------------------------------------------- the search

@pytest.mark.parametrize("lam,lp_pow", [(0.3, 0.0), (1.0, 0.0), (0.5, 1.0)])
def test_wide_beam_equals_exhaustive_search(lam, lp_pow):
  """V = {blank, a, b, eos}, at most 4 tokens: a beam holding every candidate returns the exact N-best."""
  v, eos, m, t = 4, 3, 4, 5
  params, bias = _toy(2, 2, v, m + 1)
  lp = _ctc_inputs(3, 2, t, v)
  lengths = np.array([5, 4])
  tokens, scores = _run(params, bias, lp, lengths, ctc_weight=lam, num_beams=32, max_new_tokens=m, eos_id=eos,
                        length_penalty=lp_pow)
  for i in range(2):
    every = [h + (eos,) for n in range(m) for h in itertools.product(range(v - 1), repeat=n)]
    every += list(itertools.product(range(v - 1), repeat=m))  # cut at max_new_tokens
    ref = sorted(((s, y) for y in every if np.isfinite(s := _joint(params, bias[i], lp[i], lengths[i], y, lam=lam,
                                                                    lp_pow=lp_pow, eos=eos, max_len=m))),
                 reverse=True)
    got = _returned(tokens[i], scores[i], eos)
    assert [y for y, _ in got] == [y for _, y in ref[:32]]
    np.testing.assert_allclose([s for _, s in got], [s for s, _ in ref[:32]], rtol=1e-5, atol=1e-5)


def test_nbest_sorted_and_equal_to_recomputed_joint_scores():
  """Small beams that prune, with and without pre-beam: every returned score is the joint score of its tokens."""
  b, v, eos, m, t = 3, 5, 4, 5, 5
  params, bias = _toy(4, b, v, m + 1, scale=1.0)
  lp = _ctc_inputs(5, b, t, v, sharp=2.5)
  lengths = np.array([5, 3, 4])
  for pre_beam in (None, 2):
    for lam, lp_pow in ((0.4, 1.0), (0.7, 0.0)):
      tokens, scores = _run(params, bias, lp, lengths, ctc_weight=lam, num_beams=3, max_new_tokens=m, eos_id=eos,
                            length_penalty=lp_pow, pre_beam=pre_beam)
      for i in range(b):
        got = _returned(tokens[i], scores[i], eos)
        assert len(got) == 3
        s = [x for _, x in got]
        assert s == sorted(s, reverse=True)
        assert len({y for y, _ in got}) == 3
        for y, x in got:
          assert BLANK not in y
          ref = _joint(params, bias[i], lp[i], lengths[i], y, lam=lam, lp_pow=lp_pow, eos=eos, max_len=m)
          np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5)
        for row in np.asarray(tokens[i]):  # pad_id (= eos) after the end
          if eos in list(row):
            assert (row[list(row).index(eos):] == eos).all()
      if pre_beam is None:  # a pre-beam over every label but eos (eos is always scored) is full scoring
        every = _run(params, bias, lp, lengths, ctc_weight=lam, num_beams=3, max_new_tokens=m, eos_id=eos,
                     length_penalty=lp_pow, pre_beam=v - 1)
        np.testing.assert_array_equal(np.asarray(every[0]), np.asarray(tokens))
        np.testing.assert_allclose(np.asarray(every[1]), np.asarray(scores), rtol=1e-6)


def test_batched_equals_per_utterance():
  b, v, eos, m, t = 3, 5, 4, 5, 5  # the shapes of the test above: compiled once
  params, bias = _toy(8, b, v, m + 1, scale=1.0)
  lp = _ctc_inputs(9, b, t, v)
  lengths = np.array([5, 3, 4])
  kw = dict(ctc_weight=0.3, num_beams=3, max_new_tokens=m, eos_id=eos, length_penalty=1.0, pre_beam=2)
  tokens, scores = _run(params, bias, lp, lengths, **kw)
  for i in range(b):
    one_t, one_s = _run(params, bias[i:i + 1], lp[i:i + 1], lengths[i:i + 1], **kw)
    np.testing.assert_array_equal(np.asarray(one_t)[0], np.asarray(tokens)[i])
    np.testing.assert_allclose(np.asarray(one_s)[0], np.asarray(scores)[i], rtol=1e-6)
  # frames past the length are ignored: cutting them off changes nothing
  cut_t, cut_s = _run(params, bias[1:2], lp[1:2, :lengths[1]], None, **kw)
  np.testing.assert_array_equal(np.asarray(cut_t)[0], np.asarray(tokens)[1])
  np.testing.assert_allclose(np.asarray(cut_s)[0], np.asarray(scores)[1], rtol=1e-5)


def test_zero_ctc_weight_is_beam_search():
  b, v, eos, m, t = 2, 10, 9, 6, 6
  params, bias = _toy(10, b, v, m + 1, scale=1.5)
  lp = _ctc_inputs(11, b, t, v)
  logits, cache = ToyDecoder().prefill(params, bias)
  for lp_pow in (1.0, 0.8):
    ref_t, ref_s = search.beam_search(ToyDecoder(), params, logits, cache, num_beams=3, max_new_tokens=m,
                                      eos_ids=(eos,), length_penalty=lp_pow)
    got_t, got_s = _run(params, bias, lp, np.array([6, 2]), ctc_weight=0.0, num_beams=3, max_new_tokens=m,
                        eos_id=eos, length_penalty=lp_pow)
    np.testing.assert_array_equal(np.asarray(got_t), np.asarray(ref_t))
    np.testing.assert_allclose(np.asarray(got_s), np.asarray(ref_s), rtol=1e-6)


def test_bad_inputs_raise_typed_errors():
  from shared.errors import ConfigError, DataError
  params, bias = _toy(12, 2, 5, 4)
  logits, cache = ToyDecoder().prefill(params, bias)
  kw = dict(ctc_weight=0.5, num_beams=2, max_new_tokens=3, eos_id=4)
  with pytest.raises(DataError, match="ctc_log_probs"):
    search.joint_ctc_beam_search(ToyDecoder(), params, logits, cache, jnp.zeros((2, 3, 6)), **kw)
  with pytest.raises(DataError, match="ctc_lengths"):
    search.joint_ctc_beam_search(ToyDecoder(), params, logits, cache, jnp.zeros((2, 3, 5)), jnp.ones((3,)), **kw)
  with pytest.raises(ConfigError, match="distinct"):
    search.joint_ctc_beam_search(ToyDecoder(), params, logits, cache, jnp.zeros((2, 3, 5)), **{**kw, "eos_id": 0})
