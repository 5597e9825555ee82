"""MMAudio's 1-D mel VAE (EDM2 magnitude-preserving layers), channels last.

  mel [B, T, data_dim] --encode--> mean, logvar [B, T / 2, embed_dim] --decode--> mel [B, T, data_dim]

16k mode: 80 mels (n_fft 1024, hop 256 -> 62.5 Hz) -> 20-d latents at 31.25 Hz, hidden 384;
44k mode: 128 mels (n_fft 2048, hop 512) -> 40-d latents, hidden 512. Structure (hkchengrex/MMAudio,
mmaudio/ext/autoencoder/vae.py, vae_modules.py, edm2_utils.py):
  Encoder1D: conv_in (k3) -> per level i of ch_mult (1, 2, 4): num_res_blocks ResnetBlock1D
    (+ attention if i in attn_layers), each clamped to +-clip_act; Downsample1D after level i in
    down_layers (1x1 conv, avg-pool 2, 1x1 conv) -> mid (block_1, attn_1, block_2), clamp ->
    mp_silu -> conv_out (k3, 2 * embed_dim) scaled by (1 + learnable_gain).
  Decoder1D mirrors it with num_res_blocks + 1 blocks per level and Upsample1D (nearest 2x, conv k3)
    after level i + 1 for i in down_layers.
  ResnetBlock1D: x = pixel_norm(x); h = conv2(mp_silu(conv1(mp_silu(x)))); mp_sum(shortcut(x), h, 0.3).
  AttnBlock1D: qkv 1x1 conv, channels split (heads, C/heads, 3) interleaved, q/k/v pixel-normed,
    softmax attention, proj_out 1x1, mp_sum(x, h, 0.3).
MPConv1D has no bias; its stored weight is raw and used normalised per output channel,
w / ||w_o|| (with EDM2's eps 1e-4 on ||w_o|| / sqrt(fan_in)) — what MMAudio's remove_weight_norm()
bakes in before inference — so imported checkpoints are used as stored. Mel statistics
(data_mean / data_std, MMAudio's tables for 80 and 128 mels) are config constants.
Checkpoint names: shared/weights/mmaudio_vae_family.py.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared import kernels
from shared.errors import ConfigError

Dtype = Any
EPS = 1e-4


@dataclasses.dataclass(frozen=True)
class MMAudioVAEConfig:
  data_dim: int = 80
  embed_dim: int = 20
  hidden_dim: int = 384
  ch_mult: tuple[int, ...] = (1, 2, 4)
  num_res_blocks: int = 2
  attn_layers: tuple[int, ...] = (3,)
  down_layers: tuple[int, ...] = (0,)
  kernel_size: int = 3
  clip_act: float = 256.0
  num_heads: int = 1
  data_mean: tuple[float, ...] | None = None   # None: MMAudio's table for 80 / 128 mels, else zeros
  data_std: tuple[float, ...] | None = None    # None: MMAudio's table for 80 / 128 mels, else ones

  def __post_init__(self):
    for name in ("data_mean", "data_std"):
      v = getattr(self, name)
      if v is not None and len(v) != self.data_dim:
        raise ConfigError(f"MMAudioVAEConfig.{name} has {len(v)} values; expected data_dim={self.data_dim}")
    if self.hidden_dim % self.num_heads:
      raise ConfigError(f"hidden_dim {self.hidden_dim} not divisible by num_heads {self.num_heads}")

  @property
  def has_stat_buffers(self) -> bool:
    """Whether MMAudio's VAE registers data_mean / data_std buffers (only for 80 or 128 mels)."""
    return self.data_dim in (80, 128)

  def stats(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) [data_dim] float32 used by normalize / unnormalize."""
    table = {80: (DATA_MEAN_80D, DATA_STD_80D), 128: (DATA_MEAN_128D, DATA_STD_128D)}.get(self.data_dim)
    mean = self.data_mean if self.data_mean is not None else (table[0] if table else (0.0,) * self.data_dim)
    std = self.data_std if self.data_std is not None else (table[1] if table else (1.0,) * self.data_dim)
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)

  @property
  def temporal_downsample(self) -> int:
    return 2 ** len(self.down_layers)


def mmaudio_vae_16k(**kw) -> MMAudioVAEConfig:
  return MMAudioVAEConfig(data_dim=80, embed_dim=20, hidden_dim=384, **kw)


def mmaudio_vae_44k(**kw) -> MMAudioVAEConfig:
  return MMAudioVAEConfig(data_dim=128, embed_dim=40, hidden_dim=512, **kw)


# ----------------------------------------------------------------------------- EDM2 primitives
def pixel_norm(x: jax.Array, axis: int | tuple[int, ...] = -1) -> jax.Array:
  """x / (eps + ||x|| / sqrt(n)) over `axis` (n its size), in float32; returns x.dtype."""
  xf = x.astype(jnp.float32)
  axes = (axis,) if isinstance(axis, int) else axis
  n = int(np.prod([x.shape[a] for a in axes]))
  norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=axes, keepdims=True))
  return (xf / (EPS + norm / math.sqrt(n))).astype(x.dtype)


def mp_silu(x: jax.Array) -> jax.Array:
  return jax.nn.silu(x) / 0.596


def mp_sum(a: jax.Array, b: jax.Array, t: float = 0.5) -> jax.Array:
  return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t ** 2)


class MPConv1D(nn.Module):
  """Magnitude-preserving conv, no bias: x [B, T, in] -> [B, T, features] ('same' padding k // 2).

  weight [k, in, out] (PyTorch [out, in, k]) is used as w_o / (eps sqrt(fan_in) + ||w_o||) * gain."""
  features: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, gain: jax.Array | float = 1.0) -> jax.Array:
    fan_in = x.shape[-1] * self.kernel_size
    w = self.param("weight", nn.with_logical_partitioning(
        nn.initializers.normal(1.0), ("conv_kernel", "conv_in", "conv_out")),
        (self.kernel_size, x.shape[-1], self.features), jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=(0, 1), keepdims=True))
    w = w / (EPS + norm / math.sqrt(fan_in)) / math.sqrt(fan_in) * gain
    p = self.kernel_size // 2
    return jax.lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (1,), [(p, p)],
                                        dimension_numbers=("NWC", "WIO", "NWC"))


class ResnetBlock1D(nn.Module):
  out_dim: int
  kernel_size: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = pixel_norm(x)
    h = MPConv1D(self.out_dim, self.kernel_size, self.dtype, name="conv1")(mp_silu(x))
    h = MPConv1D(self.out_dim, self.kernel_size, self.dtype, name="conv2")(mp_silu(h))
    if x.shape[-1] != self.out_dim:
      x = MPConv1D(self.out_dim, 1, self.dtype, name="nin_shortcut")(x)
    return mp_sum(x, h, 0.3)


class AttnBlock1D(nn.Module):
  num_heads: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, c = x.shape
    y = MPConv1D(3 * c, 1, self.dtype, name="qkv")(x)
    y = pixel_norm(y.reshape(b, t, self.num_heads, c // self.num_heads, 3), axis=3)
    h = kernels.attention(y[..., 0], y[..., 1], y[..., 2]).reshape(b, t, c)
    return mp_sum(x, MPConv1D(c, 1, self.dtype, name="proj_out")(h), 0.3)


class Downsample1D(nn.Module):
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = MPConv1D(c, 1, self.dtype, name="conv1")(x)
    t = x.shape[1] // 2
    x = x[:, :2 * t].reshape(x.shape[0], t, 2, c).mean(axis=2)
    return MPConv1D(c, 1, self.dtype, name="conv2")(x)


class Upsample1D(nn.Module):
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return MPConv1D(x.shape[-1], 3, self.dtype, name="conv")(jnp.repeat(x, 2, axis=1))


# ----------------------------------------------------------------------------- encoder / decoder
class _Mid(nn.Module):
  kernel_size: int
  num_heads: int
  dtype: Dtype

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    c = h.shape[-1]
    h = ResnetBlock1D(c, self.kernel_size, self.dtype, name="block_1")(h)
    h = AttnBlock1D(self.num_heads, self.dtype, name="attn_1")(h)
    return ResnetBlock1D(c, self.kernel_size, self.dtype, name="block_2")(h)


class _Level(nn.Module):
  """One resolution level: blocks (each + attention if `attn`, clamped), then down/upsampling."""
  out_dim: int
  num_blocks: int
  kernel_size: int
  attn: bool
  resample: str | None   # None, "downsample" or "upsample"
  clip_act: float
  num_heads: int
  dtype: Dtype

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for j in range(self.num_blocks):
      h = ResnetBlock1D(self.out_dim, self.kernel_size, self.dtype, name=f"block_{j}")(h)
      if self.attn:
        h = AttnBlock1D(self.num_heads, self.dtype, name=f"attn_{j}")(h)
      h = jnp.clip(h, -self.clip_act, self.clip_act)
    if self.resample == "downsample":
      h = Downsample1D(self.dtype, name="downsample")(h)
    elif self.resample == "upsample":
      h = Upsample1D(self.dtype, name="upsample")(h)
    return h


class Encoder1D(nn.Module):
  """mel (normalised) [B, T, data_dim] -> moments [B, T / 2^len(down_layers), 2 * embed_dim]."""
  config: MMAudioVAEConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    clip = lambda v: jnp.clip(v, -cfg.clip_act, cfg.clip_act)  # noqa: E731
    h = MPConv1D(cfg.hidden_dim, cfg.kernel_size, self.dtype, name="conv_in")(x)
    for i, mult in enumerate(cfg.ch_mult):
      h = _Level(cfg.hidden_dim * mult, cfg.num_res_blocks, cfg.kernel_size, i in cfg.attn_layers,
                 "downsample" if i in cfg.down_layers else None, cfg.clip_act, cfg.num_heads, self.dtype,
                 name=f"down_{i}")(h)
    h = clip(_Mid(cfg.kernel_size, cfg.num_heads, self.dtype, name="mid")(h))
    gain = self.param("learnable_gain", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()),
                      (), jnp.float32)
    return MPConv1D(2 * cfg.embed_dim, cfg.kernel_size, self.dtype, name="conv_out")(mp_silu(h), gain + 1)


class Decoder1D(nn.Module):
  """latents [B, T', embed_dim] -> mel (normalised) [B, T' * 2^len(down_layers), data_dim]."""
  config: MMAudioVAEConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    cfg = self.config
    clip = lambda v: jnp.clip(v, -cfg.clip_act, cfg.clip_act)  # noqa: E731
    up_layers = [i + 1 for i in cfg.down_layers]
    h = MPConv1D(cfg.hidden_dim * cfg.ch_mult[-1], cfg.kernel_size, self.dtype, name="conv_in")(z)
    h = clip(_Mid(3, cfg.num_heads, self.dtype, name="mid")(h))   # MMAudio's decoder blocks use k3
    for i in reversed(range(len(cfg.ch_mult))):
      h = _Level(cfg.hidden_dim * cfg.ch_mult[i], cfg.num_res_blocks + 1, 3, i in cfg.attn_layers,
                 "upsample" if i in up_layers else None, cfg.clip_act, cfg.num_heads, self.dtype,
                 name=f"up_{i}")(h)
    gain = self.param("learnable_gain", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()),
                      (), jnp.float32)
    return MPConv1D(cfg.data_dim, cfg.kernel_size, self.dtype, name="conv_out")(mp_silu(h), gain + 1)


class MMAudioVAE(nn.Module):
  """encode(mel [B, T, data_dim]) -> (mean, logvar) [B, T / 2, embed_dim]; decode(z) -> mel [B, T, data_dim].

  __call__(mel, rng=None) -> (reconstruction, mean, logvar); samples the posterior when rng is given,
  else decodes the mean. logvar is clamped to [-30, 20] (DiagonalGaussianDistribution)."""
  config: MMAudioVAEConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    self.encoder = Encoder1D(self.config, self.dtype)
    self.decoder = Decoder1D(self.config, self.dtype)

  def normalize(self, mel: jax.Array) -> jax.Array:
    mean, std = self.config.stats()
    return (mel - mean) / std

  def unnormalize(self, mel: jax.Array) -> jax.Array:
    mean, std = self.config.stats()
    return mel * std + mean

  def encode(self, mel: jax.Array, normalize: bool = True) -> tuple[jax.Array, jax.Array]:
    x = self.normalize(mel.astype(jnp.float32)) if normalize else mel
    moments = self.encoder(x).astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z: jax.Array, unnormalize: bool = True) -> jax.Array:
    out = self.decoder(z).astype(jnp.float32)
    return self.unnormalize(out) if unnormalize else out

  def __call__(self, mel: jax.Array, rng: jax.Array | None = None, normalize: bool = True,
               unnormalize: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    mean, logvar = self.encode(mel, normalize)
    z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    return self.decode(z, unnormalize), mean, logvar


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """Elementwise KL to N(0, 1) as MMAudio writes it: 0.5 * mean^2 + var - 1 - logvar."""
  return 0.5 * jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar


def init_params(model: MMAudioVAE, rng: jax.Array, frames: int = 8) -> dict:
  mel = jnp.zeros((1, frames, model.config.data_dim), jnp.float32)
  return nn.unbox(jax.jit(model.init)(rng, mel)["params"])


# ----------------------------------------------------------------------------- MMAudio's mel statistics
DATA_MEAN_80D = (
    -1.6058, -1.3676, -1.2520, -1.2453, -1.2078, -1.2224, -1.2419, -1.2439, -1.2922, -1.2927, -1.3170,
    -1.3543, -1.3401, -1.3836, -1.3907, -1.3912, -1.4313, -1.4152, -1.4527, -1.4728, -1.4568, -1.5101,
    -1.5051, -1.5172, -1.5623, -1.5373, -1.5746, -1.5687, -1.6032, -1.6131, -1.6081, -1.6331, -1.6489,
    -1.6489, -1.6700, -1.6738, -1.6953, -1.6969, -1.7048, -1.7280, -1.7361, -1.7495, -1.7658, -1.7814,
    -1.7889, -1.8064, -1.8221, -1.8377, -1.8417, -1.8643, -1.8857, -1.8929, -1.9173, -1.9379, -1.9531,
    -1.9673, -1.9824, -2.0042, -2.0215, -2.0436, -2.0766, -2.1064, -2.1418, -2.1855, -2.2319, -2.2767,
    -2.3161, -2.3572, -2.3954, -2.4282, -2.4659, -2.5072, -2.5552, -2.6074, -2.6584, -2.7107, -2.7634,
    -2.8266, -2.8981, -2.9673)

DATA_STD_80D = (
    1.0291, 1.0411, 1.0043, 0.9820, 0.9677, 0.9543, 0.9450, 0.9392, 0.9343, 0.9297, 0.9276, 0.9263, 0.9242,
    0.9254, 0.9232, 0.9281, 0.9263, 0.9315, 0.9274, 0.9247, 0.9277, 0.9199, 0.9188, 0.9194, 0.9160, 0.9161,
    0.9146, 0.9161, 0.9100, 0.9095, 0.9145, 0.9076, 0.9066, 0.9095, 0.9032, 0.9043, 0.9038, 0.9011, 0.9019,
    0.9010, 0.8984, 0.8983, 0.8986, 0.8961, 0.8962, 0.8978, 0.8962, 0.8973, 0.8993, 0.8976, 0.8995, 0.9016,
    0.8982, 0.8972, 0.8974, 0.8949, 0.8940, 0.8947, 0.8936, 0.8939, 0.8951, 0.8956, 0.9017, 0.9167, 0.9436,
    0.9690, 1.0003, 1.0225, 1.0381, 1.0491, 1.0545, 1.0604, 1.0761, 1.0929, 1.1089, 1.1196, 1.1176, 1.1156,
    1.1117, 1.1070)

DATA_MEAN_128D = (
    -3.3462, -2.6723, -2.4893, -2.3143, -2.2664, -2.3317, -2.1802, -2.4006, -2.2357, -2.4597, -2.3717,
    -2.4690, -2.5142, -2.4919, -2.6610, -2.5047, -2.7483, -2.5926, -2.7462, -2.7033, -2.7386, -2.8112,
    -2.7502, -2.9594, -2.7473, -3.0035, -2.8891, -2.9922, -2.9856, -3.0157, -3.1191, -2.9893, -3.1718,
    -3.0745, -3.1879, -3.2310, -3.1424, -3.2296, -3.2791, -3.2782, -3.2756, -3.3134, -3.3509, -3.3750,
    -3.3951, -3.3698, -3.4505, -3.4509, -3.5089, -3.4647, -3.5536, -3.5788, -3.5867, -3.6036, -3.6400,
    -3.6747, -3.7072, -3.7279, -3.7283, -3.7795, -3.8259, -3.8447, -3.8663, -3.9182, -3.9605, -3.9861,
    -4.0105, -4.0373, -4.0762, -4.1121, -4.1488, -4.1874, -4.2461, -4.3170, -4.3639, -4.4452, -4.5282,
    -4.6297, -4.7019, -4.7960, -4.8700, -4.9507, -5.0303, -5.0866, -5.1634, -5.2342, -5.3242, -5.4053,
    -5.4927, -5.5712, -5.6464, -5.7052, -5.7619, -5.8410, -5.9188, -6.0103, -6.0955, -6.1673, -6.2362,
    -6.3120, -6.3926, -6.4797, -6.5565, -6.6511, -6.8130, -6.9961, -7.1275, -7.2457, -7.3576, -7.4663,
    -7.6136, -7.7469, -7.8815, -8.0132, -8.1515, -8.3071, -8.4722, -8.7418, -9.3975, -9.6628, -9.7671,
    -9.8863, -9.9992, -10.0860, -10.1709, -10.5418, -11.2795, -11.3861)

DATA_STD_128D = (
    2.3804, 2.4368, 2.3772, 2.3145, 2.2803, 2.2510, 2.2316, 2.2083, 2.1996, 2.1835, 2.1769, 2.1659, 2.1631,
    2.1618, 2.1540, 2.1606, 2.1571, 2.1567, 2.1612, 2.1579, 2.1679, 2.1683, 2.1634, 2.1557, 2.1668, 2.1518,
    2.1415, 2.1449, 2.1406, 2.1350, 2.1313, 2.1415, 2.1281, 2.1352, 2.1219, 2.1182, 2.1327, 2.1195, 2.1137,
    2.1080, 2.1179, 2.1036, 2.1087, 2.1036, 2.1015, 2.1068, 2.0975, 2.0991, 2.0902, 2.1015, 2.0857, 2.0920,
    2.0893, 2.0897, 2.0910, 2.0881, 2.0925, 2.0873, 2.0960, 2.0900, 2.0957, 2.0958, 2.0978, 2.0936, 2.0886,
    2.0905, 2.0845, 2.0855, 2.0796, 2.0840, 2.0813, 2.0817, 2.0838, 2.0840, 2.0917, 2.1061, 2.1431, 2.1976,
    2.2482, 2.3055, 2.3700, 2.4088, 2.4372, 2.4609, 2.4731, 2.4847, 2.5072, 2.5451, 2.5772, 2.6147, 2.6529,
    2.6596, 2.6645, 2.6726, 2.6803, 2.6812, 2.6899, 2.6916, 2.6931, 2.6998, 2.7062, 2.7262, 2.7222, 2.7158,
    2.7041, 2.7485, 2.7491, 2.7451, 2.7485, 2.7233, 2.7297, 2.7233, 2.7145, 2.6958, 2.6788, 2.6439, 2.6007,
    2.4786, 2.2469, 2.1877, 2.1392, 2.0717, 2.0107, 1.9676, 1.9140, 1.7102, 0.9101, 0.7164)
