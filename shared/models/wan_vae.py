"""Wan video VAE (Wan2.1 z16 and Wan2.2 z48), Flax Linen twin of diffusers' `AutoencoderKLWan`.

Layout is channels last: video [B, T, H, W, C] in [-1, 1], latents [B, t, h, w, z] with
t = 1 + (T - 1) / 4. Parameter names mirror the diffusers module tree (`down_blocks_3/resnets_0/
conv1/kernel` <-> `down_blocks.3.resnets.0.conv1.weight`), see shared/weights/wan_vae_family.py.

Time is causal everywhere: the first frame is encoded alone, then every 4 frames give one latent
frame; the decoder turns the first latent frame into 1 frame and each next one into 4. Two modes
give the same numbers:
  * whole: one call over all frames (`stream=False`);
  * streaming: the first frame/latent (`first=True`), then fixed-size chunks, each causal conv
    keeping its last input frames in the "cache" variable collection (what diffusers'
    `feat_cache` holds). `encode`/`decode` below run the chunks with `lax.scan`, so a long video
    needs the memory of one chunk plus the output.
Dropout is not applied (the released VAEs use 0.0).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.kernels import attention
from shared.nn.conv import CausalConv3d, Conv

Dtype = Any
CACHE_T = 2  # frames each causal 3x3x3 conv keeps from the previous chunk

WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
                      0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
                     1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig:
  """Field names follow diffusers' config.json (`temperal_downsample` spelled correctly here)."""
  base_dim: int = 96
  decoder_base_dim: int | None = None
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_scales: tuple[float, ...] = ()
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  dropout: float = 0.0
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  is_residual: bool = False
  in_channels: int = 3
  out_channels: int = 3
  patch_size: int | None = None
  scale_factor_temporal: int = 4
  scale_factor_spatial: int = 8

  def __post_init__(self):
    if len(self.temporal_downsample) != len(self.dim_mult) - 1:
      raise ConfigError(f"temporal_downsample has {len(self.temporal_downsample)} entries; expected "
                        f"len(dim_mult) - 1 = {len(self.dim_mult) - 1}")
    for name in ("latents_mean", "latents_std"):
      if len(getattr(self, name)) != self.z_dim:
        raise ConfigError(f"{name} has {len(getattr(self, name))} values; expected z_dim = {self.z_dim}")

  @property
  def temporal_stride(self) -> int:
    return 2 ** sum(bool(t) for t in self.temporal_downsample)

  @property
  def spatial_stride(self) -> int:
    return 2 ** (len(self.dim_mult) - 1) * (self.patch_size or 1)


def wan21_config() -> WanVAEConfig:
  """Wan2.1 VAE: z 16, stride 4x8x8, base_dim 96."""
  return WanVAEConfig()


def wan22_config() -> WanVAEConfig:
  """Wan2.2 (TI2V-5B) VAE: z 48, stride 4x16x16, base 160 / decoder 256, 2x2 patchify, residual paths."""
  return WanVAEConfig(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                      out_channels=12, patch_size=2, scale_factor_spatial=16,
                      latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD)


# ----------------------------------------------------------------------------------------------
# Pieces


def _cached(mdl: nn.Module, conv: nn.Module, x: jax.Array, name: str, stream: bool) -> jax.Array:
  """Runs causal `conv` on x [B, T, H, W, C]; streaming, it sees the last CACHE_T frames before x."""
  if not stream:
    return conv(x)
  var = mdl.variable("cache", name, lambda: jnp.zeros((x.shape[0], CACHE_T) + x.shape[2:], x.dtype))
  y = conv(x, cache=var.value)
  var.value = jnp.concatenate([var.value, x], axis=1)[:, -CACHE_T:]
  return y


class RMSNorm(nn.Module):
  """x / ||x||_channels * sqrt(C) * gamma, in float32 (diffusers' WanRMS_norm, bias-free)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    gamma = self.param("gamma", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                       (c,), jnp.float32)
    xf = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
    return (xf / jnp.maximum(norm, 1e-12) * (c ** 0.5) * gamma).astype(self.dtype)


class ResidualBlock(nn.Module):
  """RMSNorm-SiLU-CausalConv x2 plus a (1x1x1 conv) shortcut. [B,T,H,W,Cin] -> [B,T,H,W,out_dim]."""
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False) -> jax.Array:
    h = x
    if x.shape[-1] != self.out_dim:
      h = CausalConv3d(self.out_dim, (1, 1, 1), dtype=self.dtype, name="conv_shortcut")(x)
    y = nn.silu(RMSNorm(self.dtype, name="norm1")(x))
    y = _cached(self, CausalConv3d(self.out_dim, dtype=self.dtype, name="conv1"), y, "conv1_cache", stream)
    y = nn.silu(RMSNorm(self.dtype, name="norm2")(y))
    y = _cached(self, CausalConv3d(self.out_dim, dtype=self.dtype, name="conv2"), y, "conv2_cache", stream)
    return y + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the H*W positions of each frame. [B,T,H,W,C] -> same."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    y = RMSNorm(self.dtype, name="norm")(x)
    qkv = Conv(3 * c, (1, 1), dtype=self.dtype, name="to_qkv")(y).reshape(b * t, h * w, 1, 3 * c)
    q, k, v = jnp.split(qkv, 3, axis=-1)
    o = attention(q, k, v).reshape(b, t, h, w, c)
    return Conv(c, (1, 1), dtype=self.dtype, name="proj")(o) + x


class MidBlock(nn.Module):
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False) -> jax.Array:
    c = x.shape[-1]
    x = ResidualBlock(c, self.dtype, name="resnets_0")(x, stream)
    x = AttentionBlock(self.dtype, name="attentions_0")(x)
    return ResidualBlock(c, self.dtype, name="resnets_1")(x, stream)


def _interleave_time(r: jax.Array) -> jax.Array:
  """[B, t, H, W, 2C] (two frames stacked in channels) -> [B, 2t, H, W, C]."""
  b, t, h, w, c2 = r.shape
  r = r.reshape(b, t, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
  return r.reshape(b, 2 * t, h, w, c2 // 2)


class Resample(nn.Module):
  """Spatial x2 up/down-sampling, with a causal temporal x2 for the "3d" modes. [B,T,H,W,C] in."""
  mode: str  # upsample2d | upsample3d | downsample2d | downsample3d
  upsample_out_dim: int | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    c = x.shape[-1]
    if self.mode == "upsample3d":
      # The first frame passes through; every later frame becomes two (causal conv over frames 1..).
      time_conv = CausalConv3d(2 * c, (3, 1, 1), dtype=self.dtype, name="time_conv")
      if not stream:
        if x.shape[1] > 1:
          x = jnp.concatenate([x[:, :1], _interleave_time(time_conv(x[:, 1:]))], axis=1)
      else:
        var = self.variable("cache", "time_cache",
                            lambda: jnp.zeros((x.shape[0], CACHE_T) + x.shape[2:], x.dtype))
        if not first:
          r = time_conv(x, cache=var.value)
          var.value = jnp.concatenate([var.value, x], axis=1)[:, -CACHE_T:]
          x = _interleave_time(r)
    if self.mode.startswith("upsample"):
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
      out = self.upsample_out_dim or c // 2
      return Conv(out, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="resample_1")(x)
    x = Conv(c, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), dtype=self.dtype, name="resample_1")(x)
    if self.mode == "downsample3d":
      # Output frame 0 is input frame 0; frame k >= 1 sees input frames 2k-2, 2k-1, 2k.
      time_conv = CausalConv3d(c, (3, 1, 1), strides=(2, 1, 1), time_padding=0, dtype=self.dtype,
                               name="time_conv")
      if not stream:
        if x.shape[1] >= 3:
          x = jnp.concatenate([x[:, :1], time_conv(x)], axis=1)
        else:
          x = x[:, :1]
      else:
        var = self.variable("cache", "time_cache", lambda: x[:, -1:])
        if not first:
          y = time_conv(x, cache=var.value)
          var.value = x[:, -1:]
          x = y
        else:
          var.value = x[:, -1:]
    return x


def avg_down(x: jax.Array, out_dim: int, factor_t: int, factor_s: int) -> jax.Array:
  """diffusers' AvgDown3D: space/time-to-channel then group mean. Front-pads T to a multiple."""
  pad_t = (factor_t - x.shape[1] % factor_t) % factor_t
  x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
  b, t, h, w, c = x.shape
  x = x.reshape(b, t // factor_t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # [b, t', h', w', c, ft, fh, fw]
  x = x.reshape(b, t // factor_t, h // factor_s, w // factor_s, out_dim, -1)
  return jnp.mean(x, axis=-1)


def dup_up(x: jax.Array, out_dim: int, factor_t: int, factor_s: int, drop_first: bool) -> jax.Array:
  """diffusers' DupUp3D: repeat channels, channel-to-space/time. The first chunk drops factor_t-1 frames."""
  b, t, h, w, c = x.shape
  factor = factor_t * factor_s * factor_s
  x = jnp.repeat(x, out_dim * factor // c, axis=-1)
  x = x.reshape(b, t, h, w, out_dim, factor_t, factor_s, factor_s)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * factor_t, h * factor_s, w * factor_s, out_dim)
  return x[:, factor_t - 1:] if drop_first else x


class ResidualDownBlock(nn.Module):
  """Wan2.2 encoder stage: resnets + downsampler, plus a parameter-free AvgDown3D shortcut."""
  out_dim: int
  num_res_blocks: int
  temporal: bool
  down: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    shortcut = avg_down(x, self.out_dim, 2 if self.temporal else 1, 2 if self.down else 1)
    for j in range(self.num_res_blocks):
      x = ResidualBlock(self.out_dim, self.dtype, name=f"resnets_{j}")(x, stream)
    if self.down:
      mode = "downsample3d" if self.temporal else "downsample2d"
      x = Resample(mode, dtype=self.dtype, name="downsampler")(x, stream, first)
    return x + shortcut.astype(x.dtype)


class UpBlock(nn.Module):
  """Decoder stage: num_res_blocks + 1 resnets, then an upsampler (Wan2.2 adds a DupUp3D shortcut)."""
  out_dim: int
  num_res_blocks: int
  mode: str | None
  residual: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    x_in = x
    for j in range(self.num_res_blocks + 1):
      x = ResidualBlock(self.out_dim, self.dtype, name=f"resnets_{j}")(x, stream)
    if self.mode is None:
      return x
    if not self.residual:  # Wan2.1: halves the channels, stored as `upsamplers.0`
      return Resample(self.mode, dtype=self.dtype, name="upsamplers_0")(x, stream, first)
    x = Resample(self.mode, upsample_out_dim=self.out_dim, dtype=self.dtype, name="upsampler")(x, stream, first)
    factor_t = 2 if self.mode == "upsample3d" else 1
    return x + dup_up(x_in, self.out_dim, factor_t, 2, drop_first=first or not stream).astype(x.dtype)


class Encoder(nn.Module):
  """x [B, T, H, W, in_channels] -> [B, 1 + (T-1)/stride_t, H/s, W/s, z_out]."""
  config: WanVAEConfig
  z_out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    cfg, dt = self.config, self.dtype
    dims = [cfg.base_dim * u for u in (1,) + tuple(cfg.dim_mult)]
    last = len(cfg.dim_mult) - 1
    x = _cached(self, CausalConv3d(dims[0], dtype=dt, name="conv_in"), x, "conv_in_cache", stream)
    k, scale = 0, 1.0
    for i, out_dim in enumerate(dims[1:]):
      temporal = bool(cfg.temporal_downsample[i]) if i != last else False
      if cfg.is_residual:
        x = ResidualDownBlock(out_dim, cfg.num_res_blocks, temporal, i != last, dt,
                              name=f"down_blocks_{i}")(x, stream, first)
        continue
      for _ in range(cfg.num_res_blocks):
        x = ResidualBlock(out_dim, dt, name=f"down_blocks_{k}")(x, stream)
        k += 1
        if scale in cfg.attn_scales:
          x = AttentionBlock(dt, name=f"down_blocks_{k}")(x)
          k += 1
      if i != last:
        mode = "downsample3d" if temporal else "downsample2d"
        x = Resample(mode, dtype=dt, name=f"down_blocks_{k}")(x, stream, first)
        k += 1
        scale /= 2.0
    x = MidBlock(dt, name="mid_block")(x, stream)
    x = nn.silu(RMSNorm(dt, name="norm_out")(x))
    return _cached(self, CausalConv3d(self.z_out, dtype=dt, name="conv_out"), x, "conv_out_cache", stream)


class Decoder(nn.Module):
  """z [B, t, h, w, z_dim] -> [B, 1 + (t-1)*stride_t, h*s, w*s, out_channels]."""
  config: WanVAEConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    cfg, dt = self.config, self.dtype
    base = cfg.decoder_base_dim or cfg.base_dim
    mult = tuple(cfg.dim_mult)
    dims = [base * u for u in (mult[-1],) + mult[::-1]]
    temporal_up = tuple(cfg.temporal_downsample)[::-1]
    x = _cached(self, CausalConv3d(dims[0], dtype=dt, name="conv_in"), x, "conv_in_cache", stream)
    x = MidBlock(dt, name="mid_block")(x, stream)
    for i, out_dim in enumerate(dims[1:]):
      mode = None
      if i != len(mult) - 1:
        mode = "upsample3d" if temporal_up[i] else "upsample2d"
      x = UpBlock(out_dim, cfg.num_res_blocks, mode, cfg.is_residual, dt, name=f"up_blocks_{i}")(x, stream, first)
    x = nn.silu(RMSNorm(dt, name="norm_out")(x))
    return _cached(self, CausalConv3d(cfg.out_channels, dtype=dt, name="conv_out"), x, "conv_out_cache", stream)


class AutoencoderKLWan(nn.Module):
  """The VAE on patchified frames; use `encode`/`decode` below for videos (patchify, chunks, clamp)."""
  config: WanVAEConfig
  dtype: Dtype = jnp.float32

  def setup(self):
    z = self.config.z_dim
    self.encoder = Encoder(self.config, 2 * z, self.dtype)
    self.quant_conv = CausalConv3d(2 * z, (1, 1, 1), dtype=self.dtype)
    self.post_quant_conv = CausalConv3d(z, (1, 1, 1), dtype=self.dtype)
    self.decoder = Decoder(self.config, self.dtype)

  def encode_frames(self, x: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    """[B, T, H', W', in_channels] -> moments [B, t, h, w, 2 z] (mean, then log-variance)."""
    return self.quant_conv(self.encoder(x, stream, first))

  def decode_frames(self, z: jax.Array, stream: bool = False, first: bool = False) -> jax.Array:
    """[B, t, h, w, z] -> [B, T, H', W', out_channels] (not clamped, not unpatchified)."""
    return self.decoder(self.post_quant_conv(z), stream, first)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Reconstruction from the posterior mean (used to create every parameter)."""
    return self.decode_frames(self.encode_frames(x)[..., :self.config.z_dim])


# ----------------------------------------------------------------------------------------------
# Videos in, videos out


def patchify(x: jax.Array, p: int | None) -> jax.Array:
  """[B, T, H, W, C] -> [B, T, H/p, W/p, C*p*p], channel order (c, pw, ph) as diffusers."""
  if not p or p == 1:
    return x
  b, t, h, w, c = x.shape
  if h % p or w % p:
    raise ConfigError(f"video height/width {h}x{w} must be divisible by patch_size {p}")
  x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
  return x.reshape(b, t, h // p, w // p, c * p * p)


def unpatchify(x: jax.Array, p: int | None) -> jax.Array:
  """Inverse of `patchify`: [B, T, h, w, C*p*p] -> [B, T, h*p, w*p, C]."""
  if not p or p == 1:
    return x
  b, t, h, w, cp = x.shape
  x = x.reshape(b, t, h, w, cp // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
  return x.reshape(b, t, h * p, w * p, cp // (p * p))


def init_params(model: AutoencoderKLWan, rng: jax.Array) -> dict:
  """Float32 parameters (unboxed) for `model`, created with a minimal 5-frame input."""
  cfg = model.config
  s = 2 ** (len(cfg.dim_mult) - 1)
  x = jnp.zeros((1, 1 + cfg.temporal_stride, s, s, cfg.in_channels), jnp.float32)
  return nn.meta.unbox(model.init(rng, x))["params"]


def _run_chunked(model, params, x, method, first_len: int, chunk: int) -> jax.Array:
  """x[:, :first_len] with first=True, then chunks of `chunk` frames under lax.scan, cache carried."""
  def apply(cache, xc, first):
    variables = {"params": params} if cache is None else {"params": params, "cache": cache}
    y, state = model.apply(variables, xc, stream=True, first=first, method=method, mutable=["cache"])
    return y, state["cache"]

  y, cache = apply(None, x[:, :first_len], True)
  outs = [y]
  rest = x[:, first_len:]
  b, n = rest.shape[0], rest.shape[1] // chunk
  if n:
    xs = rest[:, :n * chunk].reshape((b, n, chunk) + rest.shape[2:]).swapaxes(0, 1)
    def step(c, xc):
      yc, c = apply(c, xc, False)
      return c, yc
    cache, ys = jax.lax.scan(step, cache, xs)
    outs.append(ys.swapaxes(0, 1).reshape((b, -1) + ys.shape[3:]))
  if rest.shape[1] > n * chunk:
    outs.append(apply(cache, rest[:, n * chunk:], False)[0])
  return jnp.concatenate(outs, axis=1)


def encode(model: AutoencoderKLWan, params, video: jax.Array, *, chunk: int | None = 4):
  """video [B, T, H, W, in_channels/p^2] in [-1, 1] -> (mean, logvar), each [B, t, H/s, W/s, z].

  Uses the first 1 + 4k frames (as diffusers). `chunk` frames per step after the first frame
  (a multiple of the temporal stride; diffusers uses 4); None encodes all frames at once.
  """
  cfg = model.config
  st = cfg.temporal_stride
  x = patchify(video, cfg.patch_size)
  x = x[:, :1 + st * ((x.shape[1] - 1) // st)]
  if chunk is None:
    h = model.apply({"params": params}, x, method=AutoencoderKLWan.encode_frames)
  else:
    if chunk <= 0 or chunk % st:
      raise ConfigError(f"encode chunk={chunk}: expected a positive multiple of the temporal stride {st}")
    h = _run_chunked(model, params, x, AutoencoderKLWan.encode_frames, 1, chunk)
  mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
  return mean, jnp.clip(logvar, -30.0, 20.0)


def decode(model: AutoencoderKLWan, params, latents: jax.Array, *, chunk: int | None = 1,
           clamp: bool = True) -> jax.Array:
  """latents [B, t, h, w, z] -> video [B, 1 + (t-1)*4, h*s, w*s, C] in [-1, 1].

  `chunk` latent frames per step after the first (diffusers uses 1); None decodes all at once.
  """
  if chunk is None:
    y = model.apply({"params": params}, latents, method=AutoencoderKLWan.decode_frames)
  else:
    if chunk <= 0:
      raise ConfigError(f"decode chunk={chunk}: expected a positive number of latent frames")
    y = _run_chunked(model, params, latents, AutoencoderKLWan.decode_frames, 1, chunk)
  y = unpatchify(y.astype(jnp.float32), model.config.patch_size)
  return jnp.clip(y, -1.0, 1.0) if clamp else y


def sample_posterior(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def normalize_latents(mean: jax.Array, config: WanVAEConfig) -> jax.Array:
  """(mu - latents_mean) / latents_std over the channel axis: what the diffusion model sees."""
  return (mean - jnp.asarray(config.latents_mean, mean.dtype)) / jnp.asarray(config.latents_std, mean.dtype)


def denormalize_latents(z: jax.Array, config: WanVAEConfig) -> jax.Array:
  return z * jnp.asarray(config.latents_std, z.dtype) + jnp.asarray(config.latents_mean, z.dtype)
