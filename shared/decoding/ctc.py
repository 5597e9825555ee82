"""CTC decoding: greedy (jitted, batched) and prefix beam search (host, per utterance).

  tokens, lengths = ctc_greedy(log_probs [B, T, V], input_lengths [B], blank=0)
      -> tokens [B, T] int32 (collapsed repeats, blanks removed, left-aligned, `pad` after), lengths [B]
  nbest = ctc_prefix_beam_search(log_probs [T, V] numpy, beam=8, blank=0, length=None)
      -> [(tokens tuple, log p(tokens | x))] best first; log p sums over all alignments of the prefix
         (exact for the prefixes kept in the beam: Graves 2006 / Hannun 2014 prefix search).
"""
from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("blank", "pad"))
def ctc_greedy(log_probs, input_lengths=None, *, blank: int = 0, pad: int = -1):
  """Best path: argmax per frame, merge repeats, drop blanks. Frames at or after input_lengths are ignored."""
  b, t, _ = log_probs.shape
  best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
  valid = jnp.ones((b, t), bool) if input_lengths is None else jnp.arange(t)[None] < input_lengths[:, None]
  prev = jnp.concatenate([jnp.full((b, 1), -1, jnp.int32), best[:, :-1]], axis=1)
  keep = valid & (best != blank) & (best != prev)
  slot = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, t)  # dropped frames go to a spill column
  out = jnp.full((b, t + 1), pad, jnp.int32).at[jnp.arange(b)[:, None], slot].set(best)
  return out[:, :t], keep.sum(axis=1)


def _lse(a: float, b: float) -> float:
  if a == -np.inf:
    return b
  if b == -np.inf:
    return a
  m = max(a, b)
  return m + np.log1p(np.exp(-abs(a - b)))


def ctc_prefix_beam_search(log_probs, beam: int = 8, blank: int = 0, length: int | None = None,
                           token_prune: int | None = None):
  """log_probs [T, V] (log-softmax outputs of one utterance) -> N-best [(tokens, logprob)] (up to `beam`).

  token_prune: only the `token_prune` most likely tokens of each frame are extended (speed)."""
  lp = np.asarray(log_probs, np.float64)
  t_max = lp.shape[0] if length is None else int(length)
  # prefix -> (log p ending in blank, log p ending in non-blank)
  beams = {(): (0.0, -np.inf)}
  for t in range(t_max):
    row = lp[t]
    cand = range(row.shape[0]) if token_prune is None else np.argsort(row)[::-1][:token_prune]
    nxt = collections.defaultdict(lambda: [-np.inf, -np.inf])
    for prefix, (pb, pnb) in beams.items():
      total = _lse(pb, pnb)
      # stay on the same prefix: blank, or repeat of the last token
      e = nxt[prefix]
      e[0] = _lse(e[0], total + row[blank])
      if prefix:
        e[1] = _lse(e[1], pnb + row[prefix[-1]])
      for c in cand:
        c = int(c)
        if c == blank:
          continue
        new = prefix + (c,)
        e = nxt[new]
        if prefix and c == prefix[-1]:
          e[1] = _lse(e[1], pb + row[c])  # a repeat needs a blank in between
        else:
          e[1] = _lse(e[1], total + row[c])
    scored = sorted(nxt.items(), key=lambda kv: _lse(*kv[1]), reverse=True)[:beam]
    beams = {k: tuple(v) for k, v in scored}
  return [(k, float(_lse(*v))) for k, v in sorted(beams.items(), key=lambda kv: _lse(*kv[1]), reverse=True)]
