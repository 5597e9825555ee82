"""Template-based connected-syllable recogniser for SynthCue speech log-mels (the UniTalking learning check).

Classic, no neural model: whole-syllable templates matched by one-pass dynamic programming (connected-word
DTW; Sakoe 1979 "two-level", Ney 1984 "one-pass"), applied to what the model's audio decodes to:
`codecs(cfg).log_mel(audio_latents)` [4 T, 64] natural-log mel at 100 frames/s.

Features (`features`): per frame, the DCT-II of the log-mel (mel cepstrum) c0..c{N_CEP-1} (low quefrencies:
smooths away the speaker's pitch harmonics), each dimension divided by its spread over training speech
frames. c0 (level) stays absolute: normalising it to the utterance's loudest frames made the decoder
gain-invariant but also lifted a silent clip to speech level (it then decoded syllables); the model
reproduces training levels, and a +-3 dB level offset costs little (measured: SER 0.116 -> 0.126 / 0.149 on
64 held-out clips at -3 / +3 dB; per-speaker templates cover the training speakers' 19 dB level spread).

Templates (`fit_templates`): from `n_clips` TRAINING clips (held-out speakers never seen), each passed
through the same codec round trip as the model's data (audio -> MelCodec -> audio PCA -> back), every
syllable lying fully inside the T-frame window is cut at its ground-truth boundaries
(sample["syllable_frames"], 4 mel frames per video frame), time-normalised to `states` frames and averaged
per (syllable, training speaker): a multi-template, speaker-independent recogniser (a held-out voice is
matched by the nearest training voices). Silence is one extra single-state template: the mean of the frames
before the first and after the last syllable.

Decoding (`decode`): frame-synchronous DP over all template states at once (vectorised numpy; the only
Python loop runs over the 4 T frames). Within a template a path stays, advances one state or skips one
(DTW slopes 1/2..inf); a new syllable may start after any syllable/silence end, paying `word_penalty`
(insertion penalty); the best path ends in silence or a completed syllable, or - a clip cut by the window -
inside a syllable at least 70 % through its states. Word-level back-pointers give the syllables.
The text is never used.

Hyper-parameters (states 18, word_penalty 5, min_partial 0.7) were chosen on the "validation" split
(training speakers, unseen clips), never on the held-out speakers.

Scoring (`syllable_error_rate`, `evaluate`): corpus syllable error rate (S + D + I) / N (shared.metrics.text
word edit distance over space-separated syllables). `ser_chance` = the SER of the SAME hypotheses against
references paired with the wrong clip (hyp_i vs ref_{i+1}): what a decoder scores whose outputs are
syllable strings of the right length and sentence shape but unrelated to the audio. SynthCue sentences are
class-structured (S V O / S V A O, each class drawn from its own subset of the lexicon), so a position can
match by chance more often than 1/24, while length mismatches add insertions/deletions: chance measures
0.93-1.04 on held-out clips. References (`window_pinyin`): the syllables whose midpoint lies inside the
T-frame window (most clips are longer than T and are cut; the decoder accepts a final syllable cut past
70 % of its template).

Measured (tiny config, 400 training clips, first 64 "test" clips = held-out speakers, codec round trip as
`samples.eval_batch` gives): SER 0.116, chance 1.02; latents + N(0, 0.25^2 / 0.5^2 / 1) noise: 0.149 / 0.237 /
1.47; time-reversed 0.89; pure-noise latents 2.1 (insertions); a silent clip decodes to nothing.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft

from shared.errors import DataError
from shared.metrics.text import word_errors

N_CEP = 13          # mel-cepstral coefficients c0..c12
MEL_PER_FRAME = 4   # mel frames (100/s) per video frame (25 fps)


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


def _audio_source(cfg, split: str):
  """cfg's SynthCue source with video rendering off (the audio is drawn identically)."""
  from shared.data.synthcue import synthcue_source
  return synthcue_source(cfg.data, split, "speech", render_video=False)


def round_trip_log_mel(cfg, audio: np.ndarray) -> np.ndarray:
  """Audio [S] -> the codec round trip [4 T, n_mels] natural-log mel (what decoded model latents give)."""
  from unitalking_jax import data as data_lib
  c = data_lib.codecs(cfg)
  t = cfg.data.frames
  return c.log_mel(c.encode_audio(np.asarray(audio)[:t * 640], t * MEL_PER_FRAME))


def window_pinyin(sample: dict, frames: int) -> str:
  """The syllables of a SynthCue sample whose midpoint lies in its first `frames` video frames (space-joined)."""
  names = sample["pinyin"].split()
  mid = sample["syllable_frames"].astype(np.float64).mean(1)
  return " ".join(n for n, m in zip(names, mid) if m <= frames)


_CACHE: dict = {}


def fit_templates(cfg, n_clips: int = 400, states: int = 18, word_penalty: float = 5.0) -> Templates:
  """Templates from the first `n_clips` clips of the TRAINING split (cached per data config). Deterministic."""
  d = cfg.data
  key = (d.seed, d.lexicon_size, d.n_speakers, d.n_test_speakers, tuple(d.clauses), d.frames, d.mel_mean,
         d.mel_std, d.audio_pca, d.pca_fit_samples, n_clips, states, float(word_penalty))
  if key in _CACHE:
    return _CACHE[key]
  src = _audio_source(cfg, "train")
  syllables = tuple(src.world.syllables)
  index = {s: i for i, s in enumerate(syllables)}
  n_mel = d.frames * MEL_PER_FRAME
  segs: dict = {}
  sil, speech = [], []
  for i in range(min(n_clips, len(src))):
    smp = src[i]
    f = features(round_trip_log_mel(cfg, smp["audio"]))
    bounds = np.asarray(smp["syllable_frames"]) * MEL_PER_FRAME
    first, last = int(bounds[:, 0].min()), int(bounds[:, 1].max())
    sil.append(f[:first])
    if last < n_mel:
      sil.append(f[last:])
    for name, (s, e) in zip(smp["pinyin"].split(), bounds):
      if e <= n_mel:
        speech.append(f[s:e])
        segs.setdefault((index[name], int(smp["speaker"])), []).append(_resample(f[s:e], states))
  if not segs:
    raise DataError(f"no complete syllable in {n_clips} training clips: raise n_clips", key="n_clips")
  scale = np.concatenate(speech).std(0) + 1e-6
  keys = sorted(segs)
  means = np.stack([np.mean(segs[k], 0) for k in keys])                        # [M-1, L, F]
  silence = np.concatenate(sil).mean(0)
  means = np.concatenate([means, np.broadcast_to(silence, (1, states, silence.shape[0]))]) / scale
  labels = np.array([k[0] for k in keys] + [-1], np.int32)
  lengths = np.array([states] * len(keys) + [1], np.int32)
  out = Templates(syllables, means, labels, lengths, scale, float(word_penalty))
  _CACHE[key] = out
  return out


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


def evaluate(cfg, log_mels, texts, templates: Templates | None = None) -> dict:
  """log_mels: per clip [4 T, n_mels] natural-log mel; texts: per clip the reference syllables (string or
  list; use `window_pinyin` for SynthCue samples). Returns {"ser", "ser_chance" (hyp_i vs ref_{i+1}),
  "hyps"} (see the module docstring). Generated text-to-audio samples: generate from
  `samples.eval_batch(cfg, n)` (text of the first n "test" clips), then
  `evaluate(cfg, [codecs(cfg).log_mel(a) for a in audio], heldout_clips(cfg, n)[1])`."""
  log_mels, refs = list(log_mels), list(texts)
  if len(refs) != len(log_mels):
    raise DataError(f"{len(log_mels)} log-mels but {len(refs)} texts", key="texts")
  templates = templates or fit_templates(cfg)
  hyps = [decode(m, templates) for m in log_mels]
  shifted = refs[1:] + refs[:1]
  return {"ser": syllable_error_rate(hyps, refs),
          "ser_chance": syllable_error_rate(hyps, shifted) if len(refs) > 1 else float("nan"),
          "hyps": [" ".join(h) for h in hyps]}


def heldout_refs(cfg, n: int, split: str = "test") -> list[str]:
  """The window references of the first n clips of `split` (no audio encoding: for scoring generated clips)."""
  src = _audio_source(cfg, split)
  return [window_pinyin(src[i], cfg.data.frames) for i in range(n)]


def heldout_clips(cfg, n: int, split: str = "test") -> tuple[list, list]:
  """The first n clips of `split` (held-out speakers for "test"): (codec round-trip log-mels, window refs)."""
  src = _audio_source(cfg, split)
  mels = [round_trip_log_mel(cfg, src[i]["audio"]) for i in range(n)]
  return mels, heldout_refs(cfg, n, split)
