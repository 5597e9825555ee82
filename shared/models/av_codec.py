"""One latent-codec interface for audio-visual generation (UniTalking): video and audio <-> normalised latents.

  codec = AVCodec(video=WanVideoCodec(model, params), audio=MelVAEAudioCodec(vae, vae_params, stats=...))
  zv = codec.encode_video(frames)        # [B, T, H, W, 3] uint8 (or float in [-1, 1]) -> [B, t, h, w, Cv]
  za = codec.encode_audio(audio, t)      # [B, S] float32 -> [B, codec.audio_latent_frames(t), Ca]
  frames = codec.decode_video(zv)        # -> [B, 1 + 4 (t - 1), H, W, 3] uint8
  audio = codec.decode_audio(za)         # -> [B, S'] float32 (BigVGAN if given, else Griffin-Lim)
Unbatched inputs ([T, H, W, 3], [S]) give unbatched outputs. Latents are normalised per channel,
(z - mean) / std (`LatentStats`): Wan's latents_mean / latents_std tables for the video VAE, statistics
fitted on training data for the audio VAE (unit variance is what the diffusion noise schedule assumes).

Rates and alignment (`RateAlignment`; 25 fps, Wan stride 4, 16 kHz mels with hop 256 and a 2x VAE):
  video latents  causal: frame 0 alone, then 4 frames per latent: t = 1 + (T - 1) // 4, at fps / 4 = 6.25 Hz
  audio latents  sample_rate / hop / 2 = 31.25 Hz, i.e. audio_per_video_latent = 31.25 / 6.25 = 5
  a clip of t video latents spans T = 1 + 4 (t - 1) frames = T / fps seconds; its audio is cropped or
  zero-padded to T * sample_rate / fps samples and gives ceil(T * audio_rate / fps) audio latents
  (`audio_latent_frames(t)`); `align_audio` crops / pads a latent sequence to that length (padding value
  0 = the normalised latent mean). `audio_positions(n)` places audio latent i at i / 5 on the video-latent
  time axis (a shared RoPE time coordinate; Wan's causal first frame is ignored).

Implementations: `WanVideoCodec` (shared.models.wan_vae, any WanVAEConfig), `MelVAEAudioCodec`
(shared.models.mmaudio_vae on shared.data.features log-mels, vocoder shared.models.bigvgan or Griffin-Lim).
Loading: `load_wan_video_codec(diffusers_dir)`; `load_mel_vae_audio_codec(path)` where path is a directory
written by `save_mel_vae_audio_codec` (codec.json + mel_vae.safetensors, e.g. WORKDIR/codec of
`python -m unitalking_jax.train_codec`; a workdir itself is accepted), or an MMAudio checkpoint file
(v1-16.pth / v1-44.pth / .safetensors) with mode "16k" / "44k".
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from fractions import Fraction
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from shared.data import features
from shared.errors import CheckpointError, ConfigError, DataError
from shared.models import mmaudio_vae, wan_vae


# ----------------------------------------------------------------------------------------------- normalisation

@dataclasses.dataclass(frozen=True, eq=False)
class LatentStats:
  """Per-channel latent statistics: normalize(z) = (z - mean) / std over the last axis. mean, std [C]."""
  mean: np.ndarray
  std: np.ndarray

  def __post_init__(self):
    m, s = np.asarray(self.mean, np.float32).reshape(-1), np.asarray(self.std, np.float32).reshape(-1)
    if m.shape != s.shape:
      raise ConfigError(f"LatentStats mean {m.shape} and std {s.shape} differ in length")
    if not np.all(s > 0):
      raise ConfigError("LatentStats std must be > 0 in every channel")
    object.__setattr__(self, "mean", m)
    object.__setattr__(self, "std", s)

  @property
  def channels(self) -> int:
    return int(self.mean.shape[0])

  @classmethod
  def identity(cls, channels: int) -> "LatentStats":
    return cls(np.zeros(channels, np.float32), np.ones(channels, np.float32))

  @classmethod
  def fit(cls, latents: np.ndarray, eps: float = 1e-6) -> "LatentStats":
    """From latents [..., C] (any leading axes): per-channel mean and std (floored at eps)."""
    x = np.asarray(latents, np.float64).reshape(-1, np.shape(latents)[-1])
    return cls(x.mean(0), np.maximum(x.std(0), eps))

  def _check(self, z):
    if z.shape[-1] != self.channels:
      raise DataError(f"latents {tuple(z.shape)}: expected {self.channels} channels on the last axis",
                      key="latents")

  def normalize(self, z):
    self._check(z)
    return (z - self.mean.astype(z.dtype)) / self.std.astype(z.dtype)

  def denormalize(self, z):
    self._check(z)
    return z * self.std.astype(z.dtype) + self.mean.astype(z.dtype)

  def to_json(self) -> dict:
    return {"mean": self.mean.tolist(), "std": self.std.tolist()}


# ----------------------------------------------------------------------------------------------- rates

@dataclasses.dataclass(frozen=True)
class RateAlignment:
  """Video / audio latent rates and how a clip's latent lengths correspond (see module docstring)."""
  fps: float = 25.0
  video_stride: int = 4            # frames per video latent (after the first, if causal)
  causal: bool = True              # Wan: frame 0 is encoded alone
  audio_rate: float = 31.25        # audio latents per second
  sample_rate: int = 16000

  @property
  def video_latent_rate(self) -> float:
    return self.fps / self.video_stride

  @property
  def audio_per_video_latent(self) -> Fraction:
    """Audio latents per video latent (exact when rates are decimal-representable): 5 for the defaults."""
    return Fraction(str(self.audio_rate)) / Fraction(str(self.video_latent_rate))

  def video_latent_frames(self, frames: int) -> int:
    """Video latents for T frames (causal: the first 1 + 4k frames are used)."""
    if frames < 1:
      raise DataError(f"a clip needs >= 1 frame, got {frames}", key="video")
    return 1 + (frames - 1) // self.video_stride if self.causal else frames // self.video_stride

  def video_frames(self, latent_frames: int) -> int:
    """Frames decoded from t video latents: 1 + stride (t - 1) (causal) or stride t."""
    return 1 + self.video_stride * (latent_frames - 1) if self.causal else self.video_stride * latent_frames

  def audio_samples(self, latent_frames: int) -> int:
    """Audio samples spanning the frames of t video latents."""
    return int(round(self.video_frames(latent_frames) * self.sample_rate / self.fps))

  def audio_latent_frames(self, latent_frames: int) -> int:
    """Audio latents for a clip of t video latents: ceil(T * audio_rate / fps), T = video_frames(t)."""
    return int(math.ceil(Fraction(self.video_frames(latent_frames)) * Fraction(str(self.audio_rate))
                         / Fraction(str(self.fps))))

  def align_audio(self, z: np.ndarray | jax.Array, latent_frames: int, pad_value: float = 0.0):
    """Audio latents [..., N, C] -> [..., audio_latent_frames(t), C]: cropped at the end or padded with pad_value."""
    n = self.audio_latent_frames(latent_frames)
    xp = jnp if isinstance(z, jax.Array) else np
    z = z[..., :n, :]
    if z.shape[-2] < n:
      widths = [(0, 0)] * (z.ndim - 2) + [(0, n - z.shape[-2]), (0, 0)]
      z = xp.pad(z, widths, constant_values=pad_value)
    return z

  def audio_positions(self, n: int) -> np.ndarray:
    """[n] float32: audio latent i on the video-latent time axis, i / audio_per_video_latent."""
    return (np.arange(n, dtype=np.float64) / float(self.audio_per_video_latent)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- protocols

class VideoCodec(Protocol):
  latent_channels: int
  temporal_stride: int
  spatial_stride: int
  causal: bool

  def encode_video(self, frames) -> np.ndarray: ...
  def decode_video(self, latents) -> np.ndarray: ...


class AudioCodec(Protocol):
  latent_channels: int
  latent_rate: float
  sample_rate: int

  def encode_audio(self, audio, latent_frames: int | None = None) -> np.ndarray: ...
  def decode_audio(self, latents, seed: int = 0) -> np.ndarray: ...
  def log_mel(self, latents) -> np.ndarray: ...


def _batched(x, ndim: int):
  """(x with a leading batch axis, whether one was added)."""
  x = np.asarray(x) if not isinstance(x, jax.Array) else x
  if x.ndim == ndim - 1:
    return x[None], True
  if x.ndim != ndim:
    raise DataError(f"expected a [{ndim - 1}]-d sample or a [{ndim}]-d batch, got shape {tuple(x.shape)}")
  return x, False


# ----------------------------------------------------------------------------------------------- video: Wan VAE

@dataclasses.dataclass(frozen=True, eq=False)
class WanVideoCodec:
  """Wan2.1 / 2.2 VAE. frames [B, T, H, W, 3] uint8 or float [-1, 1] -> normalised posterior means
  [B, 1 + (T - 1) // 4, H / s, W / s, z]; decode -> [B, 1 + 4 (t - 1), H, W, 3] uint8 (or float in [-1, 1])."""
  model: wan_vae.AutoencoderKLWan
  params: Any
  stats: LatentStats | None = None      # None: the config's latents_mean / latents_std
  encode_chunk: int | None = 4
  decode_chunk: int | None = 1

  def __post_init__(self):
    if self.stats is None:
      c = self.model.config
      object.__setattr__(self, "stats", LatentStats(np.asarray(c.latents_mean), np.asarray(c.latents_std)))

  @property
  def latent_channels(self) -> int:
    return self.model.config.z_dim

  @property
  def temporal_stride(self) -> int:
    return self.model.config.temporal_stride

  @property
  def spatial_stride(self) -> int:
    return self.model.config.spatial_stride

  causal = True

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda p, v: wan_vae.encode(self.model, p, v, chunk=self.encode_chunk)[0])

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda p, z: wan_vae.decode(self.model, p, z, chunk=self.decode_chunk))

  def encode_video(self, frames) -> np.ndarray:
    x, added = _batched(frames, 5)
    if x.dtype == np.uint8:
      x = x.astype(np.float32) / 127.5 - 1.0
    mean = self._encode(self.params, jnp.asarray(x, jnp.float32))
    z = np.asarray(self.stats.normalize(mean))
    return z[0] if added else z

  def decode_video(self, latents, as_uint8: bool = True) -> np.ndarray:
    z, added = _batched(latents, 5)
    y = np.asarray(self._decode(self.params, self.stats.denormalize(jnp.asarray(z, jnp.float32))))
    if as_uint8:
      y = np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return y[0] if added else y


def load_wan_video_codec(path: str, **kw) -> WanVideoCodec:
  """A diffusers AutoencoderKLWan directory (config.json + diffusion_pytorch_model.safetensors)."""
  from shared.weights.wan_vae_family import load_wan_vae
  model, params = load_wan_vae(path)
  return WanVideoCodec(model, params, **kw)


# ----------------------------------------------------------------------------------------------- audio: mel VAE

@dataclasses.dataclass(frozen=True, eq=False)
class MelVAEAudioCodec:
  """MMAudio-style mel VAE. audio [B, S] float32 -> log-mel [B, T, n_mels] (features.log_mel of `mel`,
  audio clipped to [-1, 1], T cropped to a multiple of the VAE's 2x) -> normalised posterior means
  [B, T / 2, embed_dim]. Decoding: VAE decoder -> log-mel -> vocoder (BigVGAN module + params, trained on
  the same mel features) or Griffin-Lim -> audio [B, T * hop]."""
  vae: mmaudio_vae.MMAudioVAE
  params: Any
  mel: features.MelConfig = features.MMAUDIO_16K
  stats: LatentStats | None = None       # None: identity (raw posterior means)
  vocoder: tuple[Any, Any] | None = None  # (BigVGAN module, params)
  griffin_lim_iters: int = 32

  def __post_init__(self):
    if self.vae.config.data_dim != self.mel.n_mels:
      raise ConfigError(f"mel VAE data_dim {self.vae.config.data_dim} != mel config n_mels {self.mel.n_mels}")
    if self.stats is None:
      object.__setattr__(self, "stats", LatentStats.identity(self.vae.config.embed_dim))
    if self.stats.channels != self.vae.config.embed_dim:
      raise ConfigError(f"latent stats have {self.stats.channels} channels; the VAE has {self.vae.config.embed_dim}")

  @property
  def latent_channels(self) -> int:
    return self.vae.config.embed_dim

  @property
  def sample_rate(self) -> int:
    return self.mel.sample_rate

  @property
  def mel_rate(self) -> float:
    return self.mel.sample_rate / self.mel.hop

  @property
  def downsample(self) -> int:
    return self.vae.config.temporal_downsample

  @property
  def latent_rate(self) -> float:
    return self.mel_rate / self.downsample

  @functools.cached_property
  def _encode(self):
    return jax.jit(lambda p, m: self.vae.apply({"params": p}, m, method=mmaudio_vae.MMAudioVAE.encode)[0])

  @functools.cached_property
  def _decode(self):
    return jax.jit(lambda p, z: self.vae.apply({"params": p}, z, method=mmaudio_vae.MMAudioVAE.decode))

  @functools.cached_property
  def _vocode(self):
    """The one place the codec's log-mel meets the vocoder: scaled to the vocoder's log base (features.vocoder_mel_scale:
    x ln 10 for MMAudio's log10 mel into NVIDIA's natural-log BigVGAN); the PyTorch release pipeline applies
    the same rule (unitalking_jax.torch_pipeline)."""
    module = self.vocoder[0]
    c = module.config
    if c.num_mels != self.mel.n_mels:
      raise ConfigError(f"vocoder takes {c.num_mels} mels; the codec's mel has {self.mel.n_mels}")
    if c.upsample_factor != self.mel.hop:
      raise ConfigError(f"vocoder upsamples x{c.upsample_factor} (upsample_rates {list(c.upsample_rates)}); the "
                        f"codec's mel hop is {self.mel.hop}")
    scale = features.vocoder_mel_scale(getattr(c, "mel_log", None), self.mel.log)
    return jax.jit(lambda p, m: module.apply({"params": p}, m * scale))

  def encode_mel(self, audio, latent_frames: int | None = None) -> np.ndarray:
    """audio [B, S] -> log-mel [B, T, n_mels]; T = 2 latent_frames (audio zero-padded) or the largest even count."""
    x, added = _batched(audio, 2)
    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)
    d = self.downsample
    if latent_frames is not None:
      need = latent_frames * d * self.mel.hop
      x = np.pad(x, ((0, 0), (0, max(0, need - x.shape[1]))))
    mel = np.stack([features.log_mel(a, self.mel) for a in x])
    t = latent_frames * d if latent_frames is not None else (mel.shape[1] // d) * d
    if t < d:
      raise DataError(f"audio of {x.shape[1]} samples is shorter than one audio latent ({d} mel frames)", key="audio")
    mel = mel[:, :t]
    return mel[0] if added else mel

  def encode_audio(self, audio, latent_frames: int | None = None) -> np.ndarray:
    """audio [B, S] or [S] -> normalised latents [B, N, C] (N = latent_frames if given, else S // (2 hop))."""
    mel, added = _batched(self.encode_mel(audio, latent_frames), 3)
    z = np.asarray(self.stats.normalize(self._encode(self.params, jnp.asarray(mel))))
    return z[0] if added else z

  def log_mel(self, latents) -> np.ndarray:
    """Normalised latents [B, N, C] -> decoded log-mel [B, 2 N, n_mels]."""
    z, added = _batched(latents, 3)
    mel = np.asarray(self._decode(self.params, self.stats.denormalize(jnp.asarray(z, jnp.float32))))
    return mel[0] if added else mel

  def mel_to_audio(self, mel, seed: int = 0) -> np.ndarray:
    """log-mel [B, T, n_mels] -> audio [B, T * hop] (vocoder, else Griffin-Lim, zero-padded to T * hop)."""
    m, added = _batched(mel, 3)
    if self.vocoder is not None:
      out = np.asarray(self._vocode(self.vocoder[1], jnp.asarray(m, jnp.float32)))
    else:
      n = m.shape[1] * self.mel.hop
      out = np.zeros((m.shape[0], n), np.float32)
      for i, mi in enumerate(np.asarray(m)):
        a = features.mel_to_audio(np.clip(mi, math.log10(self.mel.floor) if self.mel.log == "log10"
                                          else math.log(self.mel.floor), None), self.mel,
                                  n_iter=self.griffin_lim_iters, seed=seed)[:n]
        out[i, :a.shape[0]] = a
    return out[0] if added else out

  def decode_audio(self, latents, seed: int = 0) -> np.ndarray:
    """Normalised latents [B, N, C] or [N, C] -> audio [B, 2 N hop] float32."""
    return self.mel_to_audio(self.log_mel(latents), seed=seed)


CODEC_JSON = "codec.json"
WEIGHTS_FILE = "mel_vae.safetensors"


def save_mel_vae_audio_codec(path: str, codec: MelVAEAudioCodec, extra: dict | None = None) -> None:
  """path/codec.json (VAE config, mel config, latent stats, extra) + path/mel_vae.safetensors (MMAudio key
  names, so PyTorch MMAudio loads the state_dict too)."""
  from safetensors.numpy import save_file
  from shared.weights.mmaudio_vae_family import export_mmaudio_vae
  os.makedirs(path, exist_ok=True)
  cfg = dataclasses.asdict(codec.vae.config)
  cfg["data_mean"], cfg["data_std"] = [v.tolist() for v in codec.vae.config.stats()]
  meta = {"mel_vae": cfg, "mel": dataclasses.asdict(codec.mel), "latent_stats": codec.stats.to_json(),
          "latent_rate": codec.latent_rate, **(extra or {})}
  sd = export_mmaudio_vae(jax.device_get(codec.params), codec.vae.config)
  save_file({k: np.array(v, order="C") for k, v in sd.items()}, os.path.join(path, WEIGHTS_FILE))
  with open(os.path.join(path, CODEC_JSON), "w") as f:
    json.dump(meta, f, indent=1)


def _vae_config(d: dict) -> mmaudio_vae.MMAudioVAEConfig:
  kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
        for k, v in d.items() if k in mmaudio_vae.MMAudioVAEConfig.__dataclass_fields__}
  return mmaudio_vae.MMAudioVAEConfig(**kw)


def load_mel_vae_audio_codec(path: str, *, mode: str = "16k", vocoder: str | None = None,
                             stats: LatentStats | None = None, **kw) -> MelVAEAudioCodec:
  """A codec directory (or a train_codec workdir holding codec/), or an MMAudio weights file with `mode`.
  vocoder: a BigVGAN directory / weights file (shared.weights.bigvgan_family.load_bigvgan) or None; its mel
  settings must be the codec's (features.check_vocoder_mel) and its log base is met by
  features.vocoder_mel_scale."""
  from shared.weights.mmaudio_vae_family import load_mmaudio_vae
  voc = None
  if vocoder is not None:
    from shared.weights.bigvgan_family import load_bigvgan
    voc = load_bigvgan(vocoder)
  if os.path.isdir(path) and not os.path.exists(os.path.join(path, CODEC_JSON)):
    if os.path.exists(os.path.join(path, "codec", CODEC_JSON)):
      path = os.path.join(path, "codec")
    else:
      raise CheckpointError(f"{path} holds no {CODEC_JSON} (nor codec/{CODEC_JSON}): expected a directory written "
                            f"by save_mel_vae_audio_codec / unitalking_jax.train_codec")
  if os.path.isdir(path):
    with open(os.path.join(path, CODEC_JSON)) as f:
      meta = json.load(f)
    config = _vae_config(meta["mel_vae"])
    mel = features.MelConfig(**meta["mel"])
    stats = stats or LatentStats(np.asarray(meta["latent_stats"]["mean"]), np.asarray(meta["latent_stats"]["std"]))
    vae, params = load_mmaudio_vae(os.path.join(path, WEIGHTS_FILE), config)
  else:
    if not os.path.exists(path):
      raise CheckpointError(f"{path} not found: expected a codec directory or an MMAudio VAE weights file")
    presets = {"16k": (mmaudio_vae.mmaudio_vae_16k, features.MMAUDIO_16K),
               "44k": (mmaudio_vae.mmaudio_vae_44k, features.MMAUDIO_44K)}
    if mode not in presets:
      raise ConfigError(f"mode {mode!r}: expected one of {sorted(presets)}")
    vae, params = load_mmaudio_vae(path, presets[mode][0]())
    mel = presets[mode][1]
  if voc is not None:
    features.check_vocoder_mel(dataclasses.asdict(voc[0].config), mel, vocoder, path)
  return MelVAEAudioCodec(vae, params, mel, stats=stats, vocoder=voc, **kw)


# ----------------------------------------------------------------------------------------------- both

@dataclasses.dataclass(frozen=True, eq=False)
class AVCodec:
  """A video codec and an audio codec with their rate alignment (built from the two codecs when not given)."""
  video: Any
  audio: Any
  fps: float = 25.0

  @functools.cached_property
  def alignment(self) -> RateAlignment:
    return RateAlignment(fps=self.fps, video_stride=self.video.temporal_stride, causal=self.video.causal,
                         audio_rate=self.audio.latent_rate, sample_rate=self.audio.sample_rate)

  @property
  def video_channels(self) -> int:
    return self.video.latent_channels

  @property
  def audio_channels(self) -> int:
    return self.audio.latent_channels

  def audio_latent_frames(self, video_latent_frames: int) -> int:
    return self.alignment.audio_latent_frames(video_latent_frames)

  def encode_video(self, frames) -> np.ndarray:
    return self.video.encode_video(frames)

  def decode_video(self, latents) -> np.ndarray:
    return self.video.decode_video(latents)

  def encode_audio(self, audio, video_latent_frames: int | None = None) -> np.ndarray:
    """audio [B, S] -> [B, N, Ca]; with video_latent_frames t, the audio of that clip (cropped / padded to
    alignment.audio_samples(t)) encoded and aligned to audio_latent_frames(t) latents."""
    if video_latent_frames is None:
      return self.audio.encode_audio(audio)
    a = self.alignment
    x = np.asarray(audio, np.float32)
    s = a.audio_samples(video_latent_frames)
    x = x[..., :s]
    x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, s - x.shape[-1])])
    n = a.audio_latent_frames(video_latent_frames)
    return a.align_audio(self.audio.encode_audio(x, latent_frames=n), video_latent_frames)

  def decode_audio(self, latents, seed: int = 0) -> np.ndarray:
    return self.audio.decode_audio(latents, seed=seed)
