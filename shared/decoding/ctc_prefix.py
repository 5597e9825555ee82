"""Vectorised CTC prefix scorer (ESPnet's `CTCPrefixScoreTH`, Watanabe et al. 2017), jit-friendly.

For a hypothesis h (a label prefix, no blanks) the forward variables over the frames t = 0..T-1 are
  r_t^n(h)  log P(x_0..x_t emit h, the last frame emits the last label of h)
  r_t^b(h)  log P(x_0..x_t emit h, the last frame emits blank)
and for a candidate label c (Graves 2012, eq. 7.26-7.29), with phi_t = r_t^b(h) if c == last(h) else
log(e^{r_t^n(h)} + e^{r_t^b(h)}), and phi_{-1} = 0 for the empty h, -inf otherwise:
  r_t^n(hc) = logaddexp(r_{t-1}^n(hc), phi_{t-1}) + x_t(c)           (r_{-1}(hc) = -inf)
  r_t^b(hc) = logaddexp(r_{t-1}^b(hc), r_{t-1}^n(hc)) + x_t(blank)
  psi(hc)   = logsumexp_t (phi_{t-1} + x_t(c))   the prefix probability: log of the sum of P_ctc(z | x)
              over every label sequence z that starts with hc (all alignments)
  final(h)  = logaddexp(r_{T-1}^n(h), r_{T-1}^b(h)) = log P_ctc(h | x), the whole sequence is exactly h
              (the end-of-sentence score).
Per-utterance lengths: frames t >= length get x_t(blank) = 0 and x_t(c) = -inf (c != blank), so they add
nothing to psi and carry r unchanged into r^b: frames past the length are ignored.

Layout (B utterances, K hypotheses per utterance, T frames, V labels, C candidates per hypothesis):
  x = prepare(log_probs [B, T, V], lengths [B] | None, blank)   -> [T, B, V] float32, time-major, padded
  CTCPrefixState(r [T, B, K, 2] (r^n, r^b), psi [B, K] (0 for the empty prefix), last [B, K] int32
                 (last label of h, -1 for the empty prefix))
  state = init_state(x, K, blank)                 K empty hypotheses per utterance
  psi   = prefix_scores(x, state, blank, cand)    [B, K, C]: cand [B, K, C] label ids, or None for all V
  fin   = final_scores(state)                     [B, K]
  state = extend(x, state, tokens [B, K], blank)  every h extended by its token (one scan, r recomputed)
  state = reorder(state, index [B, K])            hypothesis index[b, j] of utterance b becomes j
Every function is jitted, pure jnp with a lax.scan over the frames: no Python loop over time or labels.
Scoring the blank label (or extending by it) is meaningless; callers mask it.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class CTCPrefixState(NamedTuple):
  r: jax.Array      # [T, B, K, 2] log r_t^n(h), log r_t^b(h)
  psi: jax.Array    # [B, K] log prefix probability of h (0 for the empty prefix)
  last: jax.Array   # [B, K] int32 last label of h, -1 for the empty prefix


@functools.partial(jax.jit, static_argnames=("blank",))
def prepare(log_probs, lengths=None, blank: int = 0):
  """log_probs [B, T, V] (log-softmax of the CTC head), lengths [B] -> x [T, B, V] with frames past the
  length set to (blank: 0, other labels: -inf)."""
  log_probs = jnp.asarray(log_probs, jnp.float32)
  b, t, v = log_probs.shape
  if lengths is None:
    return jnp.swapaxes(log_probs, 0, 1)
  valid = jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]                      # [B, T]
  pad = jnp.where(jnp.arange(v) == blank, 0.0, -jnp.inf).astype(jnp.float32)         # [V]
  return jnp.swapaxes(jnp.where(valid[:, :, None], log_probs, pad), 0, 1)


@functools.partial(jax.jit, static_argnames=("num_hyps", "blank"))
def init_state(x, num_hyps: int, blank: int = 0) -> CTCPrefixState:
  """The empty prefix for every hypothesis: r^n = -inf, r^b_t = sum_{s<=t} x_s(blank)."""
  t, b, _ = x.shape
  rb = jnp.cumsum(x[:, :, blank], axis=0)                                              # [T, B]
  r = jnp.stack([jnp.full_like(rb, -jnp.inf), rb], axis=-1)                            # [T, B, 2]
  r = jnp.broadcast_to(r[:, :, None, :], (t, b, num_hyps, 2))
  return CTCPrefixState(r=r, psi=jnp.zeros((b, num_hyps), jnp.float32),
                        last=jnp.full((b, num_hyps), -1, jnp.int32))


def _scan(x, state: CTCPrefixState, cand, blank: int, keep_r: bool):
  """Extend every hypothesis by each of its candidates. cand [B, K, C] int32, or None for all V labels.
  -> psi [B, K, C], and r [T, B, K, C, 2] when keep_r."""
  t, b, v = x.shape
  k = state.psi.shape[1]
  if cand is None:
    ids = jnp.arange(v, dtype=jnp.int32)[None, None, :]                                # [1, 1, V]
    take = lambda xt: xt[:, None, :]                                                   # [B, V] -> [B, 1, V]
  else:
    ids = cand
    bi = jnp.arange(b)[:, None, None]
    take = lambda xt: xt[bi, cand]                                                     # [B, V] -> [B, K, C]
  same = ids == state.last[:, :, None]                                                 # [B, K, C]
  shape = jnp.broadcast_shapes(same.shape, (b, k, 1))
  empty = (state.last < 0)[:, :, None]
  phi0 = jnp.broadcast_to(jnp.where(empty, 0.0, -jnp.inf), shape).astype(jnp.float32)  # phi_{-1}
  neg = jnp.full(shape, -jnp.inf, jnp.float32)

  def body(carry, inp):
    rn, rb, phi, psi = carry                                                           # [B, K, C] each
    xt, rh = inp                                                                       # [B, V], [B, K, 2]
    xc = take(xt)
    psi = jnp.logaddexp(psi, phi + xc)
    rn, rb = jnp.logaddexp(rn, phi) + xc, jnp.logaddexp(rb, rn) + xt[:, blank][:, None, None]
    total = jnp.logaddexp(rh[..., 0], rh[..., 1])[:, :, None]
    phi = jnp.where(same, rh[..., 1][:, :, None], total)
    return (rn, rb, phi, psi), (jnp.stack([rn, rb], -1) if keep_r else None)

  (_, _, _, psi), r = jax.lax.scan(body, (neg, neg, phi0, neg), (x, state.r))
  return psi, r


@functools.partial(jax.jit, static_argnames=("blank",))
def prefix_scores(x, state: CTCPrefixState, blank: int = 0, cand=None):
  """psi(h c) for every hypothesis h and candidate c: [B, K, C] (C = V when cand is None)."""
  return _scan(x, state, cand, blank, keep_r=False)[0]


@jax.jit
def final_scores(state: CTCPrefixState):
  """log P_ctc(h | x) [B, K]: the end-of-sentence score of every hypothesis."""
  return jnp.logaddexp(state.r[-1, :, :, 0], state.r[-1, :, :, 1])


@functools.partial(jax.jit, static_argnames=("blank",))
def extend(x, state: CTCPrefixState, tokens, blank: int = 0) -> CTCPrefixState:
  """Every hypothesis h[b, k] becomes h + tokens[b, k] (tokens [B, K]; not blank)."""
  tokens = jnp.asarray(tokens, jnp.int32)
  psi, r = _scan(x, state, tokens[:, :, None], blank, keep_r=True)
  return CTCPrefixState(r=r[:, :, :, 0], psi=psi[:, :, 0], last=tokens)


@jax.jit
def reorder(state: CTCPrefixState, index) -> CTCPrefixState:
  """index [B, K'] (hypothesis numbers within each utterance, values in [0, K)) -> state with K' hypotheses."""
  index = jnp.asarray(index, jnp.int32)
  return CTCPrefixState(r=jnp.take_along_axis(state.r, index[None, :, :, None], axis=2),
                        psi=jnp.take_along_axis(state.psi, index, axis=1),
                        last=jnp.take_along_axis(state.last, index, axis=1))
