"""KL autoencoder (Stable Diffusion / SDXL image VAE, AudioLDM mel VAE, SD3/Flux-style), Flax Linen twin of
diffusers' `AutoencoderKL`.

Layout is channels last, 2-D:
  image  x [B, H, W, in_channels] (diffusers [B, C, H, W]);  latents z [B, H/s, W/s, latent_channels],
         s = 2 ** (len(block_out_channels) - 1)  (SD/SDXL: 3 ch, 4 blocks, s = 8, z 4)
  mel    x [B, T, n_mels, 1]  (diffusers/AudioLDM [B, 1, T, n_mels]) -> z [B, T/4, n_mels/4, 8]
         (AudioLDM: block_out_channels (128, 256, 512), s = 4, 64 mels -> 16)
H and W must be multiples of s (diffusers' stride-2 convs would silently drop a row otherwise).

  encode(x)  -> (mean, logvar), each [B, H/s, W/s, z] float32: the DiagonalGaussian moments, logvar clamped to
                [-30, 20] as diffusers' DiagonalGaussianDistribution does
  decode(z)  -> x [B, H, W, out_channels] float32 (not clamped)
  __call__(x, sample_posterior=False, rng=None) -> decode(mean, or mean + std * N(0, 1) drawn with `rng`)
  to_latent(mean, config) / from_latent(latent, config): what the diffusion model sees, (z - shift) * scaling
                (or (z - latents_mean) * scaling / latents_std when the config has them), and back.

Structure (diffusers models/autoencoders/vae.py Encoder/Decoder, unets/unet_2d_blocks.py, resnet.py):
  Encoder  conv_in 3x3 -> per level i: layers_per_block ResnetBlock2D (block_out_channels[i]) + Downsample2D
           (pad right/bottom by 1, 3x3 stride 2) except the last level -> mid block (resnet, single-head
           self-attention over H*W unless mid_block_add_attention=False, resnet) -> GroupNorm -> SiLU ->
           conv_out 3x3 to 2 z channels;  quant_conv 1x1 (use_quant_conv)
  Decoder  post_quant_conv 1x1 (use_post_quant_conv) -> conv_in 3x3 -> mid block -> per level (reversed
           channels): layers_per_block + 1 resnets + Upsample2D (nearest x2, 3x3 conv) except the last ->
           GroupNorm -> SiLU -> conv_out 3x3
  ResnetBlock2D: GroupNorm-act-conv3x3-GroupNorm-act-conv3x3 + (1x1 conv_shortcut when channels change).
ResnetBlock2D (no time embedding), Downsample2D, Upsample2D are shared.nn.resnet2d's, GroupNorm shared.nn.norms';
GroupNorm eps 1e-6, computed in float32. Resnets use `act_fn`; the encoder's/decoder's conv_act is always SiLU
(as in diffusers). Dropout is 0 in every released VAE and is not modelled.

Precision: params float32; compute in `config.dtype` ("float32", "bfloat16", "float16"); norms and softmax in
float32. `force_upcast` mirrors diffusers' pipelines (they run an fp16 VAE with force_upcast in float32): with
dtype "float16" and force_upcast the module computes in float32 (`config.compute_dtype`); bfloat16 is kept.
Parameter names mirror the diffusers module tree (`encoder/down_blocks_1/resnets_0/conv1/kernel` <->
`encoder.down_blocks.1.resnets.0.conv1.weight`): see shared/weights/autoencoder_kl_family.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared import kernels
from shared.errors import ConfigError
from shared.nn.linear import Dense
from shared.nn.norms import GroupNorm
from shared.nn.resnet2d import ACTIVATIONS, Downsample2D, ResnetBlock2D, Upsample2D, conv2d

Dtype = Any

DOWN_BLOCK_TYPES = ("DownEncoderBlock2D",)
UP_BLOCK_TYPES = ("UpDecoderBlock2D",)
DTYPES = ("float32", "bfloat16", "float16")
NORM_EPS = 1e-6
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig:
  """Field names and defaults are diffusers' AutoencoderKL config.json keys, plus `dtype` (compute dtype),
  `attention_implementation` (shared.kernels.attention) and `hf_extra` (config.json keys we do not model,
  as (key, JSON text) pairs, written back on export)."""
  in_channels: int = 3
  out_channels: int = 3
  down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
  up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
  block_out_channels: tuple[int, ...] = (64,)
  layers_per_block: int = 1
  act_fn: str = "silu"
  latent_channels: int = 4
  norm_num_groups: int = 32
  sample_size: int | tuple[int, ...] = 32
  scaling_factor: float = 0.18215
  shift_factor: float | None = None
  latents_mean: tuple[float, ...] | None = None
  latents_std: tuple[float, ...] | None = None
  force_upcast: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  dtype: str = "float32"
  attention_implementation: str = "auto"
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    n = len(self.block_out_channels)
    if n == 0:
      raise ConfigError("AutoencoderKL block_out_channels is empty; expected at least one level")
    for key, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
      types = tuple(getattr(self, key))
      bad = [t for t in types if t not in allowed]
      if bad:
        raise ConfigError(f"AutoencoderKL {key} {bad} are not supported; expected {allowed[0]!r} for every level")
      if len(types) != n:
        raise ConfigError(f"AutoencoderKL {key} has {len(types)} entries; expected one per block_out_channels "
                          f"entry ({n})")
    if self.act_fn not in ACTIVATIONS:
      raise ConfigError(f"AutoencoderKL act_fn {self.act_fn!r} is not supported; expected one of "
                        f"{sorted(ACTIVATIONS)}")
    bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
    if bad:
      raise ConfigError(f"AutoencoderKL norm_num_groups {self.norm_num_groups} does not divide block_out_channels "
                        f"{list(bad)}")
    if self.layers_per_block < 1:
      raise ConfigError(f"AutoencoderKL layers_per_block {self.layers_per_block}; expected >= 1")
    if self.dtype not in DTYPES:
      raise ConfigError(f"AutoencoderKL dtype {self.dtype!r}; expected one of {DTYPES}")
    for key in ("latents_mean", "latents_std"):
      v = getattr(self, key)
      if v is not None and len(v) != self.latent_channels:
        raise ConfigError(f"AutoencoderKL {key} has {len(v)} values; expected latent_channels="
                          f"{self.latent_channels}")

  def replace(self, **kw) -> "AutoencoderKLConfig":
    return dataclasses.replace(self, **kw)

  @property
  def downsample_factor(self) -> int:
    """Spatial stride s of the latents (2 ** (levels - 1)): 8 for SD/SDXL, 4 for AudioLDM."""
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def compute_dtype(self):
    """`dtype`, except float16 with force_upcast -> float32 (what diffusers' pipelines do)."""
    if self.dtype == "float16" and self.force_upcast:
      return jnp.dtype(jnp.float32)
    return jnp.dtype(self.dtype)


def sdxl_config(**kw) -> AutoencoderKLConfig:
  """SDXL's VAE (stabilityai/stable-diffusion-xl-base-1.0/vae): 83.7M params, 8x down, z 4."""
  return AutoencoderKLConfig(**{**dict(
      block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=1024,
      scaling_factor=0.13025, force_upcast=True, down_block_types=DOWN_BLOCK_TYPES * 4,
      up_block_types=UP_BLOCK_TYPES * 4), **kw})


def audioldm_config(**kw) -> AutoencoderKLConfig:
  """AudioLDM's mel VAE (cvssp/audioldm-*/vae): 55.4M params, 1 channel, 4x down, z 8. The released
  scaling_factor is stored in each checkpoint's config.json (the value here is only a placeholder)."""
  return AutoencoderKLConfig(**{**dict(
      in_channels=1, out_channels=1, block_out_channels=(128, 256, 512), layers_per_block=2, latent_channels=8,
      sample_size=512, down_block_types=DOWN_BLOCK_TYPES * 3, up_block_types=UP_BLOCK_TYPES * 3), **kw})


# ----------------------------------------------------------------------------------------------
# Pieces (x [B, H, W, C] everywhere)


def _resnet(out_channels: int, groups: int, act_fn: str, dtype, name: str) -> ResnetBlock2D:
  """diffusers ResnetBlock2D without time embedding (temb_channels=None), GroupNorm eps 1e-6."""
  return ResnetBlock2D(out_channels, groups, NORM_EPS, act_fn, dtype=dtype, name=name)


class SpatialSelfAttention(nn.Module):
  """diffusers' mid-block Attention (one head of width C over the H*W positions, GroupNorm first, residual).
  [B, H, W, C] -> same. Linear layers to_q / to_k / to_v / to_out_0 (kernel [C, C], bias [C])."""
  groups: int
  dtype: Dtype = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = GroupNorm(self.groups, NORM_EPS, self.dtype, name="group_norm")(x).reshape(b, h * w, c)
    dense = lambda name: Dense(c, use_bias=True, kernel_axes=("conv_in", "conv_out"), dtype=self.dtype, name=name)
    q, k, v = (dense(n)(y).reshape(b, h * w, 1, c) for n in ("to_q", "to_k", "to_v"))
    o = kernels.attention(q, k, v, implementation=self.implementation).reshape(b, h * w, c)
    return dense("to_out_0")(o).reshape(b, h, w, c) + x


class MidBlock(nn.Module):
  """UNetMidBlock2D: resnet, (attention), resnet at constant width. [B, H, W, C] -> same."""
  groups: int
  act_fn: str
  add_attention: bool
  dtype: Dtype = jnp.float32
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = _resnet(c, self.groups, self.act_fn, self.dtype, "resnets_0")(x)
    if self.add_attention:
      x = SpatialSelfAttention(self.groups, self.dtype, self.implementation, name="attentions_0")(x)
    return _resnet(c, self.groups, self.act_fn, self.dtype, "resnets_1")(x)


class DownEncoderBlock2D(nn.Module):
  out_channels: int
  num_layers: int
  groups: int
  act_fn: str
  add_downsample: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for j in range(self.num_layers):
      x = _resnet(self.out_channels, self.groups, self.act_fn, self.dtype, f"resnets_{j}")(x)
    if self.add_downsample:
      x = Downsample2D(padding=0, dtype=self.dtype, name="downsamplers_0")(x)   # diffusers Encoder: padding=0
    return x


class UpDecoderBlock2D(nn.Module):
  out_channels: int
  num_layers: int
  groups: int
  act_fn: str
  add_upsample: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for j in range(self.num_layers):
      x = _resnet(self.out_channels, self.groups, self.act_fn, self.dtype, f"resnets_{j}")(x)
    if self.add_upsample:
      x = Upsample2D(dtype=self.dtype, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  """x [B, H, W, in_channels] -> [B, H/s, W/s, 2 * latent_channels] (before quant_conv)."""
  config: AutoencoderKLConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dt, g = self.config, self.config.compute_dtype, self.config.norm_num_groups
    chans = tuple(cfg.block_out_channels)
    x = conv2d(chans[0], 3, dt, name="conv_in")(x.astype(dt))
    for i, c in enumerate(chans):
      x = DownEncoderBlock2D(c, cfg.layers_per_block, g, cfg.act_fn, i != len(chans) - 1, dt,
                             name=f"down_blocks_{i}")(x)
    x = MidBlock(g, cfg.act_fn, cfg.mid_block_add_attention, dt, cfg.attention_implementation, name="mid_block")(x)
    x = nn.silu(GroupNorm(g, NORM_EPS, dt, name="conv_norm_out")(x))
    return conv2d(2 * cfg.latent_channels, 3, dt, name="conv_out")(x)


class Decoder(nn.Module):
  """z [B, h, w, latent_channels] (after post_quant_conv) -> [B, h*s, w*s, out_channels]."""
  config: AutoencoderKLConfig

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    cfg, dt, g = self.config, self.config.compute_dtype, self.config.norm_num_groups
    chans = tuple(cfg.block_out_channels)[::-1]
    x = conv2d(chans[0], 3, dt, name="conv_in")(z.astype(dt))
    x = MidBlock(g, cfg.act_fn, cfg.mid_block_add_attention, dt, cfg.attention_implementation, name="mid_block")(x)
    for i, c in enumerate(chans):
      x = UpDecoderBlock2D(c, cfg.layers_per_block + 1, g, cfg.act_fn, i != len(chans) - 1, dt,
                           name=f"up_blocks_{i}")(x)
    x = nn.silu(GroupNorm(g, NORM_EPS, dt, name="conv_norm_out")(x))
    return conv2d(cfg.out_channels, 3, dt, name="conv_out")(x)


class AutoencoderKL(nn.Module):
  """See the module docstring. Apply with {"params": params}; methods encode / decode / __call__."""
  config: AutoencoderKLConfig

  def setup(self):
    cfg, dt = self.config, self.config.compute_dtype
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)
    self.quant_conv = conv2d(2 * cfg.latent_channels, 1, dt) if cfg.use_quant_conv else None
    self.post_quant_conv = conv2d(cfg.latent_channels, 1, dt) if cfg.use_post_quant_conv else None

  def _check(self, x: jax.Array, what: str, channels: int, factor: int) -> None:
    if x.ndim != 4 or x.shape[-1] != channels:
      raise ConfigError(f"AutoencoderKL.{what}: input shape {tuple(x.shape)}; expected [B, H, W, {channels}] "
                        "(channels last)")
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ConfigError(f"AutoencoderKL.{what}: height/width {x.shape[1]}x{x.shape[2]} must be multiples of "
                        f"{factor} (the latent stride)")

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B, H, W, in_channels] -> (mean, logvar), each [B, H/s, W/s, latent_channels] float32."""
    self._check(x, "encode", self.config.in_channels, self.config.downsample_factor)
    h = self.encoder(x)
    if self.quant_conv is not None:
      h = self.quant_conv(h)
    mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: jax.Array) -> jax.Array:
    """z [B, h, w, latent_channels] (unscaled: see from_latent) -> x [B, h*s, w*s, out_channels] float32."""
    self._check(z, "decode", self.config.latent_channels, 1)
    z = z.astype(self.config.compute_dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x: jax.Array, sample_posterior: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """x [B, H, W, in_channels] -> reconstruction [B, H, W, out_channels] float32, decoded from the posterior
    mean (diffusers' mode()) or, with sample_posterior, from mean + exp(logvar / 2) * N(0, 1) drawn with rng."""
    mean, logvar = self.encode(x)
    z = mean
    if sample_posterior:
      if rng is None:
        raise ConfigError("AutoencoderKL(sample_posterior=True) needs rng (a jax.random key)")
      z = sample(rng, mean, logvar)
    return self.decode(z)


# ----------------------------------------------------------------------------------------------
# Helpers


def sample(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """A draw from the posterior N(mean, exp(logvar)), shapes [B, h, w, z]."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def _stats(config: AutoencoderKLConfig, dtype):
  if config.latents_mean is not None and config.latents_std is not None:
    return jnp.asarray(config.latents_mean, dtype), jnp.asarray(config.latents_std, dtype)
  return jnp.asarray(config.shift_factor or 0.0, dtype), jnp.asarray(1.0, dtype)


def to_latent(z: jax.Array, config: AutoencoderKLConfig) -> jax.Array:
  """VAE latents [..., z] -> what the diffusion model sees: (z - shift_factor) * scaling_factor (shift 0 when
  None); with both latents_mean and latents_std in the config (SDXL-style pipelines), (z - mean) * scaling / std."""
  mean, std = _stats(config, z.dtype)
  return (z - mean) * jnp.asarray(config.scaling_factor, z.dtype) / std


def from_latent(latent: jax.Array, config: AutoencoderKLConfig) -> jax.Array:
  """Inverse of to_latent: latent / scaling_factor + shift_factor (or latent * std / scaling + mean)."""
  mean, std = _stats(config, latent.dtype)
  return latent * std / jnp.asarray(config.scaling_factor, latent.dtype) + mean


def example_input(config: AutoencoderKLConfig, batch: int = 1) -> jax.Array:
  """The smallest input [batch, s, s, in_channels] (zeros): enough to create every parameter."""
  s = config.downsample_factor
  return jnp.zeros((batch, s, s, config.in_channels), jnp.float32)


def init_params(model: AutoencoderKL, rng: jax.Array) -> dict:
  """Float32 parameters (unboxed) for `model`."""
  return nn.meta.unbox(model.init(rng, example_input(model.config)))["params"]
