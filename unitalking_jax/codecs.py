"""Simple codecs for the tiny configs (the paper's Wan2.2 VAE / MMAudio VAE + BigVGAN come from the codecs issue).

PixelCodec: frames [T, H, W, 3] uint8 <-> latents [T, H/f, W/f, 3 f^2] float32: pixels scaled to [-1, 1] and
  space-to-depth by f (channel order (row-in-patch, column-in-patch, rgb)). Lossless up to uint8 rounding.
MelCodec: audio [S] float32 16 kHz <-> latents [T_mel, n_mels] float32: log-mel (shared.data.features,
  AudioLDM preset: n_fft 1024, hop 160 = 100 frames/s, 64 mels, ln) normalised as (x - mean) / std;
  decoding inverts the normalisation and runs Griffin-Lim (features.mel_to_audio).
With 25 fps video, one video frame = 640 samples = 4 mel frames.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from shared.data import features
from shared.errors import DataError


@dataclasses.dataclass(frozen=True)
class PixelCodec:
  factor: int = 8

  def encode(self, frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [T, H/f, W/f, 3 f^2] float32 in [-1, 1]."""
    f = self.factor
    frames = np.asarray(frames)
    t, h, w, c = frames.shape
    if h % f or w % f:
      raise DataError(f"frames {frames.shape}: H and W must be multiples of the codec factor {f}", key="video")
    x = frames.astype(np.float32) / 127.5 - 1.0
    x = x.reshape(t, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(t, h // f, w // f, f * f * c)

  def decode(self, latents: np.ndarray) -> np.ndarray:
    """[T, h, w, 3 f^2] -> [T, h f, w f, 3] uint8 (values clipped)."""
    f = self.factor
    x = np.asarray(latents, np.float32)
    t, h, w, cc = x.shape
    c = cc // (f * f)
    x = x.reshape(t, h, w, f, f, c).transpose(0, 1, 3, 2, 4, 5).reshape(t, h * f, w * f, c)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class MelCodec:
  mean: float = -6.0
  std: float = 3.0
  preset: str = "audioldm"
  griffin_lim_iters: int = 32

  @property
  def mel(self) -> features.MelConfig:
    return features.PRESETS[self.preset]

  @property
  def channels(self) -> int:
    return self.mel.n_mels

  def encode(self, audio: np.ndarray, frames: int | None = None) -> np.ndarray:
    """[S] -> [frames, n_mels] float32 (the first `frames` mel frames; zero-padded audio if short)."""
    audio = np.asarray(audio, np.float32)
    if frames is not None:
      need = frames * self.mel.hop
      if audio.shape[0] < need:
        audio = np.pad(audio, (0, need - audio.shape[0]))
    m = features.log_mel(audio, self.mel)
    if frames is not None:
      m = m[:frames]
    return ((m - self.mean) / self.std).astype(np.float32)

  def to_log_mel(self, latents: np.ndarray) -> np.ndarray:
    return np.asarray(latents, np.float32) * self.std + self.mean

  def decode(self, latents: np.ndarray, seed: int = 0) -> np.ndarray:
    """[T_mel, n_mels] -> audio [hop * (T_mel - 1)] float32 (Griffin-Lim), peak-limited to 0.99."""
    mel = np.clip(self.to_log_mel(latents), np.log(self.mel.floor), 5.0)
    audio = features.mel_to_audio(mel, self.mel, n_iter=self.griffin_lim_iters, seed=seed)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio * (0.99 / peak) if peak > 0.99 else audio).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class PCA:
  """Linear codec on the last axis: x [..., d] <-> z [..., k] = (x - mean) @ components.T / scale.

  components [k, d] (orthonormal rows), scale: one global factor so that z has unit mean variance, or with
  `whiten` one factor per component [k] so that each has unit variance (per-channel latent normalisation, as
  Wan's VAE latents are normalised per channel: small but meaningful components, a talking face's mouth motion,
  are not drowned by the noise of flow matching until its last steps). Fitted by SVD on data (`fit`); keeps a
  token's width below the model width (a 128-wide model cannot carry 768 noise
  values per token, so flow matching on raw space-to-depth pixels fails to learn: the tiny configs need a
  compressing codec as real VAEs are)."""
  mean: np.ndarray
  components: np.ndarray
  scale: float | np.ndarray

  @classmethod
  def fit(cls, x: np.ndarray, k: int, whiten: bool = False) -> "PCA":
    x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    if not 1 <= k <= x.shape[1]:
      raise DataError(f"PCA width {k} must lie in 1..{x.shape[1]}", key="pca")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    vt = vt[:k] * np.sign(vt[:k, :1] + 1e-30)  # deterministic signs
    if whiten:
      scale = np.maximum(s[:k] / np.sqrt(x.shape[0]), 1e-6).astype(np.float32)
    else:
      scale = float(np.sqrt(np.mean(s[:k] ** 2) / x.shape[0]))
    return cls(mean.astype(np.float32), vt.astype(np.float32), scale)

  @property
  def width(self) -> int:
    return int(self.components.shape[0])

  def encode(self, x: np.ndarray) -> np.ndarray:
    return ((np.asarray(x, np.float32) - self.mean) @ self.components.T / self.scale).astype(np.float32)

  def decode(self, z: np.ndarray) -> np.ndarray:
    return (np.asarray(z, np.float32) * self.scale @ self.components + self.mean).astype(np.float32)
