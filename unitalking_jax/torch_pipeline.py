"""UniTalking generation in PyTorch alone (no JAX import), from a release directory (unitalking_jax/release.py).

  pipe = UniTalkingPipeline.from_pretrained("R")                  # R written by python -m unitalking_jax.export
  out = pipe(text="ni hao ma", image=None, ref_audio=None, video=None, seed=0)   # or generator= / noise=
  out.frames [T, H, W, 3] uint8, out.audio [T * 640] float32 at out.sample_rate (16 kHz), out.task
  out.video_latents [1, T, h, w, Cv], out.audio_latents [1, 4 T, Ca] float32 (numpy)
  out.save("clip.mp4")                                            # h264 + aac, and clip.wav beside it

The task follows the inputs (none: t2av; image: ti2av, the first frame kept; video: tv2a, every frame kept and
the audio generated; ref_audio: tr2av, the voice of the reference) or is named with task=; a missing or
ignored input is a ConfigError naming it (the argument and its sample.py --flag).

Components: `text_encoder` (UMT5 releases) = UMT5TextEncoder (transformers' UMT5EncoderModel); `transformer` =
UniTalkingTransformer: two diffusers WanTransformer3DModel (transformer/video_stream,
transformer/audio_stream, from_pretrained) + the learned syllable tables (text_embed, text_pos_embed from
transformer/unitalking_rest.safetensors) in unitalking_jax.torch_model.UniTalkingTorch (JAX-free at import);
`scheduler` = the diffusers scheduler of scheduler/scheduler_config.json
(FlowMatchEulerDiscreteScheduler for sampler "euler", UniPCMultistepScheduler for "unipc"); the PCA codecs,
Griffin-Lim vocoder and syllable tokenizer are numpy (release.Release); releases of the trained VAE codecs
(model_index "_unitalking".codec = "vae") decode with `vae` = diffusers AutoencoderKLWan (TorchWanVideo) and
`audio_vae` = unitalking_jax.torch_mel_vae.MelVAE (then Griffin-Lim, or `vocoder` = NVIDIA's BigVGAN from PyPI
`bigvgan` (pip install --no-deps bigvgan==2.4.1) when vocoder/ holds bigvgan_generator.pt: TorchBigVGANAudio,
fed the VAE's mel scaled to the vocoder's log base as shared.models.av_codec does): latents [1, t, h, w, Cv] / [1, Ta, Ca]
with t = 1 + (T - 1) / 4, Ta = ceil(1.25 T). Sampling = unitalking_jax.task.
make_generate: classifier-free guidance over [null text, text (, text + reference)] with the scheduler config's
guidance_scale / ref_guidance_scale, given latent frames held at their value (σ = 0, timestep 0) throughout.
Initial noise: `noise` [1, Nv + Na] (video latents flattened, then audio; or a (video, audio) pair of latent-shaped
arrays) - pass release.jax_noise(rel, seed) to get JAX's exact draw for `seed` - else torch.randn from
`generator` (or torch.Generator().manual_seed(seed)): a different draw than JAX's for the same seed.
"""
from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import numpy as np
import torch

from shared.data import features
from shared.errors import CheckpointError, ConfigError
from shared.torch_compat import import_torchvision
from unitalking_jax import release as rel_lib

import_torchvision()   # before diffusers: a CUDA-built torchvision on a CPU torch would break its imports


# ------------------------------------------------------------------------------------------- the transformer

class UniTalkingTransformer:
  """The joint DiT of a release: unitalking_jax.torch_model.UniTalkingTorch over the two diffusers
  WanTransformer3DModel streams read with from_pretrained, configured by a namespace of the release's
  unitalking_config.json (no JAX: torch_model imports none at module level). forward(video [B, T, h, w, Cv],
  audio [B, Ta, Ca], t_video [B, Lv], t_audio [B], text ids [B, S] | UMT5 features [B, S, text_dim],
  text_mask [B, S] bool, ref [B, R, ref_dim], tv2a) -> velocities (channels-last, float32)."""

  @staticmethod
  def from_pretrained(path: str, torch_dtype=torch.float32):
    """path = R/transformer (video_stream/, audio_stream/, unitalking_rest.safetensors, unitalking_config.json)."""
    import json
    from diffusers import WanTransformer3DModel
    from safetensors import safe_open
    from unitalking_jax.torch_model import UniTalkingTorch, _load_text_tables
    with open(rel_lib.need(os.path.join(path, rel_lib.CONFIG_FILE)), encoding="utf-8") as f:
      config = json.load(f)[rel_lib.CONFIG_KEY]
    streams = []
    for name in (rel_lib.VIDEO_STREAM, rel_lib.AUDIO_STREAM):
      rel_lib.need(os.path.join(path, name, "config.json"))
      streams.append(WanTransformer3DModel.from_pretrained(os.path.join(path, name), torch_dtype=torch_dtype))
    video = SimpleNamespace(**config["video"])
    video.patch_size = tuple(video.patch_size)
    # the audio twin shares the video stream's attention geometry (UniTalkingConfig.audio): RoPE reads these
    audio = SimpleNamespace(attention_head_dim=video.attention_head_dim, rope_theta=video.rope_theta)
    c = SimpleNamespace(**{k: v for k, v in config.items() if k != "video"}, video=video, audio=audio)
    c.audio_hw_pos = tuple(getattr(c, "audio_hw_pos", (0.0, 0.0)))
    model = UniTalkingTorch(c, *streams)
    rest = rel_lib.need(os.path.join(path, rel_lib.REST_FILE))
    with safe_open(rest, framework="np") as f:
      tables = {k: f.get_tensor(k) for k in ("text_embed", "text_pos_embed") if k in set(f.keys())}
    _load_text_tables(model, tables, rest)
    return model.eval()


# ------------------------------------------------------------------------------------------------ codecs

class TorchWanVideo:
  """R/vae with diffusers' AutoencoderKLWan: frames [T, H, W, 3] uint8 <-> normalised posterior means
  [1 + (T - 1) // 4, H / s, W / s, z] ((mu - latents_mean) / latents_std, as shared.models.av_codec.WanVideoCodec)."""

  def __init__(self, path: str, torch_dtype=torch.float32):
    from diffusers import AutoencoderKLWan
    rel_lib.need(os.path.join(path, "config.json"))
    self.vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=torch_dtype).eval()
    c = self.vae.config
    self.mean = torch.tensor(c.latents_mean, dtype=torch.float32)
    self.std = torch.tensor(c.latents_std, dtype=torch.float32)
    self.temporal_stride = int(c.scale_factor_temporal)
    self.spatial_stride = int(c.scale_factor_spatial)
    self.latent_channels = int(c.z_dim)

  @torch.no_grad()
  def encode_video(self, frames) -> np.ndarray:
    x = torch.from_numpy(np.asarray(frames, np.float32) / 127.5 - 1.0).permute(3, 0, 1, 2)[None]   # [1, 3, T, H, W]
    mu = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean.float()[0]                          # [z, t, h, w]
    z = (mu.permute(1, 2, 3, 0) - self.mean) / self.std
    return z.numpy().astype(np.float32)

  @torch.no_grad()
  def decode_video(self, latents) -> np.ndarray:
    z = torch.from_numpy(np.asarray(latents, np.float32)) * self.std + self.mean                    # [t, h, w, z]
    y = self.vae.decode(z.permute(3, 0, 1, 2)[None].to(self.vae.dtype)).sample.float()[0]           # [3, T, H, W]
    y = y.clamp(-1.0, 1.0).permute(1, 2, 3, 0).numpy()
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype(np.uint8)


def load_bigvgan(path: str):
  """R/vocoder in NVIDIA's layout -> their bigvgan.bigvgan.BigVGAN (torch Activation1d: use_cuda_kernel False),
  eval mode. ConfigError when the package is missing."""
  try:
    from bigvgan.bigvgan import BigVGAN
  except ImportError as e:
    raise ConfigError(f"{path} holds a BigVGAN vocoder: the PyTorch pipeline runs it with NVIDIA's package: "
                      f"pip install --no-deps bigvgan==2.4.1") from e
  rel_lib.need(os.path.join(path, rel_lib.BIGVGAN_FILE))
  # = BigVGAN.from_pretrained(path) on a local directory; called directly because from_pretrained of newer
  # huggingface_hub no longer passes the proxies / resume_download keywords their _from_pretrained requires
  model = BigVGAN._from_pretrained(model_id=path, revision=None, cache_dir=None, force_download=False, proxies=None,
                                   resume_download=False, local_files_only=True, token=None, use_cuda_kernel=False)
  return model.eval()


class TorchBigVGANAudio:
  """The mel VAE (torch_mel_vae.MelVAE: encode_audio, log_mel, mel, latent_rate, ...) with NVIDIA's BigVGAN as its
  vocoder: mel_to_audio(log-mel [T, n_mels] in the VAE's base) -> audio [T hop] float32 = BigVGAN(mel x scale)."""

  def __init__(self, vae, vocoder, mel_log: str):
    self.vae, self.vocoder = vae, vocoder
    self.scale = features.vocoder_mel_scale(mel_log, vae.mel.log)

  def __getattr__(self, name):
    return getattr(self.vae, name)

  @torch.no_grad()
  def mel_to_audio(self, mel, seed: int = 0) -> np.ndarray:
    m = torch.from_numpy(np.ascontiguousarray(np.asarray(mel, np.float32).T[None])) * self.scale   # [1, n_mels, T]
    return self.vocoder(m)[0, 0].numpy().astype(np.float32)


def torch_codecs(rel: rel_lib.Release, torch_dtype=torch.float32) -> rel_lib.Release:
  """VAE releases: attaches the PyTorch codecs (R/vae: diffusers AutoencoderKLWan; R/audio_vae: the mel VAE of
  unitalking_jax.torch_mel_vae, Griffin-Lim on its mel or R/vocoder's BigVGAN); PCA releases are returned as they
  are (numpy codecs)."""
  if rel.codec_kind == "vae" and rel.codecs is None:
    import json
    from unitalking_jax.codecs import VAECodecs
    from unitalking_jax.torch_mel_vae import MelVAE
    adir = os.path.join(rel.path, "audio_vae")
    audio = MelVAE.from_pretrained(adir, rel.griffin_lim_iters)
    vdir = rel.vocoder_path()
    if vdir is not None:
      with open(rel_lib.need(os.path.join(vdir, "config.json")), encoding="utf-8") as f:
        h = json.load(f)
      features.check_vocoder_mel(h, audio.mel, vdir, adir)
      # no "mel_log" in config.json: NVIDIA's natural-log mel (as shared.weights.bigvgan_family.ABSENT)
      audio = TorchBigVGANAudio(audio, load_bigvgan(vdir), h.get("mel_log") or "ln")
    rel.attach(VAECodecs(TorchWanVideo(os.path.join(rel.path, "vae"), torch_dtype), audio))
  return rel


# ------------------------------------------------------------------------------------------------ pipeline

class UMT5TextEncoder:
  """UMT5 releases: text -> (features [S, text_dim] float32, mask [S] bool) with transformers' UMT5EncoderModel
  (R/text_encoder) and the release tokenizer, as unitalking_jax/text_encoder.py: the last hidden state on the
  tokens, zero rows after them."""

  def __init__(self, rel: rel_lib.Release, torch_dtype=torch.float32):
    from transformers import UMT5EncoderModel
    from shared.text.tokenizers import load_tokenizer
    self.tokenizer = load_tokenizer(rel.tokenizer_path())
    self.model = UMT5EncoderModel.from_pretrained(os.path.join(rel.path, "text_encoder"), torch_dtype=torch_dtype,
                                                  local_files_only=True).eval()
    self.length = int(rel.meta["text_len"])

  @torch.no_grad()
  def __call__(self, text: str):
    ids, mask = rel_lib.tokenize(self.tokenizer, text, self.length)
    h = self.model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    h = h.last_hidden_state.float()[0].numpy()
    keep = np.arange(self.length) < int(mask.sum())
    return np.where(keep[:, None], h, 0.0).astype(np.float32), mask[0]


@dataclasses.dataclass
class UniTalkingOutput:
  frames: np.ndarray          # [T, H, W, 3] uint8
  audio: np.ndarray           # [T * 640] float32
  sample_rate: int
  fps: float
  task: str
  video_latents: np.ndarray   # [1, T, h, w, Cv] float32
  audio_latents: np.ndarray   # [1, 4 T, Ca] float32

  def save(self, path: str, scale: int = 1) -> str:
    """path.mp4 (frames enlarged `scale` x, audio as aac) and path.wav beside it; returns the mp4 path."""
    return rel_lib.write_media(path, self.frames, self.audio, self.fps, scale)


def make_scheduler(config: dict):
  """The diffusers scheduler of scheduler_config.json."""
  import diffusers
  name = config.get("_class_name")
  if name not in rel_lib.SCHEDULERS.values():
    raise ConfigError(f"scheduler _class_name {name!r}: expected one of {sorted(rel_lib.SCHEDULERS.values())}")
  return getattr(diffusers, name).from_config(config)


class UniTalkingPipeline:
  """See the module docstring."""

  def __init__(self, release: rel_lib.Release, transformer: UniTalkingTransformer, text_encoder=None):
    self.release, self.transformer, self.text_encoder = release, transformer, text_encoder

  @classmethod
  def from_pretrained(cls, path: str, torch_dtype=torch.float32) -> "UniTalkingPipeline":
    rel = torch_codecs(rel_lib.Release.load(path), torch_dtype)
    text_encoder = UMT5TextEncoder(rel, torch_dtype) if rel.text_kind == "umt5" else None
    return cls(rel, UniTalkingTransformer.from_pretrained(os.path.join(rel.path, rel_lib.TRANSFORMER), torch_dtype),
               text_encoder)

  def _noise(self, noise, generator, seed) -> torch.Tensor:
    n = self.release.noise_size()
    if noise is None:
      g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
      return torch.randn((1, n), generator=g, dtype=torch.float32)
    if isinstance(noise, (tuple, list)):
      noise = np.concatenate([np.asarray(x, np.float32).reshape(1, -1) for x in noise], axis=1)
    noise = torch.from_numpy(np.array(noise, np.float32))   # a copy: arrays from JAX are read-only
    if noise.numel() != n:
      v, a = self.release.latent_shapes()
      raise ConfigError(f"noise of shape {tuple(noise.shape)}: expected [1, {n}] (video {list(v)} flattened, then "
                        f"audio {list(a)}) or a (video, audio) pair of those shapes")
    return noise.reshape(1, n)

  @torch.no_grad()
  def __call__(self, text: str, image=None, ref_audio=None, video=None, *, task: str | None = None, seed: int = 0,
               generator: torch.Generator | None = None, noise=None, num_inference_steps: int | None = None,
               guidance_scale: float | None = None, ref_guidance_scale: float | None = None,
               griffin_lim: bool = True) -> UniTalkingOutput:
    rel = self.release
    s = rel.scheduler[rel_lib.SAMPLING_KEY]
    task, batch = rel_lib.inputs(rel, text, image=image, ref_audio=ref_audio, video=video, task=task,
                                 text_encoder=self.text_encoder)
    steps = int(num_inference_steps or s["num_inference_steps"])
    scales = [float(s["guidance_scale"] if guidance_scale is None else guidance_scale)]
    b = {k: torch.from_numpy(np.asarray(x)) for k, x in batch.items()}
    vid, aud = b["video"], b["audio"]
    t, h, w = vid.shape[1:4]
    nv = vid[0].numel()
    pt, ph, pw = self.transformer.unitalking_config.video.patch_size
    n_clean = {"tv2a": t, "ti2av": 1}.get(task, 0)
    clean_frame = torch.arange(t) < n_clean                                   # [T] latent frames
    clean_tok = clean_frame.reshape(t // pt, pt).any(-1).repeat_interleave((h // ph) * (w // pw))[None]  # [1, Lv]
    ref = b["ref"] if task == "tr2av" else torch.zeros_like(b["ref"])
    null = torch.zeros_like(b["text"])
    null_mask = torch.zeros_like(b["text_mask"])
    null_mask[:, 0] = True
    conds = [(null, null_mask, torch.zeros_like(ref)), (b["text"], b["text_mask"], torch.zeros_like(ref))]
    if task == "tr2av":
      conds.append((b["text"], b["text_mask"], ref))
      scales.append(float(s["ref_guidance_scale"] if ref_guidance_scale is None else ref_guidance_scale))
    text_k, mask_k, ref_k = (torch.cat(x, 0) for x in zip(*conds))
    k = len(conds)
    fixed = torch.cat([clean_frame.repeat_interleave(nv // t), torch.zeros(aud[0].numel(), dtype=torch.bool)])[None]
    value = torch.cat([vid.reshape(1, -1), torch.zeros(1, aud[0].numel())], 1).float()
    fix = lambda x: torch.where(fixed, value, x) if n_clean else x  # noqa: E731

    def model(x, tt):
      xs = torch.cat([x] * k, 0)
      xv, xa = xs[:, :nv].reshape((k,) + vid.shape[1:]), xs[:, nv:].reshape((k,) + aud.shape[1:])
      t_v = torch.where(clean_tok.expand(k, -1), 0.0, tt.float())
      pv, pa = self.transformer(xv, xa, t_v, torch.full((k,), float(tt)), text_k, mask_k, ref_k, tv2a=task == "tv2a")
      p = torch.cat([pv.reshape(k, -1), pa.reshape(k, -1)], 1).float()
      out = p[0:1]
      for i in range(1, k):
        out = out + scales[i - 1] * (p[i:i + 1] - p[i - 1:i])
      return out

    sched = make_scheduler(rel.scheduler)
    sched.set_timesteps(steps)
    x = fix(self._noise(noise, generator, seed))
    for tt in sched.timesteps:
      x = fix(sched.step(model(x, tt), tt, x, return_dict=False)[0].float())
    v_lat = x[:, :nv].reshape(vid.shape).numpy()
    a_lat = x[:, nv:].reshape(aud.shape).numpy()
    frames, audio = rel.decode(v_lat[0], a_lat[0], griffin_lim=griffin_lim)
    return UniTalkingOutput(frames=frames, audio=audio, sample_rate=rel_lib.SAMPLE_RATE,
                            fps=float(rel.meta["fps"]), task=task, video_latents=v_lat, audio_latents=a_lat)
