"""Template-based connected-syllable recogniser on natural-log mel spectrograms (a classic recogniser for
generated speech: no neural model, no text seen).

Whole-syllable templates matched by one-pass dynamic programming (connected-word DTW; Sakoe 1979 "two-level",
Ney 1984 "one-pass"). Moved here from unitalking_jax/template_decoder.py (which keeps its SynthCue / codec-specific
fitting and re-exports these names) so that every system scoring generated speech uses one recogniser: UniTalking
on its codec's log-mel, UniCUE on the AudioLDM log-mel its VAE decodes to (both 100 frames/s, 64 bins).

Features (`features`): per frame, the DCT-II of the log-mel (mel cepstrum) c0..c{N_CEP-1} (low quefrencies:
smooths away the speaker's pitch harmonics), each dimension divided by its spread over training speech frames
(`Templates.scale`). c0 (level) stays absolute.

Templates (`fit`): from clips with known syllable boundaries (log-mel [T, n_mels], syllable names, [N, 2]
(start, end) mel frames, speaker id): every syllable lying fully inside its clip is cut at its boundaries,
time-normalised to `states` frames and averaged per (syllable, speaker): a multi-template, speaker-independent
recogniser (fit on training speakers only; a held-out voice is matched by the nearest training voices). Silence is
one extra single-state template: the mean of the frames before the first and after the last syllable.

Decoding (`decode`): frame-synchronous DP over all template states at once (vectorised numpy; the only Python
loop runs over the frames). Within a template a path stays, advances one state or skips one (DTW slopes
1/2..inf); a new syllable may start after any syllable/silence end, paying `word_penalty` (insertion penalty);
the best path ends in silence or a completed syllable, or - a clip cut by its window - inside a syllable at least
`min_partial` of the way through its states. Word-level back-pointers give the syllables.

Scoring (`syllable_error_rate`, `score`): corpus syllable error rate (S + D + I) / N over space-separated
syllables; `ser_chance` = the same hypotheses against references paired with the wrong clip (hyp_i vs ref_{i+1}).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np
import scipy.fft

from shared.errors import DataError
from shared.metrics.text import word_errors

N_CEP = 13          # mel-cepstral coefficients c0..c12


@dataclasses.dataclass(frozen=True, eq=False)
class Templates:
  """syllables: the lexicon (V names); means [M, L, F] template states; labels [M] int (index into
  syllables, -1 = silence); lengths [M] states used (silence 1); scale [F] feature divisor;
  word_penalty: added per hypothesised syllable (units: per-frame mean squared scaled distance)."""
  syllables: tuple
  means: np.ndarray
  labels: np.ndarray
  lengths: np.ndarray
  scale: np.ndarray
  word_penalty: float

  def decode(self, log_mel: np.ndarray) -> list[str]:
    return decode(log_mel, self)


def features(log_mel: np.ndarray) -> np.ndarray:
  """[T, n_mels] natural-log mel -> [T, N_CEP] float64 mel cepstrum c0..c12 (orthonormal DCT-II over bins;
  unscaled: `Templates.scale` divides later). c0 stays absolute (see the module docstring)."""
  m = np.asarray(log_mel, np.float64)
  if m.ndim != 2:
    raise DataError(f"log-mel of shape {m.shape}: expected [T, n_mels]", key="log_mel")
  return scipy.fft.dct(m, type=2, norm="ortho", axis=-1)[:, :N_CEP]


def _resample(x: np.ndarray, n: int) -> np.ndarray:
  """[T, F] -> [n, F] by linear interpolation over normalised time (segment-centred)."""
  pos = (np.arange(n) + 0.5) * x.shape[0] / n - 0.5
  lo = np.clip(np.floor(pos).astype(int), 0, x.shape[0] - 1)
  hi = np.minimum(lo + 1, x.shape[0] - 1)
  w = np.clip(pos - lo, 0.0, 1.0)[:, None]
  return x[lo] * (1 - w) + x[hi] * w


def fit(clips: Iterable[tuple], syllables: Sequence[str], *, states: int = 18, word_penalty: float = 5.0
        ) -> Templates:
  """Templates from clips (log_mel [T, n_mels] natural log, syllable names [N], bounds [N, 2] (start, end) in
  mel frames, speaker id): per (syllable, speaker) the mean of the time-normalised segments lying fully inside
  the clip; silence = the mean frame before the first / after the last syllable. Deterministic."""
  syllables = tuple(syllables)
  index = {s: i for i, s in enumerate(syllables)}
  segs: dict = {}
  sil, speech = [], []
  for log_mel, names, bounds, speaker in clips:
    f = features(log_mel)
    n_mel = f.shape[0]
    bounds = np.asarray(bounds, np.int64)
    first, last = int(bounds[:, 0].min()), int(bounds[:, 1].max())
    sil.append(f[:first])
    if last < n_mel:
      sil.append(f[last:])
    for name, (s, e) in zip(names, bounds):
      if e <= n_mel and e > s:
        if name not in index:
          raise DataError(f"syllable {name!r} is not in the template lexicon ({len(syllables)} syllables)",
                          key="syllables")
        speech.append(f[s:e])
        segs.setdefault((index[name], int(speaker)), []).append(_resample(f[s:e], states))
  if not segs:
    raise DataError("no complete syllable in the clips: give more (or longer) clips", key="clips")
  scale = np.concatenate(speech).std(0) + 1e-6
  keys = sorted(segs)
  means = np.stack([np.mean(segs[k], 0) for k in keys])                        # [M-1, L, F]
  silence = np.concatenate(sil).mean(0)
  means = np.concatenate([means, np.broadcast_to(silence, (1, states, silence.shape[0]))]) / scale
  labels = np.array([k[0] for k in keys] + [-1], np.int32)
  lengths = np.array([states] * len(keys) + [1], np.int32)
  return Templates(syllables, means, labels, lengths, scale, float(word_penalty))


def decode(log_mel: np.ndarray, templates: Templates, *, min_partial: float = 0.7) -> list[str]:
  """[T, n_mels] natural-log mel -> the recognised syllables (one-pass connected-template DP, see module
  docstring). min_partial: a syllable cut by the clip end counts once its path is this far through its
  template (fraction of states)."""
  x = features(log_mel) / templates.scale                                      # [T, F]
  mu, lengths, labels = templates.means, templates.lengths, templates.labels
  m_n, l_n, _ = mu.shape
  t_n = x.shape[0]
  dist = ((x[:, None, None, :] - mu[None]) ** 2).mean(-1)                      # [T, M, L]
  valid = np.arange(l_n)[None] < lengths[:, None]                             # [M, L]
  dist = np.where(valid[None], dist, np.inf)
  rows, exit_ = np.arange(m_n), lengths - 1
  penalty = np.where(labels >= 0, templates.word_penalty, 0.0)                 # [M]
  inf = np.inf
  cost = np.full((m_n, l_n), inf)
  cost[:, 0] = penalty + dist[0, :, 0]
  start = np.zeros((m_n, l_n), np.int64)
  end_cost, end_tmpl, end_start = np.empty(t_n), np.empty(t_n, np.int64), np.empty(t_n, np.int64)

  def record(t):
    e = cost[rows, exit_]
    j = int(np.argmin(e))
    end_cost[t], end_tmpl[t], end_start[t] = e[j], j, start[j, exit_[j]]

  record(0)
  pad = np.full((m_n, 2), inf)
  spad = np.zeros((m_n, 2), np.int64)
  for t in range(1, t_n):
    prev = np.concatenate([pad, cost], 1)                                      # [M, L + 2]
    sprev = np.concatenate([spad, start], 1)
    cand = np.stack([prev[:, 2:], prev[:, 1:-1], prev[:, :-2]])                # stay, advance, skip
    scand = np.stack([sprev[:, 2:], sprev[:, 1:-1], sprev[:, :-2]])
    k = np.argmin(cand, 0)
    best = np.take_along_axis(cand, k[None], 0)[0]
    st = np.take_along_axis(scand, k[None], 0)[0]
    enter = end_cost[t - 1] + penalty                                          # a new template at state 0
    new = enter < best[:, 0]
    best[:, 0] = np.where(new, enter, best[:, 0])
    st[:, 0] = np.where(new, t, st[:, 0])
    cost, start = best + dist[t], st
    record(t)
  # final: a completed syllable / silence, or a syllable cut by the window past min_partial of its states
  part = valid & (np.arange(l_n)[None] >= np.ceil(min_partial * lengths[:, None]) - 1) & (labels[:, None] >= 0)
  pc = np.where(part, cost, inf)
  j, l = np.unravel_index(int(np.argmin(pc)), pc.shape)
  if pc[j, l] < end_cost[-1]:
    words, s = [int(j)], int(start[j, l])
  else:
    words, s = [int(end_tmpl[-1])], int(end_start[-1])
  t = s - 1
  while t >= 0:
    words.append(int(end_tmpl[t]))
    t = int(end_start[t]) - 1
  return [templates.syllables[labels[w]] for w in reversed(words) if labels[w] >= 0]


def syllable_error_rate(hyps, refs) -> float:
  """Corpus SER (S + D + I) / N; hyps / refs: per clip a list of syllables or a space-separated string."""
  def join(x):
    return x if isinstance(x, str) else " ".join(x)
  return word_errors([join(r) for r in refs], [join(h) for h in hyps]).rate


def score(log_mels, refs, templates: Templates) -> dict:
  """log_mels: per clip [T, n_mels] natural-log mel; refs: per clip the reference syllables (string or list).
  -> {"ser", "ser_chance" (hyp_i vs ref_{i+1}), "hyps"}."""
  log_mels, refs = list(log_mels), list(refs)
  if len(refs) != len(log_mels):
    raise DataError(f"{len(log_mels)} log-mels but {len(refs)} references", key="refs")
  hyps = [decode(m, templates) for m in log_mels]
  shifted = refs[1:] + refs[:1]
  return {"ser": syllable_error_rate(hyps, refs),
          "ser_chance": syllable_error_rate(hyps, shifted) if len(refs) > 1 else float("nan"),
          "hyps": [" ".join(h) for h in hyps]}
