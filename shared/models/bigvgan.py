"""BigVGAN (v1/v2) neural vocoder, channels last: mel [B, T, num_mels] -> waveform [B, T * prod(upsample_rates)].

Structure (NVIDIA/BigVGAN, bigvgan.py): weight-normed conv_pre (k7) -> per stage i a weight-normed
ConvTranspose1d (stride u_i, kernel k_i, padding (k_i - u_i) // 2, channels C/2^i -> C/2^(i+1)) followed
by the mean of len(resblock_kernel_sizes) AMP blocks -> anti-aliased snake(-beta) -> conv_post (k7, 1
channel, optional bias) -> tanh (or clamp to [-1, 1]).

AMP block "1": for each dilation d: x += conv2(act2(conv1_d(act1(x)))); block "2": x += conv_d(act(x)).
Every activation is anti-aliased (alias_free_activation/torch): 2x upsampling by a transposed conv with a
Kaiser-windowed sinc low-pass (12 taps, cutoff 0.25, half-width 0.3, replicate padding), the snake
activation x + sin^2(alpha x) / beta (alpha, beta stored as logs when snake_logscale), then the same
low-pass with stride 2.

Mel metadata (not used by the network; what the vocoder was trained on, checked by the codecs that feed it):
n_fft, win_size, fmin, fmax (None: unknown / fmax None = Nyquist, as NVIDIA's configs) and mel_log, the base of
the log-mel it takes: "ln" (NVIDIA's meldataset: ln(clamp(mel, 1e-5))), "log10" (MMAudio's 16 kHz vocoder,
fed MMAudio's log10 mel), None = unstated (a module built in code: takes whatever mel it is given).

Weight norm is kept as a reparametrisation (as in training): every conv holds `weight_v` [k, in, out]
and `weight_g` ([out] for convs, [in] for the transposed convs, which PyTorch normalises along dim 0 of
its [in, out, k] weight) and uses g * v / ||v||. Checkpoint names: shared/weights/bigvgan_family.py.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError

Dtype = Any


@dataclasses.dataclass(frozen=True)
class BigVGANConfig:
  num_mels: int = 128
  upsample_rates: tuple[int, ...] = (8, 4, 2, 2, 2, 2)
  upsample_kernel_sizes: tuple[int, ...] = (16, 8, 4, 4, 4, 4)
  upsample_initial_channel: int = 1536
  resblock: str = "1"
  resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
  resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
  activation: str = "snakebeta"
  snake_logscale: bool = True
  use_tanh_at_final: bool = False
  use_bias_at_final: bool = False
  sampling_rate: int = 44100
  hop_size: int = 512
  n_fft: int | None = None
  win_size: int | None = None
  fmin: float | None = None
  fmax: float | None = None
  mel_log: str | None = None

  def __post_init__(self):
    if self.mel_log not in (None, "ln", "log10"):
      raise ConfigError(f"BigVGAN mel_log must be 'ln' (NVIDIA's mel), 'log10' (MMAudio's 16k mel) or None, "
                        f"got {self.mel_log!r}")
    if self.resblock not in ("1", "2"):
      raise ConfigError(f"BigVGAN resblock must be '1' or '2', got {self.resblock!r}")
    if self.activation not in ("snake", "snakebeta"):
      raise ConfigError(f"BigVGAN activation must be 'snake' or 'snakebeta', got {self.activation!r}")
    if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
      raise ConfigError(f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                        f"{self.upsample_kernel_sizes} differ in length")
    if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
      raise ConfigError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")

  @property
  def upsample_factor(self) -> int:
    return int(np.prod(self.upsample_rates))


# NVIDIA's bigvgan_v2_44khz_128band_512x (configs/bigvgan_v2_44khz_128band_512x.json).
BIGVGAN_V2_44K_128BAND_512X = BigVGANConfig(n_fft=2048, win_size=2048, fmin=0.0, fmax=None, mel_log="ln")
# MMAudio's 16 kHz vocoder (mmaudio/ext/bigvgan/bigvgan_vocoder.yml, checkpoint best_netG.pt): 80 mels,
# hop 256, the v1 code path (tanh output, conv_post with bias, parametrizations weight norm).
BIGVGAN_16K_80BAND_256X = BigVGANConfig(
    num_mels=80, upsample_rates=(4, 4, 2, 2, 2, 2), upsample_kernel_sizes=(8, 8, 4, 4, 4, 4),
    upsample_initial_channel=1536, use_tanh_at_final=True, use_bias_at_final=True,
    sampling_rate=16000, hop_size=256, n_fft=1024, win_size=1024, fmin=0.0, fmax=8000.0, mel_log="log10")


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
  """Kaiser-windowed sinc low-pass [kernel_size], normalised to unit sum (alias_free_activation filter.py)."""
  even = kernel_size % 2 == 0
  half = kernel_size // 2
  a = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
  beta = 0.1102 * (a - 8.7) if a > 50.0 else (0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21.0) if a >= 21.0 else 0.0)
  window = np.kaiser(kernel_size, beta)
  t = (np.arange(-half, half) + 0.5) if even else (np.arange(kernel_size) - half)
  if cutoff == 0:
    return np.zeros(kernel_size, np.float32)
  f = 2 * cutoff * window * np.sinc(2 * cutoff * t)
  return (f / f.sum()).astype(np.float32)


def _depthwise(x: jax.Array, taps: np.ndarray, stride: int = 1, lhs_dilation: int = 1, padding: int = 0
               ) -> jax.Array:
  """Same FIR filter on every channel: x [B, T, C] (cross-correlation, VALID)."""
  c = x.shape[-1]
  kernel = jnp.broadcast_to(jnp.asarray(taps, x.dtype)[:, None, None], (len(taps), 1, c))
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=[(padding, padding)], lhs_dilation=(lhs_dilation,),
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=c,
      precision=jax.lax.Precision.HIGHEST)


def upsample2x(x: jax.Array, kernel_size: int = 12) -> jax.Array:
  """Anti-aliased 2x upsampling, x [B, T, C] -> [B, 2T, C] (UpSample1d, ratio 2)."""
  ratio, taps = 2, kaiser_sinc_filter(0.25, 0.3, kernel_size)
  pad = kernel_size // ratio - 1
  crop_l = pad * ratio + (kernel_size - ratio) // 2
  crop_r = pad * ratio + (kernel_size - ratio + 1) // 2
  x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)), mode="edge")
  # transposed conv (stride 2) == correlation of the zero-stuffed input (fully padded) with flipped taps
  y = ratio * _depthwise(x, taps[::-1].copy(), lhs_dilation=ratio, padding=kernel_size - 1)
  return y[:, crop_l:y.shape[1] - crop_r]


def downsample2x(x: jax.Array, kernel_size: int = 12) -> jax.Array:
  """Anti-aliased 2x downsampling, x [B, 2T, C] -> [B, T, C] (DownSample1d / LowPassFilter1d)."""
  taps = kaiser_sinc_filter(0.25, 0.3, kernel_size)
  even = kernel_size % 2 == 0
  x = jnp.pad(x, ((0, 0), (kernel_size // 2 - int(even), kernel_size // 2), (0, 0)), mode="edge")
  return _depthwise(x, taps, stride=2)


class AntiAliasedSnake(nn.Module):
  """Activation1d(Snake/SnakeBeta): x [B, T, C] -> [B, T, C]; params alpha [C] (and beta [C])."""
  beta: bool = True
  logscale: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    init = nn.initializers.zeros_init() if self.logscale else nn.initializers.ones_init()
    alpha = self.param("alpha", nn.with_logical_partitioning(init, ("norm",)), (c,), jnp.float32)
    b = self.param("beta", nn.with_logical_partitioning(init, ("norm",)), (c,), jnp.float32) if self.beta else alpha
    if self.logscale:
      alpha, b = jnp.exp(alpha), jnp.exp(b)
    dtype = x.dtype
    h = upsample2x(x.astype(jnp.float32))
    h = h + (1.0 / (b + 1e-9)) * jnp.sin(h * alpha) ** 2
    return downsample2x(h).astype(dtype)


def _weight_norm(v: jax.Array, g: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
  return v * (g / norm)


class WNConv1d(nn.Module):
  """Weight-normed Conv1d, x [B, T, in] -> [B, T', features]; weight_v [k, in, out], weight_g [out]."""
  features: int
  kernel_size: int
  dilation: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (self.kernel_size, x.shape[-1], self.features)
    v = self.param("weight_v", nn.with_logical_partitioning(
        nn.initializers.normal(0.01), ("conv_kernel", "conv_in", "conv_out")), shape, jnp.float32)
    g = self.param("weight_g", nn.with_logical_partitioning(
        lambda key, s, d: jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1))).astype(d), ("conv_out",)),
        (self.features,), jnp.float32)
    w = _weight_norm(v, g, (0, 1))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), w.astype(self.dtype), (1,), [(self.padding, self.padding)],
        rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                         (self.features,), jnp.float32).astype(self.dtype)
    return y


class WNConvTranspose1d(nn.Module):
  """Weight-normed ConvTranspose1d, x [B, T, in] -> [B, (T-1)*stride - 2*padding + k, features].

  weight_v [k, in, out] (PyTorch [in, out, k]); weight_g [in] (PyTorch normalises per input channel)."""
  features: int
  kernel_size: int
  stride: int
  padding: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cin = x.shape[-1]
    v = self.param("weight_v", nn.with_logical_partitioning(
        nn.initializers.normal(0.01), ("conv_kernel", "conv_in", "conv_out")),
        (self.kernel_size, cin, self.features), jnp.float32)
    g = self.param("weight_g", nn.with_logical_partitioning(
        lambda key, s, d: jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 2))).astype(d), ("conv_in",)),
        (cin,), jnp.float32)
    w = _weight_norm(v, g[None, :, None], (0, 2))
    k, p = self.kernel_size, self.padding
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), w[::-1].astype(self.dtype), (1,), [(k - 1 - p, k - 1 - p)],
        lhs_dilation=(self.stride,), dimension_numbers=("NWC", "WIO", "NWC"))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                      (self.features,), jnp.float32)
    return y + bias.astype(self.dtype)


def _padding(kernel_size: int, dilation: int) -> int:
  return (kernel_size * dilation - dilation) // 2


class AMPBlock(nn.Module):
  """AMPBlock1 / AMPBlock2 on x [B, T, C] -> [B, T, C]."""
  config: BigVGANConfig
  kernel_size: int
  dilations: tuple[int, ...]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, c, k = self.config, x.shape[-1], self.kernel_size
    act = lambda i: AntiAliasedSnake(cfg.activation == "snakebeta", cfg.snake_logscale,  # noqa: E731
                                     name=f"activations_{i}")
    for j, d in enumerate(self.dilations):
      if cfg.resblock == "1":
        h = act(2 * j)(x)
        h = WNConv1d(c, k, d, _padding(k, d), dtype=self.dtype, name=f"convs1_{j}")(h)
        h = act(2 * j + 1)(h)
        h = WNConv1d(c, k, 1, _padding(k, 1), dtype=self.dtype, name=f"convs2_{j}")(h)
      else:
        h = WNConv1d(c, k, d, _padding(k, d), dtype=self.dtype, name=f"convs_{j}")(act(j)(x))
      x = x + h
    return x


class BigVGAN(nn.Module):
  """mel [B, T, num_mels] -> waveform [B, T * upsample_factor] in [-1, 1]."""
  config: BigVGANConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    cfg = self.config
    if mel.shape[-1] != cfg.num_mels:
      raise ConfigError(f"BigVGAN expects mel [B, T, {cfg.num_mels}], got shape {mel.shape}")
    x = WNConv1d(cfg.upsample_initial_channel, 7, padding=3, dtype=self.dtype, name="conv_pre")(mel)
    n = len(cfg.resblock_kernel_sizes)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
      ch = cfg.upsample_initial_channel // 2 ** (i + 1)
      x = WNConvTranspose1d(ch, k, u, (k - u) // 2, dtype=self.dtype, name=f"ups_{i}")(x)
      xs = sum(AMPBlock(cfg, rk, tuple(rd), dtype=self.dtype, name=f"resblocks_{i * n + j}")(x)
               for j, (rk, rd) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)))
      x = xs / n
    x = AntiAliasedSnake(cfg.activation == "snakebeta", cfg.snake_logscale, name="activation_post")(x)
    x = WNConv1d(1, 7, padding=3, use_bias=cfg.use_bias_at_final, dtype=self.dtype, name="conv_post")(x)
    x = x[..., 0].astype(jnp.float32)
    return jnp.tanh(x) if cfg.use_tanh_at_final else jnp.clip(x, -1.0, 1.0)


def init_params(model: BigVGAN, rng: jax.Array, frames: int = 4) -> dict:
  """Unboxed "params" for `model` (mel of `frames` frames as the example input)."""
  mel = jnp.zeros((1, frames, model.config.num_mels), jnp.float32)
  return nn.unbox(model.init(rng, mel)["params"])
