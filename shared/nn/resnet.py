"""Video front end: a 3-D conv stem (lip reading) or a per-frame 2-D stem (torchvision), then a per-frame 2-D
ResNet trunk, channels last.

  lips [B, T, H, W] (or [B, T, H, W, 1]) grayscale float --Conv3dResNet--> features [B, T, C] float32
  frames [B, T, H, W, in_channels] float (stem "conv2d", e.g. RGB frames / pose maps) --> [B, T, C] float32

The layout of auto_avsr's `Conv3dResNet` (mpc001/auto_avsr, espnet/nets/pytorch_backend/backbones/
conv3d_extractor.py + modules/resnet.py), which the CNVSRC 2025 baseline (VALLR-Pin's reference) uses with
Swish, and of AV-HuBERT's `ResEncoder` (facebookresearch/av_hubert, avhubert/resnet.py) with PReLU:

  stem   Conv3d(1 -> w, kernel (5, 7, 7), stride (1, 2, 2), pad (2, 3, 3), no bias) -> BatchNorm3d -> act
         -> MaxPool3d((1, 3, 3), stride (1, 2, 2), pad (0, 1, 1))            [B, T, H/4, W/4, w]
  fold   time into batch                                                     [B*T, H/4, W/4, w]
  trunk  layer1..4 with planes w * (1, 2, 4, 8), strides (1, 2, 2, 2) (the stride sits on the first block
         of a layer), downsample = conv1x1(stride) + BN on the first block of a layer whose stride is not 1
         or whose channels change; then the trunk's own global average pool (AdaptiveAvgPool2d(1))
                                                                             [B*T, 8 w * expansion]
  unfold                                                                     [B, T, C]

  block "basic"       conv3x3(stride)-bn1-act(relu1)-conv3x3-bn2 (+ residual) -act(relu2); expansion 1
                      (auto_avsr / AV-HuBERT BasicBlock; [2,2,2,2] = ResNet-18, [3,4,6,3] = ResNet-34)
  block "bottleneck"  conv1x1-bn1-act(relu1)-conv3x3(stride)-bn2-act(relu2)-conv1x1-bn3 (+ residual)
                      -act(relu3); expansion 4 (torchvision's v1.5 layout; [3,4,6,3] = ResNet-50, what the
                      VALLR-Pin paper names; neither auto_avsr nor the CNVSRC baseline ships one, so its
                      checkpoint names follow the basic block's: conv3 / bn3 / relu3)

Stem "conv2d" (UniCUE's per-frame 2-D ResNet; torchvision's ResNet stem, every frame on its own):
         Conv2d(in_channels -> w, 7x7, stride 2, pad 3, no bias) -> BatchNorm2d -> act -> MaxPool2d(3, 2, 1)
         [B*T, H/4, W/4, w], then the same trunk. With act "relu" and w = 64 the variables are torchvision's
         resnet18 / 34 / 50 without `fc` (keys conv1.*, bn1.*, layer{L}.{i}.*: shared/weights/resnet_family.py).

With w = 64 the output has C = 512 (basic) or 2048 (bottleneck) channels per frame. Activations:
"swish" (x * sigmoid(x); auto_avsr / CNVSRC), "prelu" (torch.nn.PReLU(num_parameters=C): one slope per
channel, init 0.25, in the stem and per activation in every block; AV-HuBERT), "relu".

BatchNorm: `BatchNorm` below is flax's nn.BatchNorm (variables params/{scale,bias}, batch_stats/{mean,var})
with PyTorch's hyper-parameters (torch momentum 0.1 <=> flax momentum 0.9, eps 1e-5) and PyTorch's running
variance update (the unbiased batch variance, where flax stores the biased one); normalisation uses the
biased batch variance in both. `train=True` normalises with batch statistics and updates batch_stats (apply
with mutable=["batch_stats"]); `train=False` uses the running statistics.

Padded batches: the trunk treats every frame on its own, the stem mixes 5 neighbouring frames (zero padded
in time, like auto_avsr). mask=None is auto_avsr exactly: pad with zeros (after normalising the pixels) and
valid frames see what they would see unpadded; in training the padded frames count in the BatchNorm
statistics, as they do in auto_avsr. With mask [B, T] (True = a real frame) padded frames are zeroed at
the input (whatever they held), left out of every BatchNorm statistic, and their output rows are zero.

Weight names (auto_avsr / CNVSRC / AV-HuBERT keys frontend3D.*, trunk.layer*.*): shared/weights/resnet_family.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.nn.conv import Conv

Dtype = Any

BLOCKS = {"basic": 1, "bottleneck": 4}        # block kind -> expansion
ACTS = ("swish", "relu", "prelu")
STEMS = ("conv3d", "taps", "conv2d")
STEM_KERNEL, STEM_STRIDE, STEM_PAD = (5, 7, 7), (1, 2, 2), ((2, 2), (3, 3), (3, 3))
# AV-HuBERT's trunk init (normal(0, sqrt(2 / (k * k * out)))); the stem keeps torch's default conv init.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  block: str = "basic"                          # "basic" | "bottleneck"
  layers: tuple[int, ...] = (2, 2, 2, 2)        # blocks per stage layer1..4
  act: str = "swish"                            # "swish" | "relu" | "prelu"
  width: int = 64                               # stem channels = layer1 planes
  dtype: str = "float32"                       # compute dtype name (params, statistics and output are float32)
  # the stem: "conv3d" (one 3-D conv) or "taps" (the same Conv3d [5, 7, 7, 1, w] computed with the 5 time taps
  # stacked as input channels of a 2-D conv: XLA:CPU's Conv3d gradient is ~15x slower; same result), or
  # "conv2d" (torchvision's 7x7 stride-2 stem applied per frame, in_channels inputs; other variables)
  stem: str = "conv3d"
  in_channels: int = 1                          # input channels (the 3-D stems take 1: grayscale lips)

  def __post_init__(self):
    if self.stem not in STEMS:
      raise ConfigError(f"ResNetConfig.stem={self.stem!r}; expected one of {list(STEMS)}")
    if int(self.in_channels) < 1 or (self.stem != "conv2d" and int(self.in_channels) != 1):
      raise ConfigError(f"ResNetConfig.in_channels={self.in_channels!r}; expected 1 for stem {self.stem!r} "
                        "(grayscale lips), >= 1 for stem 'conv2d'")
    if self.block not in BLOCKS:
      raise ConfigError(f"ResNetConfig.block={self.block!r}; expected one of {sorted(BLOCKS)}")
    if self.act not in ACTS:
      raise ConfigError(f"ResNetConfig.act={self.act!r}; expected one of {list(ACTS)}")
    if len(self.layers) != 4 or any(int(n) < 1 for n in self.layers):
      raise ConfigError(f"ResNetConfig.layers={self.layers!r}; expected 4 block counts >= 1 "
                        "((2, 2, 2, 2) ResNet-18, (3, 4, 6, 3) ResNet-34 / -50)")
    if int(self.width) < 1:
      raise ConfigError(f"ResNetConfig.width={self.width!r}; expected a positive channel count")
    object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))

  @property
  def expansion(self) -> int:
    return BLOCKS[self.block]

  @property
  def out_features(self) -> int:
    return 8 * self.width * self.expansion

  def replace(self, **kw) -> "ResNetConfig":
    return dataclasses.replace(self, **kw)


class BatchNorm(nn.BatchNorm):
  """flax nn.BatchNorm whose running variance is updated with the unbiased batch variance (x n / (n - 1), n
  the values per channel, masked ones left out), as torch.nn.BatchNorm*d does; the output is flax's."""

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    use_ra = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
    update = not use_ra and not self.is_initializing()
    old = self.get_variable("batch_stats", "var") if update else None
    y = super().__call__(x, use_running_average, mask=mask)
    if update:
      new = self.get_variable("batch_stats", "var")   # momentum * old + (1 - momentum) * biased var
      n = (x.size // x.shape[-1] if mask is None else
           jnp.sum(jnp.broadcast_to(mask, x.shape[:-1] + (1,)), dtype=jnp.float32))
      self.put_variable("batch_stats", "var", new + (new - self.momentum * old) / jnp.maximum(n - 1, 1))
    return y


def batch_norm(train: bool, dtype, name: str) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                   dtype=dtype, param_dtype=jnp.float32,
                   scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)), name=name)


class PReLU(nn.Module):
  """torch.nn.PReLU(num_parameters=C): x [..., C] -> max(x, 0) + slope * min(x, 0), one slope per channel."""
  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x):
    slope = self.param("negative_slope",
                       nn.with_logical_partitioning(nn.initializers.constant(self.init_slope), ("norm",)),
                       (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


def activation(kind: str, name: str):
  """The block / stem activation: a PReLU module named `name` (its parameters live there) or a function."""
  if kind == "prelu":
    return PReLU(name=name)
  return {"swish": nn.swish, "relu": nn.relu}[kind]


def _conv(features, kernel, stride, name, dtype, init=kaiming_fan_out):
  k = (kernel, kernel)
  pad = ((kernel // 2, kernel // 2),) * 2
  return Conv(features, k, strides=(stride, stride), padding=pad, use_bias=False, dtype=dtype,
              kernel_init=init, name=name)


class BasicBlock(nn.Module):
  """x [N, h, w, inplanes] -> [N, h / stride, w / stride, planes]."""
  planes: int
  stride: int = 1
  act: str = "swish"
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    out_ch = self.planes * self.expansion
    y = _conv(self.planes, 3, self.stride, "conv1", self.dtype)(x)
    y = activation(self.act, "relu1")(batch_norm(train, self.dtype, "bn1")(y, mask=mask))
    y = _conv(self.planes, 3, 1, "conv2", self.dtype)(y)
    y = batch_norm(train, self.dtype, "bn2")(y, mask=mask)
    return activation(self.act, "relu2")(y + _shortcut(self, x, out_ch, train, mask))


class Bottleneck(nn.Module):
  """x [N, h, w, inplanes] -> [N, h / stride, w / stride, 4 planes] (stride on the 3x3 conv)."""
  planes: int
  stride: int = 1
  act: str = "swish"
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    out_ch = self.planes * self.expansion
    y = _conv(self.planes, 1, 1, "conv1", self.dtype)(x)
    y = activation(self.act, "relu1")(batch_norm(train, self.dtype, "bn1")(y, mask=mask))
    y = _conv(self.planes, 3, self.stride, "conv2", self.dtype)(y)
    y = activation(self.act, "relu2")(batch_norm(train, self.dtype, "bn2")(y, mask=mask))
    y = _conv(out_ch, 1, 1, "conv3", self.dtype)(y)
    y = batch_norm(train, self.dtype, "bn3")(y, mask=mask)
    return activation(self.act, "relu3")(y + _shortcut(self, x, out_ch, train, mask))


def _shortcut(block, x, out_ch, train, mask):
  """Identity, or conv1x1(stride) + BN (auto_avsr's downsample_basic_block) when the shape changes."""
  if block.stride == 1 and x.shape[-1] == out_ch:
    return x
  r = _conv(out_ch, 1, block.stride, "downsample_conv", block.dtype)(x)
  return batch_norm(train, block.dtype, "downsample_bn")(r, mask=mask)


class ResNetTrunk(nn.Module):
  """The per-frame 2-D ResNet (auto_avsr's `ResNet` without a classifier):
  x [N, h, w, width] -> [N, 8 width expansion] (layer1..4, then global average pool)."""
  config: ResNetConfig

  @nn.compact
  def __call__(self, x, train: bool, mask=None):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[c.block]
    for stage, (n, stride) in enumerate(zip(c.layers, (1, 2, 2, 2)), start=1):
      for i in range(n):
        x = block(c.width * 2 ** (stage - 1), stride if i == 0 else 1, c.act, dtype,
                  name=f"layer{stage}_{i}")(x, train, mask)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class TapsConv3d(Conv):
  """A Conv3d over [B, T, H, W, Cin] with time stride 1 computed as ONE 2-D conv: the kt time taps of every
  frame (zero padded in time) are stacked as kt * Cin input channels. Same `kernel` [kt, kh, kw, Cin, Cout] (and
  logical axes) as `Conv`; same result up to summation order."""

  @nn.compact
  def __call__(self, x):
    kt, kh, kw = self.kernel_size
    if tuple(self.strides or (1, 1, 1))[0] != 1 or self.use_bias:
      raise ConfigError("TapsConv3d needs time stride 1 and no bias")
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        self.kernel_init, ("conv_kernel", None, None, "conv_in", "conv_out")),
        (kt, kh, kw, cin, self.features), self.param_dtype)
    (pt0, pt1), ph, pw = [tuple(p) for p in self.padding]
    b, t = x.shape[:2]
    xp = jnp.pad(x.astype(self.dtype), ((0, 0), (pt0, pt1), (0, 0), (0, 0), (0, 0)))
    t_out = t + pt0 + pt1 - kt + 1
    taps = jnp.concatenate([xp[:, j:j + t_out] for j in range(kt)], axis=-1)     # [B, T', H, W, kt * Cin]
    w2 = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, self.features)
    y = jax.lax.conv_general_dilated(
        taps.reshape((b * t_out,) + taps.shape[2:]), w2.astype(self.dtype), window_strides=tuple(self.strides)[1:],
        padding=[ph, pw], dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return y.reshape((b, t_out) + y.shape[1:])


class Conv3dResNet(nn.Module):
  """lips [B, T, H, W] or [B, T, H, W, 1] float (stem "conv2d": [B, T, H, W, in_channels]) -> [B, T, 8 width
  expansion] float32 (see module docstring).

  __call__(x, train, mask=None): train=True uses and updates batch statistics (mutable=["batch_stats"]);
  mask [B, T] bool (True = real frame), optional, see "Padded batches" above."""
  config: ResNetConfig = ResNetConfig()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    c = self.config
    if x.ndim == 4 and c.in_channels == 1:
      x = x[..., None]
    if x.ndim != 5 or x.shape[-1] != c.in_channels:
      raise ValueError(f"Conv3dResNet expects frames [B, T, H, W, {c.in_channels}]"
                       + (" or [B, T, H, W]" if c.in_channels == 1 else "") + f"; got {x.shape}")
    b, t = x.shape[:2]
    dtype = jnp.dtype(c.dtype)
    x = nn.with_logical_constraint(x.astype(dtype), ("batch", "length", None, None, None))
    frame_mask = None
    if mask is not None:
      if mask.shape != (b, t):
        raise ValueError(f"Conv3dResNet mask has shape {mask.shape}; expected [B, T] = {(b, t)}")
      mask = mask.astype(bool)
      x = jnp.where(mask[:, :, None, None, None], x, 0)
    if c.stem == "conv2d":   # per frame: [B*T, H, W, Cin] -> [B*T, H/2, W/2, w] -> pool -> [B*T, H/4, W/4, w]
      x = x.reshape((b * t,) + x.shape[2:])
      if mask is not None:
        frame_mask = mask.reshape(b * t, 1, 1, 1)
      x = Conv(c.width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False, dtype=dtype,
               kernel_init=kaiming_fan_out, name="conv1")(x)
      x = activation(c.act, "act1")(batch_norm(train, dtype, "bn1")(x, mask=frame_mask))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
      y = ResNetTrunk(c, name="trunk")(x, train, frame_mask).reshape(b, t, -1)
      if mask is not None:
        y = jnp.where(mask[:, :, None], y, 0)
      return nn.with_logical_constraint(y.astype(jnp.float32), ("batch", "length", "act_embed"))
    # stem: [B, T, H, W, 1] -> [B, T, H/2, W/2, w] -> pool -> [B, T, H/4, W/4, w]
    stem = Conv if c.stem == "conv3d" else TapsConv3d
    x = stem(c.width, STEM_KERNEL, strides=STEM_STRIDE, padding=STEM_PAD, use_bias=False, dtype=dtype,
             name="conv3d")(x)
    x = batch_norm(train, dtype, "bn3d")(x, mask=None if mask is None else mask[:, :, None, None, None])
    x = activation(c.act, "prelu3d")(x)
    x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))   # pads with -inf
    # fold time into batch: [B*T, h, w, w] -> trunk -> [B*T, C] -> [B, T, C]
    if mask is not None:
      frame_mask = mask.reshape(b * t, 1, 1, 1)
    y = ResNetTrunk(c, name="trunk")(x.reshape((b * t,) + x.shape[2:]), train, frame_mask)
    y = y.reshape(b, t, -1)
    if mask is not None:
      y = jnp.where(mask[:, :, None], y, 0)
    return nn.with_logical_constraint(y.astype(jnp.float32), ("batch", "length", "act_embed"))
