"""SynthCue speech mode -> fixed-shape UniTalking batches, and the SynthCue sync score.

Codecs (`codecs(cfg)`), chosen by data.video_codec / data.audio_codec:
  "pca" / "pca" (`Codecs`, fitted once per data config, deterministic): video = PixelCodec space-to-depth f,
    then a PCA per latent pixel (3 f^2 -> video_pca channels); audio = MelCodec normalised log-mel, then a PCA
    per mel frame (n_mels -> audio_pca channels). Decoding inverts both (Griffin-Lim for audio).
  "wan_vae" / "mel_vae" (`codecs.VAECodecs`, trained, loaded from data.video_codec_path / audio_codec_path):
    the Wan2.1/2.2-style video VAE (diffusers AutoencoderKLWan directory: DIR/video_vae of
    `train_codec --config codec_tiny.py:video`, or the vae/ of a Wan diffusers release; stride 4 x f x f,
    causal) and the MMAudio-style mel VAE (DIR/codec of `python -m unitalking_jax.train_codec`: 16 kHz, 80
    log10 mels at 62.5 Hz -> latents at 31.25 Hz; vocoder: Griffin-Lim, or with data.vocoder_path a BigVGAN
    directory in NVIDIA's layout, config.json + bigvgan_generator.pt, whose mel settings must be the codec's;
    shared.models.av_codec scales the log-mel to its log base). Both latents normalised per channel.
    data.frames must be 1 + 4 k. The channel counts stay data.video_pca / data.audio_pca (the one place the
    model's in/out channels are read from) and data.pixel_factor is the spatial stride: checked against the
    loaded VAEs (ConfigError naming the key).
  Mixing a PCA stream with a VAE stream is refused.
Latent layout (`latent_layout(cfg)`, from the config alone): T = data.frames, S = the model frame side, f =
data.pixel_factor, p = model.audio_patch (audio latents per token), Ta = audio latents:
  pca: video [T, S/f, S/f, video_pca], Ta = 4 T (one audio token of p = 4 per video frame)
  vae: video [1 + (T-1)/4, S/f, S/f, video_pca], Ta = ceil(T * 31.25 / 25) (5 per video latent frame)
  model.audio_time_scale must equal p * (video latent rate / audio latent rate) (checked: the RoPE time axis).

A prepared sample (all fixed shapes, so every batch compiles once):
  video   [t, S/f, S/f, video_pca] float32   latents of the first T frames (short clips repeat their last
                                          frame: mouth closed)
  audio   [Ta, audio_pca] float32         latents of the first T * 640 samples (zero-padded)
  text    [S] int32                       pinyin syllable ids (shared/text/pinyin_vocab.txt), 0 = pad
          | [S, text_dim] float32         data.text = "umt5": frozen UMT5 features of the clip's sentence
                                          (unitalking_jax/text_encoder.py; zero rows after the real tokens)
  text_mask [S] bool                      real text positions (pinyin: ids != 0, position 0 always)
  ref     [R, r audio_pca] float32        reference audio tokens: the clip's own latents in r-frame chunks
                                          (r = ref_patch(cfg): 4 for pca, model.audio_patch for vae),
                                          randomly permuted (keeps the voice, hides content and timing;
                                          SynthCue has no second clip of a speaker at hand - approximation
                                          of the paper's IndexTTS2 re-synthesised references). R = Ta / r
                                          (data.ref_len = 0), or R = data.ref_len: the tokens truncated /
                                          zero-padded to that fixed count (the paper's 257 reference latents;
                                          a user's reference at sampling: ref_audio_tokens, its own length)
  mouth_open [T] float32                  SynthCue ground truth (eval only)

Sync score (`sync_score`, documented for the learning check): per clip, the Pearson correlation over
frames between audio log energy (of the frame's 4 mel frames) and mouth opening measured on the
frames: SynthCue draws the open mouth as the darkest patch of the frame, so opening = 255 - mean luminance of
the frame's 4 darkest pixels (no face detector needed). This proxy correlates ~0.7 with SynthCue's
ground-truth mouth_open on real 32 px clips. Shuffled pairs are not at 0: every clip has silence at its
ends, so energy and opening share a coarse envelope; the margin matched - shuffled is the figure to read. SynthCue's audio energy follows mouth opening, so real clips
score high (tests/unitalking/test_data.py) and shuffled (video_i, audio_j) pairs score near 0.
"""
from __future__ import annotations

import numpy as np

from shared.data.synthcue import FACE_UNIT, SynthCue, synthcue_source
from shared.errors import ConfigError, DataError
from shared.text.pinyin import pinyin_vocab
from unitalking_jax.codecs import (PCA, SAMPLES_PER_FRAME, MelCodec, PixelCodec, VAECodecs, audio_latent_frames,
                                   ref_audio_tokens, ref_tokens)

VOCAB = pinyin_vocab()
MEL_PER_FRAME = 4  # 16 kHz / 25 fps / hop 160
VIDEO_CODECS, AUDIO_CODECS = ("pca", "wan_vae"), ("pca", "mel_vae")
MEL_VAE_RATE, WAN_TEMPORAL_STRIDE = 31.25, 4   # MMAudio 16k (hop 256, 2x) latents/s; Wan frames per latent


def source(cfg, split: str = "train") -> SynthCue:
  return synthcue_source(cfg.data, split, "speech")


class Codecs:
  """pix (PixelCodec), mel (MelCodec), pca_video / pca_audio (PCA); encode/decode between media and latents."""
  kind = "pca"

  def __init__(self, pix: PixelCodec, mel: MelCodec, pca_video: PCA, pca_audio: PCA):
    self.pix, self.mel, self.pca_video, self.pca_audio = pix, mel, pca_video, pca_audio

  def encode_video(self, frames):
    return self.pca_video.encode(self.pix.encode(frames))

  def decode_video(self, latents):
    return self.pix.decode(self.pca_video.decode(latents))

  def encode_audio(self, audio, frames: int):
    return self.pca_audio.encode(self.mel.encode(audio, frames=frames))

  def log_mel(self, latents):
    return self.mel.to_log_mel(self.pca_audio.decode(latents))

  def decode_audio(self, latents, seed: int = 0):
    return self.mel.decode(self.pca_audio.decode(latents), seed=seed)

  def arrays(self) -> dict:
    """The fitted codec as named arrays (saved by unitalking_jax/export.py)."""
    return {"pca_video.mean": self.pca_video.mean, "pca_video.components": self.pca_video.components,
            "pca_video.scale": np.atleast_1d(np.float32(self.pca_video.scale)), "pca_audio.mean": self.pca_audio.mean,
            "pca_audio.components": self.pca_audio.components,
            "pca_audio.scale": np.atleast_1d(np.float32(self.pca_audio.scale))}


_CODECS: dict = {}


def codec_kind(cfg) -> str:
  """"pca" (data.video_codec = data.audio_codec = "pca") or "vae" ("wan_vae" + "mel_vae"); ConfigError else."""
  d = cfg.data
  v, a = str(d.get("video_codec", "pca")), str(d.get("audio_codec", "pca"))
  if v not in VIDEO_CODECS:
    raise ConfigError(f"config key data.video_codec = {v!r}: expected one of {VIDEO_CODECS}")
  if a not in AUDIO_CODECS:
    raise ConfigError(f"config key data.audio_codec = {a!r}: expected one of {AUDIO_CODECS}")
  if (v == "pca") != (a == "pca"):
    raise ConfigError(f"data.video_codec = {v!r} with data.audio_codec = {a!r}: both 'pca' or 'wan_vae' + "
                      f"'mel_vae' (mixing a fitted PCA stream with a trained VAE stream is not supported)")
  return "pca" if v == "pca" else "vae"


def latent_layout(cfg) -> dict:
  """Per-example latent shapes from the config alone (module docstring): {"video": (t, h, w, Cv), "audio":
  (Ta, Ca), "ref": (Ta / p, p Ca), "frames": T, "audio_time_scale": video latent frames per audio token}.
  ConfigError naming the key when the frame count, frame side or audio patch does not divide."""
  d, m = cfg.data, cfg.model
  kind = codec_kind(cfg)
  t, side, f, p = int(d.frames), model_frame_size(cfg), int(d.pixel_factor), int(m.audio_patch)
  if side % f:
    raise ConfigError(f"data frame side {side} (face_crop / frame_size) is not a multiple of data.pixel_factor {f}")
  if kind == "pca":
    tv, ta, vrate, arate = t, MEL_PER_FRAME * t, 25.0, 100.0
  else:
    if (t - 1) % WAN_TEMPORAL_STRIDE:
      raise ConfigError(f"config key data.frames = {t}: the Wan VAE encodes 1 + 4 k frames (e.g. 9, 33, 121)")
    tv, ta = 1 + (t - 1) // WAN_TEMPORAL_STRIDE, audio_latent_frames(t, MEL_VAE_RATE)
    vrate, arate = 25.0 / WAN_TEMPORAL_STRIDE, MEL_VAE_RATE
  if ta % p:
    raise ConfigError(f"config key model.audio_patch = {p}: must divide the {ta} audio latents of a clip")
  ca, rp = int(d.audio_pca), ref_patch(cfg)
  return {"video": (tv, side // f, side // f, int(d.video_pca)), "audio": (ta, ca),
          "ref": (ref_len(cfg) or ta // rp, rp * ca),
          "frames": t, "audio_time_scale": p * vrate / arate}


def ref_patch(cfg) -> int:
  """Audio latents per reference token: pca: 4 (one video frame, whatever model.audio_patch); vae:
  model.audio_patch (so model.ref_dim = model.audio_patch x data.audio_pca)."""
  return MEL_PER_FRAME if codec_kind(cfg) == "pca" else int(cfg.model.audio_patch)


def ref_len(cfg) -> int:
  """data.ref_len: 0 = a clip's own reference token count (Ta / ref_patch); N > 0 = N tokens (truncated /
  zero-padded; the paper fixes 257)."""
  n = int(cfg.data.get("ref_len", 0) or 0)
  if n < 0:
    raise ConfigError(f"config key data.ref_len = {n}: expected 0 (the clip's own length) or a token count > 0")
  return n


def reference_tokens(c, cfg, audio: np.ndarray) -> np.ndarray:
  """A user's reference voice [S] float32 16 kHz -> reference tokens with the config's codecs `c`: data.ref_len
  = 0: the first T frames' latents ([Ta / r, r Ca], as training); N > 0: codecs.ref_audio_tokens (its own
  length, truncated / zero-padded to N tokens) - the rule the release pipelines apply in both frameworks."""
  n, p = ref_len(cfg), ref_patch(cfg)
  if not n:
    return ref_tokens(c.encode_audio(audio, cfg.data.frames * MEL_PER_FRAME), p)
  if getattr(c, "kind", "pca") == "vae":
    a = c.audio
    return ref_audio_tokens(audio, n, p, a.mel.hop * a.downsample, lambda x, k: a.encode_audio(x, k))
  return ref_audio_tokens(audio, n, p, SAMPLES_PER_FRAME // MEL_PER_FRAME, lambda x, k: c.encode_audio(x, k))


def _codec_dir(path: str, sub: str, marker: str) -> str:
  """path, or path/sub when path is a training workdir holding it (marker: the file that must exist; a workdir
  has a config.json of its own: the training config, so path/sub wins whenever it holds the marker)."""
  import os
  if os.path.isfile(os.path.join(path, sub, marker)):
    return os.path.join(path, sub)
  return path


def vae_codec_dirs(cfg) -> tuple[str, str]:
  """(the Wan VAE's diffusers directory, the mel VAE's codec directory) from data.video_codec_path /
  data.audio_codec_path (a train_codec workdir (video or audio codec) is accepted for either)."""
  import os
  d = cfg.data
  out = []
  for key, sub, marker in (("video_codec_path", "video_vae", "config.json"), ("audio_codec_path", "codec",
                                                                               "codec.json")):
    path = str(d.get(key, "") or "")
    if not path or not os.path.isdir(path):
      trainer = "train_codec --config configs/unitalking/codec_tiny.py" + (":video" if sub == "video_vae" else "")
      raise ConfigError(f"config key data.{key} = {path!r}: data.video_codec='wan_vae' / data.audio_codec="
                        f"'mel_vae' need the trained codec directory (python -m unitalking_jax.{trainer} "
                        f"--workdir DIR writes DIR/{sub})")
    out.append(_codec_dir(path, sub, marker))
  return out[0], out[1]


def vocoder_path(cfg) -> str:
  """data.vocoder_path: "" (Griffin-Lim) or a BigVGAN directory in NVIDIA's layout (config.json +
  bigvgan_generator.pt, e.g. MMAudio's 16 kHz BigVGAN converted with shared.weights.bigvgan_family.save_bigvgan
  and "mel_log": "log10"); only with the mel VAE codec. ConfigError naming the key when it cannot be used."""
  import os
  path = str(cfg.data.get("vocoder_path", "") or "")
  if not path:
    return ""
  if codec_kind(cfg) != "vae":
    raise ConfigError(f"config key data.vocoder_path = {path!r}: a BigVGAN vocoder needs data.audio_codec='mel_vae' "
                      f"(the PCA codecs' 64-bin AudioLDM mel is inverted by Griffin-Lim)")
  for f in ("config.json", "bigvgan_generator.pt"):
    if not os.path.isfile(os.path.join(path, f)):
      raise ConfigError(f"config key data.vocoder_path = {path!r}: no {f} there (expected a BigVGAN directory in "
                        f"NVIDIA's layout: config.json + bigvgan_generator.pt)")
  return path


def _vae_codecs(cfg) -> VAECodecs:
  from shared.models import av_codec
  d = cfg.data
  vdir, adir = vae_codec_dirs(cfg)
  chunk = int(d.get("video_codec_chunk", 0)) or None
  video = av_codec.load_wan_video_codec(vdir, encode_chunk=chunk, decode_chunk=1 if chunk else None)
  audio = av_codec.load_mel_vae_audio_codec(adir, vocoder=vocoder_path(cfg) or None)
  checks = (("data.video_pca", int(d.video_pca), video.latent_channels, f"the Wan VAE's z_dim ({vdir})"),
            ("data.pixel_factor", int(d.pixel_factor), video.spatial_stride, f"the Wan VAE's spatial stride ({vdir})"),
            ("data.audio_pca", int(d.audio_pca), audio.latent_channels, f"the mel VAE's embed_dim ({adir})"))
  for key, have, want, what in checks:
    if have != want:
      raise ConfigError(f"config key {key} = {have}: {what} is {want}; set --config.{key}={want}")
  if video.temporal_stride != WAN_TEMPORAL_STRIDE or abs(audio.latent_rate - MEL_VAE_RATE) > 1e-9:
    raise ConfigError(f"codecs {vdir} (temporal stride {video.temporal_stride}) / {adir} ({audio.latent_rate} "
                      f"latents/s): UniTalking's layout expects stride {WAN_TEMPORAL_STRIDE} and {MEL_VAE_RATE} Hz")
  return VAECodecs(video, audio)


def codecs(cfg):
  """PCA codecs (`Codecs`) fitted on `pca_fit_samples` training clips (SynthCue is a pure function of its
  config: every process and every later `sample.py` run refits the same codec), or the trained VAE codecs
  (`VAECodecs`) loaded once per process from data.video_codec_path / data.audio_codec_path."""
  d = cfg.data
  if codec_kind(cfg) == "vae":
    key = ("vae",) + vae_codec_dirs(cfg) + (int(d.get("video_codec_chunk", 0)), int(d.video_pca),
                                            int(d.audio_pca), int(d.pixel_factor), vocoder_path(cfg))
    if key not in _CODECS:
      _CODECS[key] = _vae_codecs(cfg)
    return _CODECS[key]
  vocoder_path(cfg)   # refuses a vocoder with the PCA codecs
  key = (d.seed, d.lexicon_size, d.n_speakers, d.n_test_speakers, tuple(d.clauses), d.frame_size,
         d.get("face_crop", 0), d.frames,
         d.pixel_factor, d.mel_mean, d.mel_std, d.video_pca, d.audio_pca, d.pca_fit_samples,
         bool(d.get("video_whiten", False)))
  if key not in _CODECS:
    pix, mel = PixelCodec(d.pixel_factor), MelCodec(d.mel_mean, d.mel_std)
    src = source(cfg, "train")
    raw = [_raw(src[i], cfg, pix, mel) for i in range(min(d.pca_fit_samples, len(src)))]
    pv = PCA.fit(np.concatenate([r[0].reshape(-1, r[0].shape[-1]) for r in raw]), d.video_pca,
                 whiten=bool(d.get("video_whiten", False)))
    pa = PCA.fit(np.concatenate([r[1] for r in raw]), d.audio_pca)
    _CODECS[key] = Codecs(pix, mel, pv, pa)
  return _CODECS[key]


def face_crop(video: np.ndarray, pose: np.ndarray, size: int) -> np.ndarray:
  """[T, H, W, 3] frames -> [T, size, size, 3]: a square window centred on the face, located from the
  first frame's eye landmarks (pose [T, 20, 3], frame units; the face centre lies 0.3 face units below the
  eyes), as talking-face pipelines crop aligned faces from landmarks. Raises DataError if the window leaves
  the frame."""
  t, h, w, _ = video.shape
  centre = pose[0, 0:2, :2].mean(0) + np.array([0.0, 0.3 * FACE_UNIT], np.float32)
  cx, cy = int(round(float(centre[0]) * w)), int(round(float(centre[1]) * h))
  x0, y0 = cx - size // 2, cy - size // 2
  if x0 < 0 or y0 < 0 or x0 + size > w or y0 + size > h:
    raise DataError(f"face crop {size}x{size} at ({x0}, {y0}) leaves the {h}x{w} frame: raise "
                    f"data.frame_size or lower data.face_crop", key="video")
  return video[:, y0:y0 + size, x0:x0 + size]


def model_frame_size(cfg) -> int:
  """Side of the frames the model sees: the face crop when data.face_crop > 0, else the SynthCue frame."""
  return int(cfg.data.get("face_crop", 0)) or int(cfg.data.frame_size)


def clip_video(sample: dict, cfg) -> np.ndarray:
  """The first T frames (short clips repeat their last frame: mouth closed), face-cropped when
  data.face_crop > 0: [T, S, S, 3] uint8."""
  t = cfg.data.frames
  video = sample["video"][:t]
  if video.shape[0] < t:
    video = np.concatenate([video, np.repeat(video[-1:], t - video.shape[0], axis=0)])
  crop = int(cfg.data.get("face_crop", 0))
  return face_crop(video, sample["pose"], crop) if crop else video


def _raw(sample: dict, cfg, pix: PixelCodec, mel: MelCodec):
  t = cfg.data.frames
  return pix.encode(clip_video(sample, cfg)), mel.encode(sample["audio"][:t * 640], frames=t * MEL_PER_FRAME)


TEXT_KINDS = ("pinyin", "umt5")
_TEXT_ENCODERS: dict = {}
_PROMPTS: dict = {}   # (encoder key, prompt) -> (features [S, text_dim], mask [S]): SynthCue sentences repeat
_PROMPT_CACHE = 4096


def text_kind(cfg) -> str:
  """data.text: "pinyin" (ids; needs model.text_vocab > 0) | "umt5" (features; needs model.text_vocab == 0)."""
  kind = cfg.data.text
  if kind not in TEXT_KINDS:
    raise ConfigError(f"data.text {kind!r}: expected one of {TEXT_KINDS}")
  if (kind == "pinyin") != (cfg.model.text_vocab > 0):
    raise ConfigError(f"data.text={kind!r} but model.text_vocab={cfg.model.text_vocab}: pinyin ids need the learned "
                      f"table (text_vocab = the pinyin vocabulary size), UMT5 features need text_vocab=0")
  return kind


def _encoder_key(cfg) -> tuple:
  d = cfg.data
  for k in ("text_tokenizer", "text_encoder"):
    if not d.get(k):
      raise ConfigError(f"data.text='umt5' needs data.{k}: a local directory (e.g. the tokenizer/ and "
                        f"text_encoder/ of Wan-AI/Wan2.2-TI2V-5B-Diffusers)")
  return d.text_tokenizer, d.text_encoder, d.text_len, d.get("text_encoder_dtype", "float32")


def text_encoder(cfg):
  """The process-wide frozen UMT5 TextEncoder of data.text_tokenizer / data.text_encoder (data.text='umt5')."""
  key = _encoder_key(cfg)
  if key not in _TEXT_ENCODERS:
    import jax.numpy as jnp
    from unitalking_jax.text_encoder import TextEncoder
    enc = TextEncoder(key[0], key[1], key[2], dtype=jnp.dtype(key[3]))
    if enc.dim != cfg.model.video.text_dim:
      raise ConfigError(f"model.video.text_dim {cfg.model.video.text_dim} != the UMT5 encoder's d_model {enc.dim} "
                        f"({key[1]})")
    _TEXT_ENCODERS[key] = enc
  return _TEXT_ENCODERS[key]


def prompt_features(cfg, prompt: str):
  """One prompt -> (features [S, text_dim] float32, mask [S] bool), cached per process."""
  key = (_encoder_key(cfg), prompt)
  if key not in _PROMPTS:
    if len(_PROMPTS) >= _PROMPT_CACHE:
      _PROMPTS.pop(next(iter(_PROMPTS)))
    f, m = text_encoder(cfg)([prompt])
    _PROMPTS[key] = (f[0], m[0])
  return _PROMPTS[key]


def pinyin_text(syllables, cfg):
  """Pinyin syllables -> (ids [S] int32 (0 = pad), mask [S] bool: real ids, position 0 always)."""
  ids = VOCAB.encode(list(syllables))[:cfg.data.text_len]
  text = np.zeros(cfg.data.text_len, np.int32)
  text[:ids.shape[0]] = ids
  mask = text != 0
  mask[0] = True
  return text, mask


def prepare(sample: dict, cfg, seed: int = 0) -> dict:
  """SynthCue sample -> the fixed-shape arrays above."""
  d = cfg.data
  t = d.frames
  c = codecs(cfg)
  video = clip_video(sample, cfg)
  mouth = np.zeros(t, np.float32)
  mo = sample["mouth_open"][:t]
  mouth[:mo.shape[0]] = mo
  audio = c.encode_audio(sample["audio"][:t * 640], t * MEL_PER_FRAME)
  p = ref_patch(cfg)
  if text_kind(cfg) == "umt5":
    text, text_mask = prompt_features(cfg, sample["text"])
  else:
    text, text_mask = pinyin_text(sample["pinyin"].split(), cfg)
  rng = np.random.default_rng([seed, int(sample.get("index", 0))])
  ref = ref_tokens(audio, p, rng.permutation(audio.shape[0] // p), ref_len(cfg))
  return {"video": c.encode_video(video), "audio": audio, "text": text, "text_mask": text_mask,
          "ref": ref, "mouth_open": mouth}


KEYS = ("video", "audio", "text", "text_mask", "ref", "mouth_open")


def collate(samples) -> dict:
  return {k: np.stack([s[k] for s in samples]) for k in KEYS}


# ----------------------------------------------------------------------------------------------- sync score

def audio_energy(log_mel: np.ndarray) -> np.ndarray:
  """[4 T, n_mels] natural-log mel (MelCodec.to_log_mel) -> [T] per-video-frame log energy
  (log of the mean mel power over the frame's 4 mel frames and all bins)."""
  m = np.asarray(log_mel, np.float64)
  t = m.shape[0] // MEL_PER_FRAME
  return np.log(np.exp(m[:t * MEL_PER_FRAME]).reshape(t, -1).mean(-1) + 1e-4)


def _box3(x: np.ndarray) -> np.ndarray:
  """3x3 box mean over the last two axes (edge padding)."""
  p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
  h, w = x.shape[-2:]
  return sum(p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def mouth_opening(frames: np.ndarray, k: int = 4) -> np.ndarray:
  """frames [T, H, W, 3] uint8 -> [T] opening proxy: 255 - mean luminance of the frame's k darkest pixels.
  SynthCue draws the open mouth as the darkest patch of the frame (eyes and brows stay constant), so this
  tracks mouth_open without locating the face: corr ~0.68 on real 32 px clips, ~0.8 after the PCA codec."""
  lum = np.asarray(frames, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # [T, H, W]
  return 255.0 - np.sort(lum.reshape(lum.shape[0], -1), axis=1)[:, :k].mean(1)


def corr(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation of two [T] series (0 when either is constant)."""
  a, b = a - a.mean(), b - b.mean()
  den = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / den) if den > 1e-8 else 0.0


def sync_curves(frames: list, mels: list) -> tuple[list, list]:
  """frames: per clip [T, H, W, 3] uint8; mels: per clip log-mel [4 T, n_mels] -> (mouth opening [T] per clip,
  audio energy [T] per clip): the two series the sync score correlates (and sync.png draws)."""
  return [mouth_opening(f) for f in frames], [audio_energy(m) for m in mels]


def sync_score(frames: list, mels: list) -> dict:
  """Matched vs shuffled sync. frames: per clip [T, H, W, 3] uint8; mels: per clip log-mel [4 T, n_mels].
  Returns {"sync": mean corr of matched pairs, "sync_shuffled": mean corr of (video_i, audio_{i+1}) pairs,
  "sync_margin": their difference}."""
  return sync_score_of_curves(*sync_curves(frames, mels))


def sync_score_of_curves(op: list, en: list) -> dict:
  """sync_score from sync_curves' output."""
  n = len(op)
  matched = [corr(op[i], en[i]) for i in range(n)]
  shuffled = [corr(op[i], en[(i + 1) % n]) for i in range(n)] if n > 1 else [0.0]
  return {"sync": float(np.mean(matched)), "sync_shuffled": float(np.mean(shuffled)),
          "sync_margin": float(np.mean(matched) - np.mean(shuffled))}
