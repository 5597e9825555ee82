"""Augmentations (numpy, host side), each seeded by an explicit np.random.Generator.

Video arrays are [T, H, W] (gray lips) or [T, H, W, C]; audio [S] float32; text a str.
Mouth-ROI convention (auto_avsr / AV-HuBERT): 96x96 crops, train random crop 88 + flip, eval centre
crop 88, then normalise with mean 0.421, std 0.165 (on [0, 1] pixels).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from shared.errors import ConfigError

LIP_MEAN, LIP_STD = 0.421, 0.165


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_crop(video: np.ndarray, h: int, w: int):
  if video.ndim < 3 or video.shape[1] < h or video.shape[2] < w:
    raise ConfigError(f"crop {h}x{w} larger than frames {video.shape} ([T, H, W(, C)] expected)")


def center_crop(video: np.ndarray, size: int | tuple[int, int] = 88) -> np.ndarray:
  """Same centre window for every frame: [T, H, W, ...] -> [T, h, w, ...]."""
  h, w = _size(size)
  _check_crop(video, h, w)
  top, left = (video.shape[1] - h) // 2, (video.shape[2] - w) // 2
  return video[:, top:top + h, left:left + w]


def random_crop(video: np.ndarray, rng: np.random.Generator, size: int | tuple[int, int] = 88
                ) -> np.ndarray:
  """One random window, shared by all frames of the clip: [T, H, W, ...] -> [T, h, w, ...]."""
  h, w = _size(size)
  _check_crop(video, h, w)
  top = int(rng.integers(0, video.shape[1] - h + 1))
  left = int(rng.integers(0, video.shape[2] - w + 1))
  return video[:, top:top + h, left:left + w]


def horizontal_flip(video: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  """Mirror the whole clip left-right with probability p."""
  return video[:, :, ::-1] if rng.random() < p else video


def color_jitter(video: np.ndarray, rng: np.random.Generator, *, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, permute_channels: bool = True,
                 p_gray: float = 0.2) -> np.ndarray:
  """One random colour transform for the whole clip: uint8 [T, H, W, 3] -> uint8 [T, H, W, 3].

  In order (torchvision's ColorJitter factors, drawn once per clip so frames stay consistent): brightness
  x * b, b ~ U[1 - brightness, 1 + brightness]; contrast (x - m) * c + m around the clip's mean gray m;
  saturation gray + (x - gray) * s; then, if permute_channels, a random RGB channel order (a hue change
  that keeps edges), and with probability p_gray the ITU-R 601 gray copied to all three channels.
  """
  x = np.asarray(video)
  if x.ndim < 2 or x.shape[-1] != 3:
    raise ConfigError(f"color_jitter: expected RGB frames [..., 3], got shape {x.shape}")
  f = x.astype(np.float32)
  gray_w = np.array([0.299, 0.587, 0.114], np.float32)
  f *= np.float32(rng.uniform(1 - brightness, 1 + brightness))
  m = np.float32((f @ gray_w).mean())
  f = (f - m) * np.float32(rng.uniform(1 - contrast, 1 + contrast)) + m
  g = (f @ gray_w)[..., None]
  f = g + (f - g) * np.float32(rng.uniform(1 - saturation, 1 + saturation))
  if permute_channels:
    f = f[..., rng.permutation(3)]
  if rng.random() < p_gray:
    f = np.repeat((f @ gray_w)[..., None], 3, axis=-1)
  return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def random_translate(video: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
  """Shift the whole clip by one random (dy, dx) in [-max_shift, max_shift] pixels, edges replicated:
  [T, H, W, ...] -> same shape (the framing of a camera that sits a little elsewhere)."""
  x = np.asarray(video)
  m = int(max_shift)
  if m < 0 or x.ndim < 3 or m >= min(x.shape[1], x.shape[2]):
    raise ConfigError(f"random_translate: max_shift={max_shift} for frames {x.shape} ([T, H, W(, C)], "
                      "0 <= max_shift < H, W)")
  if m == 0:
    return x
  dy, dx = (int(v) for v in rng.integers(-m, m + 1, 2))
  h, w = x.shape[1], x.shape[2]
  rows = np.clip(np.arange(h) - dy, 0, h - 1)
  cols = np.clip(np.arange(w) - dx, 0, w - 1)
  return x[:, rows][:, :, cols]


def normalize_lips(lips: np.ndarray) -> np.ndarray:
  """uint8 [T, h, w] -> float32 (x / 255 - 0.421) / 0.165."""
  return ((np.asarray(lips, np.float32) / 255.0 - LIP_MEAN) / LIP_STD).astype(np.float32)


def time_mask(x: np.ndarray, rng: np.random.Generator, *, n_masks: int = 1, max_width: int = 10,
              value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mask n_masks random spans of up to max_width steps along axis 0 (video frames or feature frames).

  value None fills with the clip's mean (auto_avsr), else with value. Returns (masked copy, mask [T]
  bool, True where masked).
  """
  t = x.shape[0]
  mask = np.zeros((t,), bool)
  for _ in range(n_masks):
    width = int(rng.integers(0, min(max_width, t) + 1))
    if width == 0:
      continue
    start = int(rng.integers(0, t - width + 1))
    mask[start:start + width] = True
  out = np.array(x, copy=True)
  if mask.any():
    out[mask] = np.asarray(x.mean(axis=0) if value is None else value).astype(x.dtype)
  return out, mask


def _power(x: np.ndarray) -> float:
  return float(np.mean(np.asarray(x, np.float64) ** 2))


def babble(others: Sequence[np.ndarray], length: int, rng: np.random.Generator,
           n_speakers: int = 3) -> np.ndarray:
  """Babble noise [length]: the sum of n_speakers other utterances, each looped or cut to length at a
  random offset and scaled to unit power before summing."""
  if not others:
    raise ConfigError("babble noise needs at least one other utterance")
  out = np.zeros((length,), np.float64)
  for i in rng.choice(len(others), size=n_speakers, replace=len(others) < n_speakers):
    u = np.asarray(others[i], np.float64)
    if u.size == 0 or _power(u) == 0.0:
      continue
    reps = int(np.ceil((length + len(u)) / len(u)))
    start = int(rng.integers(0, len(u)))
    seg = np.tile(u, reps)[start:start + length]
    out += seg / np.sqrt(_power(seg) + 1e-12)
  return out.astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
  """signal + g * noise with g chosen so that 10 log10(P_signal / P_(g noise)) = snr_db exactly
  (powers over the whole clip). noise is cut or looped to the signal's length."""
  s = np.asarray(signal, np.float64)
  n = np.asarray(noise, np.float64)
  if n.size == 0 or _power(n) == 0.0:
    raise ConfigError("noise for mixing is empty or silent")
  n = np.tile(n, int(np.ceil(len(s) / len(n))))[: len(s)]
  gain = np.sqrt(_power(s) / (_power(n) * 10.0 ** (snr_db / 10.0)))
  return (s + gain * n).astype(np.float32)


def add_babble(audio: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator,
               snr_db: float | tuple[float, float], n_speakers: int = 3) -> np.ndarray:
  """Mix babble from other utterances at snr_db (or uniform in a (low, high) range)."""
  if isinstance(snr_db, (tuple, list)):
    snr_db = float(rng.uniform(snr_db[0], snr_db[1]))
  return mix_at_snr(audio, babble(others, len(audio), rng, n_speakers), snr_db)


def drop_words(text: str, rng: np.random.Generator, rate: float | tuple[float, float] = (0.0, 0.2),
               *, chinese: bool = False) -> str:
  """Drop each word (each character when chinese) independently with probability `rate` (or a rate
  drawn uniformly from a (low, high) range: the 0-20 % of the papers). Never returns an empty
  text from a non-empty one: one unit is kept."""
  if isinstance(rate, (tuple, list)):
    rate = float(rng.uniform(rate[0], rate[1]))
  if not 0.0 <= rate <= 1.0:
    raise ConfigError(f"word drop rate must be in [0, 1], got {rate}")
  units = [c for c in text if not c.isspace()] if chinese else text.split()
  if not units:
    return text
  keep = rng.random(len(units)) >= rate
  if not keep.any():
    keep[int(rng.integers(0, len(units)))] = True
  kept = [u for u, k in zip(units, keep) if k]
  return "".join(kept) if chinese else " ".join(kept)
