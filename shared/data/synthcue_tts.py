"""A text-to-speech stand-in for SynthCue: syllables -> speech in a given speaker's voice, with no video.

The baselines "recognise, then speak" (UniCUE's CSR -> F5-TTS, a lip reader -> TTS) need a TTS that clones the
reference voice and fills a target duration but does not see the face. Here that is SynthCue's own formant
synthesiser (`synthcue_audio.synthesize`) driven by the speaker's pitch, vocal-tract scale and mean speaking rate
from the world's speaker table, the syllables laid out evenly at that rate and centred in the clip (a TTS given the
clip's duration), so its timing is the voice's, not the cuer's: intelligible if the text is right, not in sync.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from shared.data import synthcue_phonology as ph
from shared.data.synthcue_audio import synthesize
from shared.errors import DataError


def speak(world, speaker: int, syllables: Sequence[str], n_frames: int, *, fps: int = 25, sample_rate: int = 16000,
          seed: int = 0) -> np.ndarray:
  """syllable names (`world.syllables` entries) -> audio [n_frames * sample_rate / fps] float32 in `speaker`'s
  voice: syllables of round(rate) frames each (shortened to fit n_frames), centred; the vowel onset 30% into
  a syllable with an initial, as SynthCue's own clips. An empty list gives silence."""
  hop = sample_rate // fps
  n = len(syllables)
  if not 0 <= int(speaker) < len(world.speakers["f0"]):
    raise DataError(f"speaker {speaker} is not in this SynthCue world ({len(world.speakers['f0'])} speakers)",
                    key="speaker")
  if n == 0:
    return np.zeros((n_frames * hop,), np.float32)
  unknown = [s for s in syllables if s not in world.syllables]
  if unknown:
    raise DataError(f"syllables {unknown} are not in the SynthCue lexicon", key="syllables")
  sp = {k: v[int(speaker)] for k, v in world.speakers.items()}
  dur = max(4, int(round(float(sp["rate"]))))
  if n * dur > n_frames - 2:
    dur = max(2, (n_frames - 2) // n)
  start = (n_frames - n * dur) // 2
  units = []
  for j, syl in enumerate(syllables):
    ini, fin = ph.split_syllable(syl)
    s, e = start + j * dur, start + (j + 1) * dur
    v = s + (0 if ini == "" else max(1, int(round(0.3 * (e - s)))))
    units.append((ini, fin, s * hop, v * hop, e * hop))
  return synthesize(units, n_frames * hop, f0=float(sp["f0"]), vt_scale=float(sp["vt"]),
                    rng=np.random.default_rng(seed), sr=sample_rate)


def chars_to_syllables(world, text: str) -> list[str]:
  """Characters of a transcript -> their syllable names (the lexicon's reading; characters outside it dropped)."""
  index = {c: i for i, c in enumerate(world.chars)}
  return [world.syllables[world.char_syllable[index[c]]] for c in text if c in index]
