"""Speaker similarity without a speaker-verification network: a voice embedding from the mel cepstrum.

SynthCue voices differ in pitch and vocal-tract length (formant scale); the mean mel cepstrum c1..c12 of the
louder frames captures the spectral envelope. Content also shapes it, so a clip is compared with its speaker's
centroid over the speaker's OTHER clips, never with its own real twin. Used for generated speech (UniCUE stage 2,
the TTS stand-in); with real data, a speaker-verification model's embeddings are the better measure.
"""
from __future__ import annotations

import numpy as np

from shared.metrics.template_asr import features

def voice_embedding(mel: np.ndarray) -> np.ndarray:
  """log-mel [M, 64] -> [12]: mean mel cepstrum c1..c12 over the louder half of the frames (the spectral envelope
  of the voiced speech: SynthCue voices differ in pitch and vocal-tract length)."""
  f = features(np.asarray(mel, np.float64))
  loud = f[:, 0] >= np.median(f[:, 0])
  return f[loud, 1:].mean(0)


def speaker_similarity(gen, real, speakers) -> dict:
  """spk_sim: mean cosine similarity of each generated clip's voice embedding with its speaker's centroid (the
  mean embedding of the speaker's OTHER real clips in the set, so the sentence's own content does not count);
  spk_sim_other: the same against the other speakers' centroids (what a generic voice scores). Embeddings are
  centred on the mean real embedding. A stand-in for a speaker-verification model (none is available here)."""
  g = np.stack([voice_embedding(m) for m in gen])
  r = np.stack([voice_embedding(m) for m in real])
  mu = r.mean(0)
  g, r = g - mu, r - mu
  spk = np.asarray(speakers)

  def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
  same, other = [], []
  for i, s in enumerate(spk):
    mates = (spk == s) & (np.arange(len(spk)) != i)
    if mates.any():
      same.append(cos(g[i], r[mates].mean(0)))
    other += [cos(g[i], r[spk == o].mean(0)) for o in np.unique(spk) if o != s]
  out = {}
  if same:
    out["spk_sim"] = float(np.mean(same))
  if other:
    out["spk_sim_other"] = float(np.mean(other))
  return out
