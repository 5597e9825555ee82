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


# ------------------------------------------------------------------------------------------ trained VAE codecs

FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, MEL_PER_FRAME = 25, 16000, 640, 4   # the 100 Hz analysis mel: 4 per frame


def audio_latent_frames(frames: int, latent_rate: float, fps: float = FPS) -> int:
  """Audio latents covering T video frames: ceil(T * latent_rate / fps) (42 for 33 frames at 31.25 Hz)."""
  from fractions import Fraction
  return int(-(-Fraction(int(frames)) * Fraction(str(latent_rate)) // Fraction(str(fps))))


class VAECodecs:
  """The trained VAE codecs behind the interface of unitalking_jax.data.Codecs (framework-neutral: the video and
  audio objects bring the network, JAX's shared.models.av_codec.WanVideoCodec / MelVAEAudioCodec or the PyTorch
  twins of unitalking_jax.torch_pipeline).

  video: encode_video(frames [T, H, W, 3] uint8) -> normalised latents [1 + (T - 1) // 4, H / s, W / s, Cv];
    decode_video(latents) -> frames [1 + 4 (t - 1), H, W, 3] uint8; temporal_stride, spatial_stride,
    latent_channels.
  audio: encode_audio(audio [S], latent_frames) -> normalised latents [N, Ca]; log_mel(latents) -> the VAE's
    log-mel [2 N, n_mels]; mel_to_audio(mel, seed) (BigVGAN or Griffin-Lim); mel (features.MelConfig),
    latent_rate (31.25 Hz), latent_channels.
  Here, as for the PCA codecs: encode_audio(audio, frames) takes `frames` = 4 T analysis-mel frames (T video
  frames at 25 fps: the first T * 640 samples, zero-padded) -> [ceil(T * rate / 25), Ca]; log_mel(latents) ->
  [4 T, n_mels] natural-log mel at 100 frames/s (the VAE's decoded mel, log10 -> ln, linearly resampled in
  time), what the sync score and the template decoder read; decode_audio(latents) -> audio [2 N hop]."""
  kind = "vae"

  def __init__(self, video, audio, fps: float = FPS):
    self.video, self.audio, self.fps = video, audio, fps

  @property
  def latent_rate(self) -> float:
    return float(self.audio.latent_rate)

  def audio_latent_frames(self, frames: int) -> int:
    return audio_latent_frames(frames, self.latent_rate, self.fps)

  def video_frames_of(self, audio_latents: int) -> int:
    """T of a clip whose audio gave N latents: floor(N * fps / rate) (the inverse of ceil(T * rate / fps) for
    rates above the frame rate)."""
    from fractions import Fraction
    return int(Fraction(int(audio_latents)) * Fraction(str(self.fps)) // Fraction(str(self.latent_rate)))

  def encode_video(self, frames):
    frames = np.asarray(frames)
    st = int(self.video.temporal_stride)
    if (frames.shape[0] - 1) % st:
      raise DataError(f"video of {frames.shape[0]} frames: the Wan VAE encodes 1 + {st} k frames (set "
                      f"data.frames to such a count)", key="video")
    return np.asarray(self.video.encode_video(frames), np.float32)

  def decode_video(self, latents):
    return np.asarray(self.video.decode_video(np.asarray(latents, np.float32)))

  def encode_audio(self, audio, frames: int):
    t = int(frames) // MEL_PER_FRAME
    x = np.asarray(audio, np.float32).reshape(-1)[:t * SAMPLES_PER_FRAME]
    x = np.pad(x, (0, t * SAMPLES_PER_FRAME - x.shape[0]))
    return np.asarray(self.audio.encode_audio(x, self.audio_latent_frames(t)), np.float32)

  def vae_mel(self, latents):
    """Normalised latents [N, Ca] -> the VAE's decoded log-mel [2 N, n_mels] (its own log base and rate)."""
    return np.asarray(self.audio.log_mel(np.asarray(latents, np.float32)), np.float32)

  def log_mel(self, latents):
    latents = np.asarray(latents, np.float32)
    mel = self.vae_mel(latents).astype(np.float64)
    cfg = self.audio.mel
    if cfg.log == "log10":
      mel = mel * np.log(10.0)
    t = self.video_frames_of(latents.shape[0])
    src = cfg.sample_rate / cfg.hop                       # the VAE's mel rate (62.5 Hz)
    pos = np.arange(MEL_PER_FRAME * t) * (src / (MEL_PER_FRAME * self.fps))
    idx = np.arange(mel.shape[0])
    return np.stack([np.interp(pos, idx, mel[:, j]) for j in range(mel.shape[1])], 1).astype(np.float32)

  def decode_audio(self, latents, seed: int = 0):
    return np.asarray(self.audio.mel_to_audio(self.vae_mel(latents), seed=seed), np.float32)


# ------------------------------------------------------------------------------------------ reference audio
# (one rule for training, prepared latents, sampling and both release pipelines: this module imports no JAX)

def fixed_length(tokens: np.ndarray, n: int) -> np.ndarray:
  """Reference tokens [R, D] -> [n, D] float32: the first n rows, zero rows appended when R < n (the paper's fixed
  reference length: longer truncated, shorter padded with zeros)."""
  t = np.asarray(tokens, np.float32)[:n]
  return np.concatenate([t, np.zeros((n - t.shape[0],) + t.shape[1:], np.float32)]) if t.shape[0] < n else t


def ref_audio_tokens(audio, length: int, patch: int, samples_per_latent: int, encode) -> np.ndarray:
  """A reference voice [S] float32 at its own length -> [length, patch C] tokens: k = min(length, ceil(S /
  (patch samples_per_latent))) tokens' worth of audio (zero-padded to it) encoded as k patch latents by
  encode(audio, latent_count) -> [k patch, C], in patch-latent tokens, then zero rows up to `length`."""
  x = np.asarray(audio, np.float32).reshape(-1)
  if not x.size:
    raise DataError("reference audio holds no samples", key="ref_audio")
  per = int(patch) * int(samples_per_latent)
  k = min(int(length), -(-x.shape[0] // per))
  x = np.pad(x[:k * per], (0, max(0, k * per - x.shape[0])))
  lat = np.asarray(encode(x, k * patch), np.float32)
  if lat.shape[0] != k * patch:
    raise DataError(f"reference audio encoded to {lat.shape[0]} latents, expected {k * patch}", key="ref_audio")
  return fixed_length(lat.reshape(k, patch * lat.shape[-1]), length)


def ref_tokens(audio: np.ndarray, patch: int, perm=None, length: int = 0) -> np.ndarray:
  """Audio latents [Ta, Ca] -> reference tokens [Ta / patch, patch Ca] f32 (rows permuted by perm if given),
  then with length > 0 truncated / zero-padded to [length, patch Ca] (fixed_length)."""
  a = np.asarray(audio, np.float32)
  r = a.reshape(a.shape[0] // patch, patch * a.shape[-1])
  r = (r if perm is None else r[perm]).astype(np.float32)
  return fixed_length(r, length) if length else r
