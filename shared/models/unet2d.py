"""Conditional 2-D UNet (diffusers `UNet2DConditionModel`) in the configurations AudioLDM and a compact image
editor use: ResNet blocks with a time(+class) embedding, Transformer2D blocks (self-attention, cross- or second
self-attention, GEGLU feed-forward) at chosen resolutions, skip connections between mirrored down/up blocks.

Layout: channels last. diffusers' sample [B, C, H, W] is ours [B, H, W, C] (AudioLDM: the mel latent
[B, 8, T/4, 16] -> [B, T/4, 16, 8]: H = time frames, W = mel bins).

  UNet2DCondition(config)(sample [B, H, W, in_channels], timesteps [] | [B],
                          encoder_hidden_states [B, L, d] | None, class_labels [B, P] | None,
                          encoder_attention_mask [B, L] bool | None) -> eps [B, H, W, out_channels] float32

  t  --Timesteps(C0; flip_sin_to_cos, freq_shift)--> [B, C0] --time_embedding (Linear, silu, Linear)--> temb [B, E]
     (E = time_embedding_dim or 4 * C0; float32)
  class_labels --class_embedding (Linear P -> E; class_embed_type "simple_projection")--> [B, E];
     class_embeddings_concat: temb = [temb, class] [B, 2E] (AudioLDM: CLAP [B, 512] -> every ResNet's time_emb_proj
     reads [C, 2E] = [C, 1024]), else temb + class
  conv_in (k x k) -> down blocks (DownBlock2D | CrossAttnDownBlock2D: layers x (ResNet [+ Transformer2D]),
     stride-2 conv downsample but the last) -> mid block (UNetMidBlock2DCrossAttn: ResNet, Transformer2D, ResNet;
     or none) -> up blocks (mirrored, each ResNet reads concat(h, skip), nearest x2 + conv upsample but the last;
     upsampled to the skip's size, so odd H / W work like diffusers' upsample_size) -> GroupNorm, silu, conv_out.
  ResNet (ResnetBlock2D): GN, silu, conv3x3, + time_emb_proj(silu(temb)), GN, silu, conv3x3, + shortcut (1x1 conv
     when channels change), / output_scale_factor. ResnetBlock2D, Downsample2D, Upsample2D (nearest_resize) are
     shared.nn.resnet2d's, GroupNorm shared.nn.norms', the sinusoidal timestep_embedding shared.nn.positions'.
  Transformer2D: GN(eps 1e-6), proj_in (1x1 conv or Linear: same matmul; the name table converts), N x
     BasicTransformerBlock, proj_out, + input. BasicTransformerBlock: h += attn1(LN h); h += attn2(LN h, context);
     h += ff(LN h) with ff = GEGLU (Linear dim -> 2 * 4dim, a * gelu(b), Linear 4dim -> dim).
     attn2 attends to encoder_hidden_states when given, else to its own input (AudioLDM: cross_attention_dim =
     block_out_channels, no encoder states, so attn2 is a second self-attention; UniCUE: an int d and a visual
     sequence [B, L, d]). Heads per block: attention_head_dim (diffusers reads it as the number of heads;
     num_attention_heads must stay None), head_dim = channels // heads.

Param names follow diffusers' module tree (down_blocks_0/resnets_1/conv1/kernel <-> down_blocks.0.resnets.1.conv1.
weight); the name table is shared/weights/unet2d_family.py. Params float32 (`param_dtype`), compute `dtype`;
GroupNorm / LayerNorm statistics, the time embedding, softmax and the transformer residual stream in float32;
output float32. `remat_policy` (shared.nn.remat names) wraps every ResNet and Transformer2D block.
Not modelled (ConfigError naming the key): other block types, resnet_time_scale_shift "scale_shift", other class /
addition embeddings, encoder_hid_proj, fourier time embedding, only/dual cross-attention, attention masks on attn1.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.nn.linear import Dense
from shared.nn.mha import MultiHeadAttention
from shared.nn.norms import GroupNorm, LayerNorm
from shared.nn.positions import timestep_embedding
from shared.nn.remat import check_remat_policy, remat
from shared.nn.resnet2d import Downsample2D, ResnetBlock2D, Upsample2D, conv2d

F32 = jnp.float32
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

DOWN_BLOCK_TYPES = ("DownBlock2D", "CrossAttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "CrossAttnUpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn", None)
CLASS_EMBED_TYPES = (None, "simple_projection")


def _tuple(v):
  return tuple(v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
  """Field names are diffusers' UNet2DConditionModel config keys (plus our precision/runtime fields).
  Per-block keys (layers_per_block, attention_head_dim, cross_attention_dim, transformer_layers_per_block) take an
  int or one value per down block (up blocks read them reversed, the mid block the last)."""
  sample_size: Any = None
  in_channels: int = 4
  out_channels: int = 4
  center_input_sample: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: float = 0
  down_block_types: tuple = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
  mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
  up_block_types: tuple = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
  only_cross_attention: Any = False
  block_out_channels: tuple = (320, 640, 1280, 1280)
  layers_per_block: Any = 2
  downsample_padding: int = 1
  mid_block_scale_factor: float = 1.0
  act_fn: str = "silu"
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  cross_attention_dim: Any = 1280
  transformer_layers_per_block: Any = 1
  attention_head_dim: Any = 8
  num_attention_heads: Any = None
  dual_cross_attention: bool = False
  use_linear_projection: bool = False
  upcast_attention: bool = False          # no-op here: attention softmax is always float32
  class_embed_type: str | None = None
  projection_class_embeddings_input_dim: int | None = None
  class_embeddings_concat: bool = False
  time_embedding_dim: int | None = None
  conv_in_kernel: int = 3
  conv_out_kernel: int = 3
  dtype: str = "float32"                  # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"
  # config.json keys carried unmodelled (dropout: training-only, not applied here) as sorted (key, JSON) pairs;
  # written back by to_config; metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    for k in ("down_block_types", "up_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
              "transformer_layers_per_block", "attention_head_dim", "num_attention_heads", "only_cross_attention",
              "sample_size"):
      object.__setattr__(self, k, _tuple(getattr(self, k)))
    n = len(self.block_out_channels)

    def bad(key, why):
      raise ConfigError(f"UNet2DConditionModel config key {key} = {getattr(self, key)!r}: {why}")

    if n == 0:
      bad("block_out_channels", "needs at least one block")
    if len(self.down_block_types) != n:
      bad("down_block_types", f"needs one entry per block_out_channels entry ({n})")
    if len(self.up_block_types) != n:
      bad("up_block_types", f"needs one entry per block_out_channels entry ({n})")
    for k, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
      if any(t not in allowed for t in getattr(self, k)):
        bad(k, f"supported block types are {allowed}")
    if self.mid_block_type not in MID_BLOCK_TYPES:
      bad("mid_block_type", f"expected one of {MID_BLOCK_TYPES}")
    oca = self.only_cross_attention
    if oca is not False and not (isinstance(oca, tuple) and not any(oca)):
      bad("only_cross_attention", "only False is supported")
    if self.dual_cross_attention:
      bad("dual_cross_attention", "only False is supported")
    if self.num_attention_heads is not None:
      bad("num_attention_heads", "must be None (diffusers itself rejects it; attention_head_dim gives the heads)")
    if self.act_fn not in ("silu", "swish"):
      bad("act_fn", "only 'silu' (= 'swish') is supported")
    if not isinstance(self.norm_num_groups, int) or self.norm_num_groups <= 0:
      bad("norm_num_groups", "must be a positive int (None is not supported)")
    if self.class_embed_type not in CLASS_EMBED_TYPES:
      bad("class_embed_type", f"supported: {CLASS_EMBED_TYPES}")
    if self.class_embed_type == "simple_projection" and not self.projection_class_embeddings_input_dim:
      bad("projection_class_embeddings_input_dim", "class_embed_type 'simple_projection' needs it")
    if self.class_embeddings_concat and self.class_embed_type is None:
      bad("class_embeddings_concat", "needs a class_embed_type (diffusers' blocks would read a 2E time embedding "
          "that is never built)")
    if self.downsample_padding < 0:
      bad("downsample_padding", "must be >= 0")
    for k in ("conv_in_kernel", "conv_out_kernel"):
      if getattr(self, k) % 2 != 1:
        bad(k, "must be odd (same-size padding)")
    for k in ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim"):
      v = getattr(self, k)
      if isinstance(v, tuple) and len(v) != n:
        bad(k, f"a per-block value needs {n} entries (one per down block)")
      if any(not isinstance(x, int) or isinstance(x, bool) for x in self.per_block(k)):
        bad(k, "expected an int or a list of ints (nested per-layer lists are not supported)")
    time_dim = self.time_embedding_dim
    if time_dim is not None and (not isinstance(time_dim, int) or time_dim <= 0):
      bad("time_embedding_dim", "must be None or a positive int")
    for name, ch, heads, cross, _ in self.attention_sites():
      if ch % heads:
        bad("attention_head_dim", f"{name} has {ch} channels, not a multiple of its {heads} heads")
    if self.attention_sites() and self.context_dim is None and not self.self_attn2:
      bad("cross_attention_dim", "the attention blocks' cross_attention_dim must either all equal their channels "
          "(attn2 attends to the block itself, AudioLDM) or all be one dim d (encoder_hidden_states [B, L, d])")
    check_remat_policy(self.remat_policy)
    for k in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, k))
      except TypeError:
        bad(k, "not a dtype name")

  def replace(self, **kw) -> "UNet2DConfig":
    return dataclasses.replace(self, **kw)

  # ---- derived geometry ----

  def per_block(self, key: str) -> tuple[int, ...]:
    v = getattr(self, key)
    return tuple(v) if isinstance(v, tuple) else (v,) * len(self.block_out_channels)

  @property
  def time_embed_dim(self) -> int:
    return self.time_embedding_dim or 4 * self.block_out_channels[0]

  @property
  def blocks_temb_dim(self) -> int:
    """Width of the embedding every ResNet's time_emb_proj reads."""
    return 2 * self.time_embed_dim if self.class_embeddings_concat else self.time_embed_dim

  def down_plan(self) -> list[dict]:
    """Per down block: kind, in / out channels, layers, downsample, heads, cross dim, transformer layers."""
    c, out = self.block_out_channels, []
    layers, heads = self.per_block("layers_per_block"), self.per_block("attention_head_dim")
    cross, tl = self.per_block("cross_attention_dim"), self.per_block("transformer_layers_per_block")
    for i, kind in enumerate(self.down_block_types):
      out.append(dict(kind=kind, cin=c[max(i - 1, 0)], cout=c[i], layers=layers[i], sample=i < len(c) - 1,
                      attn=kind == "CrossAttnDownBlock2D", heads=heads[i], cross=cross[i], tlayers=tl[i]))
    return out

  def up_plan(self) -> list[dict]:
    """Per up block: kind, output channels, the input channels of each ResNet (h + skip), upsample, attention."""
    n = len(self.block_out_channels)
    rc = list(reversed(self.block_out_channels))
    layers, heads = self.per_block("layers_per_block")[::-1], self.per_block("attention_head_dim")[::-1]
    cross, tl = self.per_block("cross_attention_dim")[::-1], self.per_block("transformer_layers_per_block")[::-1]
    out, prev = [], rc[0]
    for i, kind in enumerate(self.up_block_types):
      cout, cin_skip, nl = rc[i], rc[min(i + 1, n - 1)], layers[i] + 1
      res_in = [(prev if j == 0 else cout) + (cin_skip if j == nl - 1 else cout) for j in range(nl)]
      out.append(dict(kind=kind, cout=cout, res_in=res_in, layers=nl, sample=i < n - 1,
                      attn=kind == "CrossAttnUpBlock2D", heads=heads[i], cross=cross[i], tlayers=tl[i]))
      prev = cout
    return out

  def attention_sites(self) -> list[tuple[str, int, int, int, int]]:
    """(diffusers module prefix, channels, heads, cross_attention_dim, transformer layers) per Transformer2D."""
    sites = []
    for i, b in enumerate(self.down_plan()):
      if b["attn"]:
        sites += [(f"down_blocks.{i}.attentions.{j}", b["cout"], b["heads"], b["cross"], b["tlayers"])
                  for j in range(b["layers"])]
    if self.mid_block_type is not None:
      sites.append(("mid_block.attentions.0", self.block_out_channels[-1], self.per_block("attention_head_dim")[-1],
                    self.per_block("cross_attention_dim")[-1], self.per_block("transformer_layers_per_block")[-1]))
    for i, b in enumerate(self.up_plan()):
      if b["attn"]:
        sites += [(f"up_blocks.{i}.attentions.{j}", b["cout"], b["heads"], b["cross"], b["tlayers"])
                  for j in range(b["layers"])]
    return sites

  @property
  def self_attn2(self) -> bool:
    """True when every attn2 can attend to its own block (cross_attention_dim == channels everywhere)."""
    return all(ch == cross for _, ch, _, cross, _ in self.attention_sites())

  @property
  def context_dim(self) -> int | None:
    """d of encoder_hidden_states [B, L, d] when every attn2 reads the same d, else None."""
    dims = {cross for *_, cross, _ in self.attention_sites()}
    return dims.pop() if len(dims) == 1 else None


def _dts(c: UNet2DConfig):
  return jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)


def _conv(c: UNet2DConfig, features: int, k: int = 3, name=None):
  return conv2d(features, k, *_dts(c), name=name)


def _dense(c: UNet2DConfig, features: int, axes, use_bias: bool = True, dtype=None, name=None):
  dt, pdt = _dts(c)
  return Dense(features, use_bias, axes, dtype or dt, pdt, kernel_init=TORCH_LINEAR_INIT, name=name)


ACT_AXES = ("batch", None, None, "act_embed")


def _constrain(x):
  return nn.with_logical_constraint(x, ACT_AXES)


def _resnet(c: UNet2DConfig, out_channels: int, output_scale_factor: float = 1.0) -> ResnetBlock2D:
  """diffusers ResnetBlock2D with a time embedding (remat'd per remat_policy): x [B, H, W, C_in],
  temb [B, blocks_temb_dim] -> [B, H, W, out_channels] in the compute dtype."""
  dt, pdt = _dts(c)
  return remat(ResnetBlock2D, c.remat_policy)(
      out_channels, c.norm_num_groups, eps=c.norm_eps, act_fn=c.act_fn, use_time_emb=True,
      output_scale_factor=output_scale_factor, dtype=dt, param_dtype=pdt, out_axes=ACT_AXES)


class GEGLUFeedForward(nn.Module):
  """diffusers FeedForward(activation_fn="geglu"): proj (dim -> 2 * inner), a * gelu(b) (erf), out (inner -> dim)."""
  config: UNet2DConfig
  inner_dim: int

  @nn.compact
  def __call__(self, x):
    c = self.config
    h = _dense(c, 2 * self.inner_dim, ("embed", "mlp"), name="proj")(x)
    a, gate = jnp.split(h, 2, axis=-1)
    h = a * jax.nn.gelu(gate, approximate=False)
    h = nn.with_logical_constraint(h, ("batch", None, "act_mlp"))
    return _dense(c, x.shape[-1], ("mlp", "embed"), name="out")(h)


class BasicTransformerBlock(nn.Module):
  """h [B, N, D] float32 residual stream; context [B, L, d] | None (attn2 then attends to norm2(h));
  context_mask bool [B, 1, 1, L] | None. -> [B, N, D] float32."""
  config: UNet2DConfig
  heads: int

  @nn.compact
  def __call__(self, h, context=None, context_mask=None):
    c = self.config
    dt, pdt = _dts(c)
    d = h.shape[-1]
    attn = lambda name: MultiHeadAttention(  # noqa: E731
        self.heads, d // self.heads, q_bias=False, k_bias=False, v_bias=False, out_bias=True,
        names=("to_q", "to_k", "to_v", "to_out"), dtype=dt, param_dtype=pdt, implementation=c.attention_impl,
        name=name)
    ln = lambda name: LayerNorm(1e-5, dt, pdt, name=name)  # noqa: E731
    h = h + attn("attn1")(ln("norm1")(h))[0].astype(F32)
    mask = context_mask if context is not None else None
    ctx = None if context is None else context.astype(dt)
    h = h + attn("attn2")(ln("norm2")(h), context=ctx, mask=mask)[0].astype(F32)
    h = h + GEGLUFeedForward(c, 4 * d, name="ff")(ln("norm3")(h)).astype(F32)
    return nn.with_logical_constraint(h, ("batch", None, "act_embed"))


class Transformer2DModel(nn.Module):
  """x [B, H, W, C] -> [B, H, W, C]: GroupNorm(eps 1e-6), proj_in, `num_layers` BasicTransformerBlocks over the
  H*W positions, proj_out, + x. proj_in / proj_out are per-position matmuls whether the checkpoint stores them as
  1x1 convs or Linears (use_linear_projection)."""
  config: UNet2DConfig
  heads: int
  num_layers: int = 1

  @nn.compact
  def __call__(self, x, context=None, context_mask=None):
    c = self.config
    dt, pdt = _dts(c)
    b, hh, ww, ch = x.shape
    h = GroupNorm(c.norm_num_groups, 1e-6, dt, pdt, name="norm")(x).reshape(b, hh * ww, ch)
    h = _dense(c, ch, ("embed", "mlp"), name="proj_in")(h).astype(F32)
    for i in range(self.num_layers):
      h = BasicTransformerBlock(c, self.heads, name=f"transformer_blocks_{i}")(h, context, context_mask)
    h = _dense(c, ch, ("mlp", "embed"), name="proj_out")(h.astype(dt))
    return _constrain(h.reshape(b, hh, ww, ch) + x.astype(dt))


class DownBlock(nn.Module):
  """DownBlock2D / CrossAttnDownBlock2D. x -> (h, skips: one per layer (+ the downsampled h))."""
  config: UNet2DConfig
  index: int

  def setup(self):
    c = self.config
    p = c.down_plan()[self.index]
    tr = remat(Transformer2DModel, c.remat_policy)
    self.resnets = [_resnet(c, p["cout"]) for _ in range(p["layers"])]
    if p["attn"]:
      self.attentions = [tr(c, p["heads"], p["tlayers"]) for _ in range(p["layers"])]
    if p["sample"]:
      self.downsamplers = [Downsample2D(p["cout"], c.downsample_padding, *_dts(c))]

  def __call__(self, x, temb, context=None, context_mask=None):
    p = self.config.down_plan()[self.index]
    skips = []
    for j in range(p["layers"]):
      x = self.resnets[j](x, temb)
      if p["attn"]:
        x = self.attentions[j](x, context, context_mask)
      skips.append(x)
    if p["sample"]:
      x = self.downsamplers[0](x)
      skips.append(x)
    return x, skips


class MidBlock(nn.Module):
  """UNetMidBlock2DCrossAttn: ResNet, Transformer2D, ResNet (ResNets divide by mid_block_scale_factor)."""
  config: UNet2DConfig

  def setup(self):
    c = self.config
    ch, f = c.block_out_channels[-1], c.mid_block_scale_factor
    tr = remat(Transformer2DModel, c.remat_policy)
    self.resnets = [_resnet(c, ch, f), _resnet(c, ch, f)]
    self.attentions = [tr(c, c.per_block("attention_head_dim")[-1], c.per_block("transformer_layers_per_block")[-1])]

  def __call__(self, x, temb, context=None, context_mask=None):
    x = self.resnets[0](x, temb)
    x = self.attentions[0](x, context, context_mask)
    return self.resnets[1](x, temb)


class UpBlock(nn.Module):
  """UpBlock2D / CrossAttnUpBlock2D: each ResNet reads concat(h, the last remaining skip); then upsample to
  `size` (the next skip's spatial size)."""
  config: UNet2DConfig
  index: int

  def setup(self):
    c = self.config
    p = c.up_plan()[self.index]
    tr = remat(Transformer2DModel, c.remat_policy)
    self.resnets = [_resnet(c, p["cout"]) for _ in range(p["layers"])]
    if p["attn"]:
      self.attentions = [tr(c, p["heads"], p["tlayers"]) for _ in range(p["layers"])]
    if p["sample"]:
      self.upsamplers = [Upsample2D(p["cout"], *_dts(c))]

  def __call__(self, x, skips, temb, context=None, context_mask=None, size=None):
    p = self.config.up_plan()[self.index]
    for j in range(p["layers"]):
      x = jnp.concatenate([x, skips[-1 - j].astype(x.dtype)], axis=-1)
      x = self.resnets[j](x, temb)
      if p["attn"]:
        x = self.attentions[j](x, context, context_mask)
    if p["sample"]:
      x = self.upsamplers[0](x, size)
    return x


class TimestepEmbedding(nn.Module):
  """linear_2(silu(linear_1(x))), float32."""
  config: UNet2DConfig
  features: int

  @nn.compact
  def __call__(self, x):
    c = self.config
    h = _dense(c, self.features, (None, "embed"), dtype=F32, name="linear_1")(x)
    return _dense(c, self.features, ("mlp", "embed"), dtype=F32, name="linear_2")(jax.nn.silu(h))


class UNet2DCondition(nn.Module):
  """diffusers UNet2DConditionModel; see the module docstring for shapes and layout."""
  config: UNet2DConfig

  def setup(self):
    c = self.config
    dt, pdt = _dts(c)
    n = len(c.block_out_channels)
    self.conv_in = _conv(c, c.block_out_channels[0], c.conv_in_kernel)
    self.time_embedding = TimestepEmbedding(c, c.time_embed_dim)
    if c.class_embed_type == "simple_projection":
      self.class_embedding = _dense(c, c.time_embed_dim, (None, "embed"), dtype=F32)
    self.down_blocks = [DownBlock(c, i) for i in range(n)]
    if c.mid_block_type is not None:
      self.mid_block = MidBlock(c)
    self.up_blocks = [UpBlock(c, i) for i in range(n)]
    self.conv_norm_out = GroupNorm(c.norm_num_groups, c.norm_eps, dt, pdt)
    self.conv_out = _conv(c, c.out_channels, c.conv_out_kernel)

  def _check_labels(self, class_labels, batch):
    c = self.config
    if c.class_embed_type is None:
      if class_labels is not None:
        raise ConfigError("class_labels given, but the model has no class embedding (class_embed_type is None)")
      return None
    want = (batch, c.projection_class_embeddings_input_dim)
    if class_labels is None:
      raise ConfigError(f"class_embed_type {c.class_embed_type!r} needs class_labels [B, "
                        f"projection_class_embeddings_input_dim] = {list(want)}")
    class_labels = jnp.asarray(class_labels)
    if class_labels.shape != want:
      raise ConfigError(f"class_labels has shape {class_labels.shape}; expected [B, "
                        f"projection_class_embeddings_input_dim] = {list(want)}")
    return class_labels

  def embed(self, timesteps, class_labels=None, batch: int = 1):
    """timesteps [] | [B] (and class_labels [B, P]) -> the blocks' embedding [B, blocks_temb_dim] float32."""
    c = self.config
    t = jnp.asarray(timesteps)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, (batch,))
    if t.ndim != 1 or t.shape[0] != batch:
      raise ConfigError(f"timesteps has shape {t.shape}; expected a scalar or [B] with B={batch}")
    class_labels = self._check_labels(class_labels, batch)
    emb = self.time_embedding(timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift))
    if class_labels is None:
      return emb
    cls = self.class_embedding(class_labels.astype(F32))
    return jnp.concatenate([emb, cls], axis=-1) if c.class_embeddings_concat else emb + cls

  def _check_context(self, context, mask, batch):
    c = self.config
    if not c.attention_sites():
      return None, None
    if context is None:
      if not c.self_attn2:
        raise ConfigError(f"encoder_hidden_states [B, L, {c.context_dim}] are required: cross_attention_dim "
                          f"{c.cross_attention_dim} differs from the attention blocks' channels, so attn2 cannot "
                          "attend to the block itself")
      if mask is not None:
        raise ConfigError("encoder_attention_mask given without encoder_hidden_states")
      return None, None
    context = jnp.asarray(context)
    if context.ndim != 3 or context.shape[0] != batch or context.shape[-1] != c.context_dim:
      raise ConfigError(f"encoder_hidden_states has shape {context.shape}; expected [B, L, cross_attention_dim] with "
                        f"B={batch} and cross_attention_dim={c.context_dim or c.cross_attention_dim}")
    if mask is not None:
      mask = jnp.asarray(mask)
      if mask.shape != context.shape[:2]:
        raise ConfigError(f"encoder_attention_mask has shape {mask.shape}; expected [B, L] = {context.shape[:2]}")
      mask = mask.astype(bool)[:, None, None, :]
    return context, mask

  def __call__(self, sample, timesteps, encoder_hidden_states=None, class_labels=None, encoder_attention_mask=None):
    c = self.config
    dt = jnp.dtype(c.dtype)
    if sample.ndim != 4 or sample.shape[-1] != c.in_channels:
      raise ConfigError(f"sample has shape {sample.shape}; expected [B, H, W, in_channels={c.in_channels}] "
                        "(channels last)")
    b = sample.shape[0]
    context, mask = self._check_context(encoder_hidden_states, encoder_attention_mask, b)
    temb = self.embed(timesteps, class_labels, b)
    x = sample.astype(F32)
    if c.center_input_sample:
      x = 2 * x - 1.0
    x = _constrain(self.conv_in(x.astype(dt)))
    skips = [x]
    for block in self.down_blocks:
      x, s = block(x, temb, context, mask)
      skips += s
    if c.mid_block_type is not None:
      x = self.mid_block(x, temb, context, mask)
    for i, block in enumerate(self.up_blocks):
      k = c.up_plan()[i]["layers"]
      mine, skips = skips[-k:], skips[:-k]
      size = tuple(skips[-1].shape[1:3]) if skips else None
      x = block(x, mine, temb, context, mask, size)
    x = jax.nn.silu(self.conv_norm_out(x))
    return self.conv_out(x).astype(F32)
