"""The MMAudio-style mel VAE in PyTorch (no JAX import): the audio codec of UniTalking releases (R/audio_vae).

  vae = MelVAE.from_pretrained("R/audio_vae")        # codec.json + mel_vae.safetensors (save_mel_vae_audio_codec)
  z = vae.encode_audio(audio [S] float32 16 kHz, latent_frames)   -> normalised latents [N, C] (numpy)
  mel = vae.log_mel(z)                                              -> the VAE's log10 mel [2 N, n_mels]
  audio = vae.mel_to_audio(mel)                                     -> Griffin-Lim, [2 N hop] float32
Same computation as shared.models.mmaudio_vae / shared.models.av_codec.MelVAEAudioCodec (tests/unitalking/
test_smoke.py checks parity): MMAudio's structure (EDM2 magnitude-preserving bias-free 1-D convs whose stored
raw weights are normalised per output channel in the forward pass, pixel norm, mp_silu, mp_sum, interleaved-qkv
attention, avg-pool down / nearest up, clamps, learnable gains), channels first as in MMAudio, weights under
MMAudio's names (shared/weights/mmaudio_vae_family.py), mel statistics from codec.json's "mel_vae" section,
latent statistics from its "latent_stats".
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shared.data import features
from shared.errors import CheckpointError, ConfigError

EPS = 1e-4


def _normalize(x: torch.Tensor, dim) -> torch.Tensor:
  n = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
  numel = math.prod(x.shape[d] for d in (dim if isinstance(dim, (list, tuple)) else [dim]))
  return x / (EPS + n / math.sqrt(numel)).to(x.dtype)


def mp_silu(x):
  return F.silu(x) / 0.596


def mp_sum(a, b, t: float):
  return torch.lerp(a, b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


class MPConv1D(nn.Module):
  """weight [out, in, k] (raw, as MMAudio's checkpoints hold it), normalised per output channel on use."""

  def __init__(self, cin: int, cout: int, k: int):
    super().__init__()
    self.weight = nn.Parameter(torch.zeros(cout, cin, k))

  def forward(self, x, gain=1.0):
    w = self.weight.float()
    fan_in = w[0].numel()
    w = _normalize(w, [1, 2]) / math.sqrt(fan_in) * gain
    return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResBlock(nn.Module):
  def __init__(self, cin: int, cout: int, k: int = 3):
    super().__init__()
    self.cin, self.cout = cin, cout
    self.conv1, self.conv2 = MPConv1D(cin, cout, k), MPConv1D(cout, cout, k)
    if cin != cout:
      self.nin_shortcut = MPConv1D(cin, cout, 1)

  def forward(self, x):
    x = _normalize(x, 1)
    h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
    if self.cin != self.cout:
      x = self.nin_shortcut(x)
    return mp_sum(x, h, 0.3)


class Attn(nn.Module):
  def __init__(self, c: int, heads: int = 1):
    super().__init__()
    self.heads = heads
    self.qkv, self.proj_out = MPConv1D(c, 3 * c, 1), MPConv1D(c, c, 1)

  def forward(self, x):
    y = self.qkv(x)
    y = y.reshape(y.shape[0], self.heads, -1, 3, y.shape[-1])
    q, k, v = _normalize(y, 2).unbind(3)                       # [b, h, c, l]
    h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    return mp_sum(x, self.proj_out(h.transpose(-1, -2).reshape(x.shape)), 0.3)


class Down(nn.Module):
  def __init__(self, c: int):
    super().__init__()
    self.conv1, self.conv2 = MPConv1D(c, c, 1), MPConv1D(c, c, 1)

  def forward(self, x):
    return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Up(nn.Module):
  def __init__(self, c: int):
    super().__init__()
    self.conv = MPConv1D(c, c, 3)

  def forward(self, x):
    return self.conv(torch.repeat_interleave(x, 2, dim=-1))


class Mid(nn.Module):
  def __init__(self, c: int, k: int, heads: int):
    super().__init__()
    self.block_1, self.attn_1, self.block_2 = ResBlock(c, c, k), Attn(c, heads), ResBlock(c, c, k)

  def forward(self, h):
    return self.block_2(self.attn_1(self.block_1(h)))


def _level(blocks: int, cin: int, cout: int, k: int, attn: bool, heads: int) -> nn.Module:
  lvl = nn.Module()
  lvl.block, lvl.attn = nn.ModuleList(), nn.ModuleList()
  for _ in range(blocks):
    lvl.block.append(ResBlock(cin, cout, k))
    cin = cout
    if attn:
      lvl.attn.append(Attn(cin, heads))
  return lvl


def _run_level(lvl, h, clip):
  for j, blk in enumerate(lvl.block):
    h = blk(h)
    if len(lvl.attn):
      h = lvl.attn[j](h)
    h = h.clamp(-clip, clip)
  return h


class Encoder(nn.Module):
  def __init__(self, c: dict):
    super().__init__()
    self.c, d, k = c, c["hidden_dim"], c["kernel_size"]
    self.conv_in = MPConv1D(c["data_dim"], d, k)
    self.down = nn.ModuleList()
    cin = d
    for i, m in enumerate(c["ch_mult"]):
      lvl = _level(c["num_res_blocks"], cin, d * m, k, i in c["attn_layers"], c["num_heads"])
      cin = d * m
      if i in c["down_layers"]:
        lvl.downsample = Down(cin)
      self.down.append(lvl)
    self.mid = Mid(cin, k, c["num_heads"])
    self.conv_out = MPConv1D(cin, 2 * c["embed_dim"], k)
    self.learnable_gain = nn.Parameter(torch.zeros([]))

  def forward(self, x):
    c, clip = self.c, self.c["clip_act"]
    h = self.conv_in(x)
    for i, lvl in enumerate(self.down):
      h = _run_level(lvl, h, clip)
      if i in c["down_layers"]:
        h = lvl.downsample(h)
    h = self.mid(h).clamp(-clip, clip)
    return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder(nn.Module):
  def __init__(self, c: dict):
    super().__init__()
    self.c, d = c, c["hidden_dim"]
    self.up_layers = [i + 1 for i in c["down_layers"]]
    cin = d * c["ch_mult"][-1]
    self.conv_in = MPConv1D(c["embed_dim"], cin, c["kernel_size"])
    self.mid = Mid(cin, 3, c["num_heads"])
    levels = {}
    for i in reversed(range(len(c["ch_mult"]))):
      levels[i] = _level(c["num_res_blocks"] + 1, cin, d * c["ch_mult"][i], 3, i in c["attn_layers"],
                         c["num_heads"])
      cin = d * c["ch_mult"][i]
      if i in self.up_layers:
        levels[i].upsample = Up(cin)
    self.up = nn.ModuleList([levels[i] for i in range(len(c["ch_mult"]))])
    self.conv_out = MPConv1D(cin, c["data_dim"], c["kernel_size"])
    self.learnable_gain = nn.Parameter(torch.zeros([]))

  def forward(self, z):
    clip = self.c["clip_act"]
    h = self.mid(self.conv_in(z)).clamp(-clip, clip)
    for i in reversed(range(len(self.up))):
      h = _run_level(self.up[i], h, clip)
      if i in self.up_layers:
        h = self.up[i].upsample(h)
    return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class MelVAE(nn.Module):
  """MMAudio's VAE (channels first: mel [B, n_mels, T]) + the codec around it (module docstring)."""

  def __init__(self, config: dict, mel: features.MelConfig, latent_mean, latent_std, griffin_lim_iters: int = 32):
    super().__init__()
    self.config, self.mel = dict(config), mel
    for key in ("data_mean", "data_std"):
      if config.get(key) is None:
        raise ConfigError(f"mel VAE config has no {key}: codec.json's 'mel_vae' section carries both")
    self.register_buffer("data_mean", torch.tensor(config["data_mean"], dtype=torch.float32).view(1, -1, 1))
    self.register_buffer("data_std", torch.tensor(config["data_std"], dtype=torch.float32).view(1, -1, 1))
    self.encoder, self.decoder = Encoder(self.config), Decoder(self.config)
    self.latent_mean = np.asarray(latent_mean, np.float32)
    self.latent_std = np.asarray(latent_std, np.float32)
    self.griffin_lim_iters = int(griffin_lim_iters)

  # -- loading --
  @classmethod
  def from_pretrained(cls, path: str, griffin_lim_iters: int = 32) -> "MelVAE":
    """path: a directory with codec.json + mel_vae.safetensors (R/audio_vae, or a train_codec codec dir)."""
    from safetensors.torch import load_file
    meta_path, weights = os.path.join(path, "codec.json"), os.path.join(path, "mel_vae.safetensors")
    for f in (meta_path, weights):
      if not os.path.isfile(f):
        raise CheckpointError(f"mel VAE file {f} is missing (written by shared.models.av_codec."
                              f"save_mel_vae_audio_codec / the release export)")
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    c = dict(meta["mel_vae"])
    for k in ("ch_mult", "attn_layers", "down_layers"):
      c[k] = tuple(c[k])
    mel = features.MelConfig(**meta["mel"])
    model = cls(c, mel, meta["latent_stats"]["mean"], meta["latent_stats"]["std"], griffin_lim_iters)
    sd = load_file(weights)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
      raise CheckpointError(f"{weights}: keys differ from the mel VAE's (missing {missing[:4]}, unexpected "
                            f"{unexpected[:4]})")
    for k, v in sd.items():
      if tuple(v.shape) != tuple(own[k].shape):
        raise CheckpointError(f"{weights}: {k} has shape {tuple(v.shape)}, the config gives {tuple(own[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval()

  # -- the codec interface (unitalking_jax.codecs.VAECodecs) --
  @property
  def downsample(self) -> int:
    return 2 ** len(self.config["down_layers"])

  @property
  def latent_rate(self) -> float:
    return self.mel.sample_rate / self.mel.hop / self.downsample

  @property
  def latent_channels(self) -> int:
    return int(self.config["embed_dim"])

  @torch.no_grad()
  def encode_audio(self, audio, latent_frames: int) -> np.ndarray:
    """audio [S] float32 -> normalised posterior means [latent_frames, C] (audio zero-padded / cropped)."""
    x = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
    need = int(latent_frames) * self.downsample * self.mel.hop
    x = np.pad(x, (0, max(0, need - x.shape[0])))
    mel = features.log_mel(x, self.mel)[:int(latent_frames) * self.downsample]
    m = torch.from_numpy(np.ascontiguousarray(mel.T[None], np.float32))
    mean, _ = torch.chunk(self.encoder((m - self.data_mean) / self.data_std), 2, dim=1)
    z = mean[0].T.numpy()
    return ((z - self.latent_mean) / self.latent_std).astype(np.float32)

  @torch.no_grad()
  def log_mel(self, latents) -> np.ndarray:
    """Normalised latents [N, C] -> decoded log-mel [2 N, n_mels] (the mel config's log)."""
    z = np.asarray(latents, np.float32) * self.latent_std + self.latent_mean
    out = self.decoder(torch.from_numpy(np.ascontiguousarray(z.T[None])))
    return (out * self.data_std + self.data_mean)[0].T.numpy().astype(np.float32)

  def mel_to_audio(self, mel, seed: int = 0) -> np.ndarray:
    """log-mel [T, n_mels] -> audio [T hop] by Griffin-Lim (as av_codec.MelVAEAudioCodec without a vocoder)."""
    m = np.asarray(mel, np.float32)
    n = m.shape[0] * self.mel.hop
    floor = math.log10(self.mel.floor) if self.mel.log == "log10" else math.log(self.mel.floor)
    a = features.mel_to_audio(np.clip(m, floor, None), self.mel, n_iter=self.griffin_lim_iters, seed=seed)[:n]
    out = np.zeros(n, np.float32)
    out[:a.shape[0]] = a
    return out
