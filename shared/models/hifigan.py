"""HiFi-GAN vocoder (transformers `SpeechT5HifiGan`, AudioLDM's vocoder), channels last:
log-mel [B, T, model_in_dim] -> waveform [B, T'], T' = config.num_samples(T): T * prod(upsample_rates) when
every upsample kernel k_i and rate u_i have k_i - u_i even, a few samples more otherwise. AudioLDM's vocoder
(kernels [16,16,8,4,4], rates [5,4,2,2,2]) has 16 - 5 odd: its first stage gives 5T + 1 frames, so
T' = 160 T + 32 (transformers returns that; diffusers' AudioLDMPipeline crops to the requested length).
`crop=True` cuts the waveform to T * prod(upsample_rates) samples, the hop-aligned length.

Structure (transformers models/speecht5/modeling_speecht5.py, SpeechT5HifiGan + HifiGanResidualBlock):

  x = (mel - mean) / scale                        only when normalize_before (mean/scale: checkpoint buffers)
  x = conv_pre(x)                                 Conv1d k7 pad 3, model_in_dim -> C
  per stage i:  x = leaky_relu(x, slope)
                x = upsampler_i(x)                ConvTranspose1d stride u_i, kernel k_i, padding (k_i - u_i) // 2,
                                                  C / 2^i -> C / 2^(i+1)
                x = mean_j resblocks_{i*n+j}(x)   n = len(resblock_kernel_sizes)
  x = leaky_relu(x, 0.01)                         NB: torch's default slope here, not `leaky_relu_slope`
  x = tanh(conv_post(x))                          Conv1d k7 pad 3, -> 1 channel
  resblock (kernel k, dilations d_1..d_m):  for each d: x = x + convs2_j(lrelu(convs1_j(lrelu(x))))
                                            convs1_j dilation d, convs2_j dilation 1, "same" padding.

Weights are plain convolutions (what SpeechT5HifiGan holds and what every released HF checkpoint stores);
weight-normed checkpoints (`weight_g`/`weight_v` or `parametrizations.weight.original0/1`) are folded into
plain kernels on import by shared/weights/hifigan_family.import_state_dict. Params: `kernel` [k, in, out]
(ConvTranspose1d's too, unflipped: torch [in, out, k] transposed), `bias` [out]; `mean`, `scale`
[model_in_dim] are the torch buffers, kept in "params" so the name table covers them: the forward pass wraps
them in stop_gradient (a trainer sees zero gradients; exclude them from weight decay). They are always
present (SpeechT5HifiGan always stores them) and read only when normalize_before.

Call: HifiGan(cfg).apply({"params": p}, mel [B, T, model_in_dim], crop=False) -> [B, T'] float32 in [-1, 1]
(crop: [B, T * upsample_factor]); an unbatched mel [T, model_in_dim] gives [T'] (as transformers). Time-major like transformers' input (it
transposes to [B, C, T] internally); diffusers' AudioLDM pipeline squeezes the VAE's [B, 1, T, 64] to [B, T, 64].
The input is the raw natural-log mel (shared/data/audioldm_mel.py), not the diffusion model's normalised one.
Checkpoint names: shared/weights/hifigan_family.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError

Dtype = Any


@dataclasses.dataclass(frozen=True)
class HifiGanConfig:
  """Field names follow transformers' SpeechT5HifiGanConfig; defaults are AudioLDM's vocoder
  (cvssp/audioldm*/vocoder/config.json), not transformers' SpeechT5 defaults."""
  model_in_dim: int = 64
  sampling_rate: int = 16000
  upsample_initial_channel: int = 1024
  upsample_rates: tuple[int, ...] = (5, 4, 2, 2, 2)
  upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 4, 4)
  resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
  resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
  initializer_range: float = 0.01   # torch init only; carried for export
  leaky_relu_slope: float = 0.1
  normalize_before: bool = False
  dtype: str = "float32"            # compute dtype
  param_dtype: str = "float32"
  # imported config.json keys this module does not model, as sorted (key, JSON text) pairs; written back on
  # export (shared/weights/hifigan_family); metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
      raise ConfigError(f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                        f"{self.upsample_kernel_sizes} differ in length")
    if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
      raise ConfigError(f"resblock_kernel_sizes {self.resblock_kernel_sizes} and resblock_dilation_sizes "
                        f"{self.resblock_dilation_sizes} differ in length")
    if not self.upsample_rates or not self.resblock_kernel_sizes:
      raise ConfigError("HiFi-GAN needs at least one upsample stage and one resblock kernel size")
    if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
      raise ConfigError(f"resblock_kernel_sizes {self.resblock_kernel_sizes} must be odd (the residual adds "
                        "need 'same' padding)")
    if self.upsample_initial_channel // 2 ** len(self.upsample_rates) < 1:
      raise ConfigError(f"upsample_initial_channel {self.upsample_initial_channel} is halved "
                        f"{len(self.upsample_rates)} times (once per upsample stage) down to no channel")

  def replace(self, **kw) -> "HifiGanConfig":
    return dataclasses.replace(self, **kw)

  @property
  def upsample_factor(self) -> int:
    return int(np.prod(self.upsample_rates))

  def num_samples(self, frames: int) -> int:
    """Output length for `frames` mel frames (ConvTranspose1d: (T - 1) * u - 2 * ((k - u) // 2) + k)."""
    n = frames
    for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
      n = (n - 1) * u - 2 * ((k - u) // 2) + k
    return n


# AudioLDM's vocoder (cvssp/audioldm-s-full-v2 etc., diffusers AudioLDMPipeline.vocoder): 55.3M params.
AUDIOLDM_VOCODER = HifiGanConfig()


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
  return (kernel_size * dilation - dilation) // 2


class Conv1d(nn.Module):
  """torch Conv1d, channels last: x [B, T, in] -> [B, T + 2 * padding - dilation * (k - 1), features].
  kernel [k, in, out], bias [out]."""
  features: int
  kernel_size: int
  dilation: int = 1
  padding: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.normal(0.01)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.with_logical_partitioning(
        self.kernel_init, ("conv_kernel", "conv_in", "conv_out")),
        (self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                      (self.features,), self.param_dtype)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), (1,), [(self.padding, self.padding)],
        rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"))
    return y + bias.astype(self.dtype)


class ConvTranspose1d(nn.Module):
  """torch ConvTranspose1d, channels last: x [B, T, in] -> [B, (T - 1) * stride - 2 * padding + k, features].
  kernel [k, in, out] (torch [in, out, k] transposed, not flipped), bias [out]."""
  features: int
  kernel_size: int
  stride: int
  padding: int = 0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.normal(0.01)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, p = self.kernel_size, self.padding
    kernel = self.param("kernel", nn.with_logical_partitioning(
        self.kernel_init, ("conv_kernel", "conv_in", "conv_out")), (k, x.shape[-1], self.features),
        self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                      (self.features,), self.param_dtype)
    # a transposed conv == a correlation of the stride-dilated input, padded k - 1 - p, with the flipped kernel
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel[::-1].astype(self.dtype), (1,), [(k - 1 - p, k - 1 - p)],
        lhs_dilation=(self.stride,), dimension_numbers=("NWC", "WIO", "NWC"))
    return y + bias.astype(self.dtype)


class HifiGanResidualBlock(nn.Module):
  """x [B, T, C] -> [B, T, C]: for each dilation d_j, x += convs2_j(lrelu(convs1_j(lrelu(x))))."""
  kernel_size: int
  dilations: tuple[int, ...]
  leaky_relu_slope: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for j, d in enumerate(self.dilations):
      h = nn.leaky_relu(x, self.leaky_relu_slope)
      h = Conv1d(c, k, d, _same_padding(k, d), name=f"convs1_{j}", **kw)(h)
      h = nn.leaky_relu(h, self.leaky_relu_slope)
      h = Conv1d(c, k, 1, _same_padding(k, 1), name=f"convs2_{j}", **kw)(h)
      x = x + h
    return x


class HifiGan(nn.Module):
  """log-mel [B, T, model_in_dim] (or [T, model_in_dim]) -> waveform [B, T'] (or [T']) float32 in [-1, 1],
  T' = config.num_samples(T), or T * config.upsample_factor with crop=True."""
  config: HifiGanConfig

  @nn.compact
  def __call__(self, mel: jax.Array, crop: bool = False) -> jax.Array:
    cfg = self.config
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    if mel.ndim not in (2, 3) or mel.shape[-1] != cfg.model_in_dim:
      raise ConfigError(f"HifiGan expects a log-mel [B, T, {cfg.model_in_dim}] or [T, {cfg.model_in_dim}], "
                        f"got shape {mel.shape}")
    batched = mel.ndim == 3
    x = mel if batched else mel[None]
    n = cfg.model_in_dim
    mean = self.param("mean", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)), (n,),
                      param_dtype)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)), (n,),
                       param_dtype)
    if cfg.normalize_before:   # buffers in torch: never trained
      x = (x.astype(jnp.float32) - jax.lax.stop_gradient(mean).astype(jnp.float32)) / jax.lax.stop_gradient(
          scale).astype(jnp.float32)
    x = Conv1d(cfg.upsample_initial_channel, 7, padding=3, name="conv_pre", **kw)(x)
    nk = len(cfg.resblock_kernel_sizes)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
      x = nn.leaky_relu(x, cfg.leaky_relu_slope)
      x = ConvTranspose1d(cfg.upsample_initial_channel // 2 ** (i + 1), k, u, (k - u) // 2,
                          name=f"upsampler_{i}", **kw)(x)
      xs = [HifiGanResidualBlock(rk, tuple(rd), cfg.leaky_relu_slope, name=f"resblocks_{i * nk + j}", **kw)(x)
            for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes))]
      x = sum(xs[1:], xs[0]) / nk
    x = nn.leaky_relu(x, 0.01)   # transformers (and the original HiFi-GAN) use F.leaky_relu's default here
    x = Conv1d(1, 7, padding=3, name="conv_post", **kw)(x)
    wav = jnp.tanh(x[..., 0].astype(jnp.float32))
    if crop:
      wav = wav[:, :mel.shape[-2] * cfg.upsample_factor]
    return wav if batched else wav[0]


def init_params(model: HifiGan, rng: jax.Array, frames: int = 4) -> dict:
  """Unboxed "params" for `model` (a mel of `frames` frames as the example input)."""
  mel = jnp.zeros((1, frames, model.config.model_in_dim), jnp.float32)
  return nn.unbox(model.init(rng, mel)["params"])
