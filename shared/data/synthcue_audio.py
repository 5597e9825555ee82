"""SynthCue audio: formant-style synthesis of syllables at 16 kHz (numpy, vectorised).

Voiced sound is source-filter synthesis (Klatt-style): glottal pulses at the speaker's f0 contour
(spectral tilt of a one-pole low-pass), shaped by the magnitude response of a cascade of three
resonators F1-F3 (scaled by the speaker's vocal-tract factor), applied per 10 ms frame by windowed
overlap-add; the formants move linearly between the phones of the final. Initials add a closure
(silence), a noise burst, band-limited frication/aspiration noise, or a voiced nasal/approximant
murmur (`INITIAL_ACOUSTICS`). Loudness follows the vowel's mouth opening.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from shared.data.synthcue_phonology import FINALS, INITIAL_ACOUSTICS, NASAL_PHONES, PHONES

_BANDWIDTHS = np.array([90.0, 110.0, 170.0], np.float32)
_CTRL = 32  # control-rate hop in samples (2 ms at 16 kHz)
_TILT = 0.92  # glottal source: one-pole low-pass 1 / (1 - 0.92 z^-1)


def _band_noise(rng: np.random.Generator, n: int, centre: float, bw: float, sr: int) -> np.ndarray:
  """White noise shaped to a Gaussian band (centre, bw in Hz), unit RMS. [n] float32."""
  if n <= 0:
    return np.zeros((0,), np.float32)
  spec = scipy.fft.rfft(rng.standard_normal(n, dtype=np.float32))
  f = np.fft.rfftfreq(n, 1.0 / sr).astype(np.float32)
  spec *= np.exp(-0.5 * ((f - centre) / max(bw, 1.0)) ** 2)
  x = scipy.fft.irfft(spec, n)
  return x / (np.sqrt(np.mean(x * x)) + 1e-8)


def synthesize(units: list[tuple[str, str, int, int, int]], n_samples: int, *, f0: float,
               vt_scale: float, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
  """Audio of a sequence of syllables.

  Args:
    units: (initial, final, start_sample, consonant_end_sample, end_sample) per syllable.
    n_samples: total length S.
    f0: speaker's mean pitch (Hz); vt_scale: formant scale (shorter tract -> higher formants).
  Returns:
    [S] float32 in [-1, 1].
  """
  n_ctrl = n_samples // _CTRL + 2
  t_ctrl = np.arange(n_ctrl) * _CTRL
  formants = np.tile(np.array([500.0, 1500.0, 2500.0], np.float32), (n_ctrl, 1))
  voice = np.zeros(n_ctrl, np.float32)     # voicing amplitude (control rate)
  pitch = np.full(n_ctrl, f0, np.float32)
  out = np.zeros(n_samples, np.float32)
  for ini, fin, s, c, e in units:
    manner, centre, bw, aspirated, son = INITIAL_ACOUSTICS[ini]
    cs, ce = s // _CTRL, min(c // _CTRL, n_ctrl)
    vs, ve = ce, min(max(e // _CTRL, ce + 1), n_ctrl)
    # pitch: a random gentle contour per syllable around the speaker mean
    pitch[cs:ve] = f0 * np.linspace(1.0 + rng.uniform(-0.08, 0.08), 1.0 + rng.uniform(-0.1, 0.05),
                                    ve - cs)
    # consonant
    if manner == "sonorant":
      formants[cs:ce] = np.asarray(son, np.float32) * vt_scale
      voice[cs:ce] = 0.35
    elif manner != "none":
      n = c - s
      clos = int(0.35 * n) if manner in ("stop", "affricate") else 0
      burst = min(160, n - clos)
      amp = 0.06 if manner == "fricative" else 0.1
      seg = np.zeros(n, np.float32)
      seg[clos:clos + burst] = 0.25 * _band_noise(rng, burst, centre, bw * 2, sr)
      if manner in ("fricative", "affricate") or aspirated:
        fric_n = n - clos - burst if (manner != "stop" or aspirated) else 0
        if fric_n > 0:
          env = np.sin(np.linspace(0, np.pi, fric_n)).astype(np.float32) ** 0.5
          cen, band = (centre, bw) if manner != "stop" else (1200.0, 2500.0)
          seg[clos + burst:] = (amp * (1.5 if aspirated else 1.0)) * env * _band_noise(
              rng, fric_n, cen, band, sr)
      out[s:c] += seg
      formants[cs:ce] = np.asarray(PHONES[FINALS[fin][0]][0], np.float32) * vt_scale
    # vowel: formants interpolated through the final's phones
    phones = FINALS[fin]
    targets = np.array([PHONES[p][0] for p in phones], np.float32) * vt_scale
    n = ve - vs
    if len(phones) == 1:
      formants[vs:ve] = targets[0]
    else:
      pos = np.linspace(0, len(phones) - 1, n)
      for k in range(3):
        formants[vs:ve, k] = np.interp(pos, np.arange(len(phones)), targets[:, k])
    openness = np.array([PHONES[p][1][0] for p in phones], np.float32)
    level = 0.5 + 0.5 * np.interp(np.linspace(0, len(phones) - 1, n), np.arange(len(phones)),
                                  openness)
    ramp = np.minimum(1.0, np.minimum(np.arange(n) + 1, n - np.arange(n)) / 4.0)
    voice[vs:ve] = 0.6 * level * ramp
    if phones[-1] in NASAL_PHONES:  # nasal coda: weaker
      tail = max(1, n // 3)
      voice[ve - tail:ve] *= 0.55
  # source: glottal pulses (one per pitch period, amplitude = voicing)
  t = np.arange(n_samples, dtype=np.float32)
  f0_s = np.interp(t, t_ctrl, pitch)
  cycles = np.cumsum(f0_s / sr)
  src = np.zeros(n_samples, np.float32)
  idx = np.nonzero(np.diff(np.floor(cycles), prepend=0.0) > 0)[0]
  src[idx] = np.interp(idx, t_ctrl, voice)
  # filter: the cascade's magnitude response per 10 ms frame, applied by windowed overlap-add
  hop, win, nfft = 160, 320, 480          # nfft = 3 hops: overlap-add by three shifted sums
  n_fr = n_samples // hop + 2
  padded = np.zeros((n_fr + 1) * hop + win, np.float32)
  padded[hop:hop + n_samples] = src
  frames = padded[np.arange(n_fr)[:, None] * hop + np.arange(win)[None, :]]
  frames *= np.hanning(win + 1)[:win].astype(np.float32)
  spec = scipy.fft.rfft(frames, nfft, axis=-1)                          # [F, nfft/2+1] complex64
  centres = np.clip(np.arange(n_fr) * hop - hop + win // 2, 0, n_samples - 1)
  fr_formants = formants[np.minimum(centres // _CTRL, n_ctrl - 1)]      # [F, 3]
  w = 2 * np.pi * np.fft.rfftfreq(nfft).astype(np.float32)[None, :]
  cos1, sin1, cos2, sin2 = np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)
  gain = np.broadcast_to(1.0 / np.sqrt(1.0 - 2 * _TILT * cos1 + _TILT * _TILT),  # spectral tilt
                         (n_fr, w.shape[1])).astype(np.float32)
  for j in range(3):   # |H(w)| of each resonator (zero-phase filtering; phase is inaudible here)
    r2 = np.float32(np.exp(-2 * np.pi * _BANDWIDTHS[j] * vt_scale / sr))
    c = (2 * np.sqrt(r2) * np.cos(2 * np.pi * fr_formants[:, j] / sr)).astype(np.float32)[:, None]
    re, im = 1.0 - c * cos1 + r2 * cos2, c * sin1 - r2 * sin2
    gain *= (1.0 - c + r2) / np.sqrt(re * re + im * im)
  spec *= gain
  y = scipy.fft.irfft(spec, nfft, axis=-1).reshape(n_fr, 3, hop)       # [F, 3, hop]
  voiced = np.zeros((n_fr + 2, hop), np.float32)
  for i in range(3):
    voiced[i:i + n_fr] += y[:, i]
  out += 0.4 * voiced.reshape(-1)[hop:hop + n_samples]
  out += 0.002 * rng.standard_normal(n_samples).astype(np.float32)  # room noise floor
  return np.clip(out, -1.0, 1.0).astype(np.float32)
