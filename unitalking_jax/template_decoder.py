"""Template-based connected-syllable recogniser for SynthCue speech log-mels (the UniTalking learning check).

The recogniser itself (features, Templates, decode, syllable_error_rate, fit, score) lives in
shared/metrics/template_asr.py (UniCUE scores its generated speech with it too); this module keeps what is
UniTalking's: templates fitted through its codec round trip, window references, held-out clips, and re-exports
the shared names (td.features, td.Templates, td.decode, ...).

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

import numpy as np

from shared.errors import DataError
from shared.metrics import template_asr
from shared.metrics.template_asr import (N_CEP, Templates, _resample, decode, features, fit,  # noqa: F401
                                         syllable_error_rate)

MEL_PER_FRAME = 4   # mel frames (100/s) per video frame (25 fps)


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
         d.mel_std, d.audio_pca, d.pca_fit_samples, d.get("audio_codec", "pca"), d.get("audio_codec_path", ""),
         n_clips, states, float(word_penalty))           # the codec too: the templates read its round trip
  if key in _CACHE:
    return _CACHE[key]
  src = _audio_source(cfg, "train")

  def clips():
    for i in range(min(n_clips, len(src))):
      smp = src[i]
      bounds = np.asarray(smp["syllable_frames"]) * MEL_PER_FRAME
      yield round_trip_log_mel(cfg, smp["audio"]), smp["pinyin"].split(), bounds, int(smp["speaker"])
  try:
    out = template_asr.fit(clips(), src.world.syllables, states=states, word_penalty=word_penalty)
  except DataError as e:
    raise DataError(f"no complete syllable in {n_clips} training clips: raise n_clips", key="n_clips") from e
  _CACHE[key] = out
  return out


def evaluate(cfg, log_mels, texts, templates: Templates | None = None) -> dict:
  """log_mels: per clip [4 T, n_mels] natural-log mel; texts: per clip the reference syllables (string or
  list; use `window_pinyin` for SynthCue samples). Returns {"ser", "ser_chance" (hyp_i vs ref_{i+1}),
  "hyps"} (see the module docstring). Generated text-to-audio samples: generate from
  `samples.eval_batch(cfg, n)` (text of the first n "test" clips), then
  `evaluate(cfg, [codecs(cfg).log_mel(a) for a in audio], heldout_clips(cfg, n)[1])`."""
  templates = templates or fit_templates(cfg)
  try:
    return template_asr.score(log_mels, texts, templates)
  except DataError as e:
    raise DataError(str(e).replace("references", "texts"), key="texts") from None


def heldout_refs(cfg, n: int, split: str = "test") -> list[str]:
  """The window references of the first n clips of `split` (no audio encoding: for scoring generated clips)."""
  src = _audio_source(cfg, split)
  return [window_pinyin(src[i], cfg.data.frames) for i in range(n)]


def heldout_clips(cfg, n: int, split: str = "test") -> tuple[list, list]:
  """The first n clips of `split` (held-out speakers for "test"): (codec round-trip log-mels, window refs)."""
  src = _audio_source(cfg, split)
  mels = [round_trip_log_mel(cfg, src[i]["audio"]) for i in range(n)]
  return mels, heldout_refs(cfg, n, split)
