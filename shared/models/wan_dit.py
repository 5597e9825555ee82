"""Wan2.x video DiT (diffusers `WanTransformer3DModel`), built from reusable stages for UniTalking.

  video [B, T, H, W, C_in] --patch_embedding (Conv3d, stride = patch)--> tokens h [B, L, D], L = t*h*w
  timestep [B] (Wan2.1 / 2.2 T2V) or [B, L] (Wan2.2 TI2V: one timestep per token)
    --WanConditionEmbedder.time--> temb [B, L|1, D] (f32), temb_proj [B, L|1, 6, D] (f32)
  text [B, S, text_dim] --text_embedder (Linear, gelu-tanh, Linear)--> context [B, S, D]
  (optional, Wan2.1 I2V) image [B, S_img, image_dim] --image_embedder--> image context [B, S_img, D]
  N x WanBlock (nn.scan over "layers", optional remat):
      mod = scale_shift_table [6, D] + temb_proj        (shift, scale, gate, c_shift, c_scale, c_gate)
      h += gate * attn1(LN(h) * (1 + scale) + shift)    self-attention, RMSNorm(q/k across heads), 3-axis RoPE
      h += attn2(norm2(h), context[, image context])   cross-attention (norm2: affine LN if cross_attn_norm)
      h += c_gate * ffn(LN(h) * (1 + c_scale) + c_shift)   Linear, gelu-tanh, Linear
  head: LN(h) * (1 + scale) + shift (scale_shift_table [2, D] + temb) -> proj_out -> unpatchify
      -> [B, T, H, W, C_out] float32.

Reuse (UniTalking's MM-DiT runs ONE joint attention over video + audio tokens): a WanBlock exposes
its stages, each callable from a parent module (`block.modulation(temb_proj)`, `block.pre_attention(h, mod)`,
`block.qkv(x, angles)` -> q, k, v [B, L, H, Dh], `block.post_attention(h, o, mod, context, ...)`), so a
parent calls `shared.kernels.attention` once on concatenated q/k/v of two blocks and hands each block
its slice of the output (tests/models/test_wan_dit.py::test_block_stages_joint_attention does exactly
this). The cross-attention's extra K/V (`image_context` + `image_mask`, params add_k_proj/add_v_proj/
norm_added_k when added_kv_proj_dim is set) is the "second K/V summed with the text attention" that
UniTalking uses for reference audio. `WanConditionEmbedder` (time / text / image methods), `rope_angles`
(3-axis RoPE over shared.nn.rope; audio can pass positions with fixed h = w and a time `scales`),
`WanDiT.patchify` / `head` / `unpatchify` are reusable on their own. A parent that keeps its video stream's
params laid out like WanDiT's (patch_embedding, condition_embedder, blocks, proj_out, scale_shift_table)
can load Wan checkpoints with shared.weights.wan_dit_family.import_wan_dit. Param names follow diffusers' module tree (name table:
shared/weights/wan_dit_family.py); params float32, compute `dtype`; LayerNorms, RMSNorms,
modulation and the residual stream in float32.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared import kernels
from shared.errors import ConfigError
from shared.nn import rope
from shared.nn.linear import Dense
from shared.nn.mlp import MLP
from shared.nn.norms import LayerNorm, RMSNorm
from shared.nn.positions import timestep_embedding
from shared.nn.remat import ATTENTION_OUT, RESIDUAL, check_remat_policy, checkpoint_name, remat

F32 = jnp.float32
TORCH_LINEAR_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class WanDiTConfig:
  """Field names are diffusers' WanTransformer3DModel config keys (plus our precision/runtime fields)."""
  patch_size: tuple = (1, 2, 2)
  num_attention_heads: int = 40
  attention_head_dim: int = 128
  in_channels: int = 16
  out_channels: int | None = 16
  text_dim: int = 4096
  freq_dim: int = 256
  ffn_dim: int = 13824
  num_layers: int = 40
  cross_attn_norm: bool = True
  qk_norm: str | None = "rms_norm_across_heads"   # diffusers always applies q/k RMSNorm; kept for config.json
  eps: float = 1e-6
  image_dim: int | None = None                    # Wan2.1 I2V CLIP image features (1280)
  added_kv_proj_dim: int | None = None            # Wan2.1 I2V: image K/V in cross-attention
  rope_max_seq_len: int = 1024
  pos_embed_seq_len: int | None = None            # Wan2.1 FLF2V image position embedding
  rope_theta: float = 10000.0
  dtype: str = "float32"                          # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"
  # original-Wan config.json keys not modelled here (model_type, text_len, window_size, qk_norm) as sorted
  # (key, JSON text) pairs; written back by the original-layout export (shared/weights/wan_dit_family);
  # metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
    if len(self.patch_size) != 3:
      raise ConfigError(f"patch_size {self.patch_size} must have 3 entries (t, h, w)")
    if self.out_channels is None:
      object.__setattr__(self, "out_channels", self.in_channels)
    check_remat_policy(self.remat_policy)
    if self.attention_head_dim % 2 or min(self.rope_dims) <= 0:
      raise ConfigError(f"attention_head_dim {self.attention_head_dim} must be even and >= 6 (t/h/w RoPE split)")
    if (self.image_dim is None) != (self.added_kv_proj_dim is None):
      raise ConfigError(f"image_dim ({self.image_dim}) and added_kv_proj_dim ({self.added_kv_proj_dim}) must be "
                        "given together (Wan2.1 I2V) or both left None")

  def replace(self, **kw) -> "WanDiTConfig":
    return dataclasses.replace(self, **kw)

  @property
  def dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def rope_dims(self) -> tuple[int, int, int]:
    """Channels of each head rotated by the t, h, w positions (diffusers: 128 -> (44, 42, 42))."""
    hw = 2 * (self.attention_head_dim // 6)
    return (self.attention_head_dim - 2 * hw, hw, hw)


def _dts(c: WanDiTConfig):
  return jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)


def layer_norm(x, eps: float):
  """Parameter-free LayerNorm in float32: x [..., D] -> [..., D] float32."""
  x = x.astype(F32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def timestep_sinusoid(t, dim: int, max_period: float = 10000.0):
  """diffusers Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0): t [...] -> [..., dim] f32 (cos, sin);
  shared.nn.positions.timestep_embedding with those settings."""
  return timestep_embedding(t, dim, flip_sin_to_cos=True, freq_shift=0.0, max_period=max_period)


def grid_positions(t: int, h: int, w: int) -> np.ndarray:
  """Token (frame, row, column) coordinates in patchified raster order: [t*h*w, 3] int32."""
  g = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), axis=-1)
  return g.reshape(-1, 3).astype(np.int32)


def rope_angles(positions, config: WanDiTConfig, scales=None):
  """positions [B, L, 3] (t, h, w; int or float) -> angles [B, L, head_dim // 2] f32 for adjacent-pair
  rotation (shared.nn.rope.apply_rotary(..., interleaved=True)). `scales`: per-axis position multipliers."""
  return rope.multi_axis_angles(positions, config.rope_dims, config.rope_theta, scales)


def _dense(features, axes, c):
  dt, pdt = _dts(c)
  return Dense(features, True, axes, dt, pdt, kernel_init=TORCH_LINEAR_INIT)


class WanAttention(nn.Module):
  """diffusers WanAttention: to_q/to_k/to_v/to_out (+ add_k_proj/add_v_proj/norm_added_k for I2V cross-attn).

  qkv(x [B, L, D], context [B, S, D] | None, angles [B, L, Dh/2] | None) -> q [B, L, H, Dh], k, v [B, S, H, Dh]
  out(o [B, L, H, Dh]) -> [B, L, D]."""
  config: WanDiTConfig
  cross: bool = False

  def setup(self):
    c = self.config
    dt, pdt = _dts(c)
    self.to_q = _dense(c.dim, ("embed", "heads"), c)
    self.to_k = _dense(c.dim, ("embed", "heads"), c)
    self.to_v = _dense(c.dim, ("embed", "heads"), c)
    self.to_out = _dense(c.dim, ("heads", "embed"), c)
    self.norm_q = RMSNorm(c.eps, dt, pdt)
    self.norm_k = RMSNorm(c.eps, dt, pdt)
    if self.cross and c.added_kv_proj_dim is not None:
      self.add_k_proj = _dense(c.dim, ("embed", "heads"), c)
      self.add_v_proj = _dense(c.dim, ("embed", "heads"), c)
      self.norm_added_k = RMSNorm(c.eps, dt, pdt)

  def _heads(self, x):
    c = self.config
    return x.reshape(x.shape[:2] + (c.num_attention_heads, c.attention_head_dim))

  def qkv(self, x, context=None, angles=None):
    dt = jnp.dtype(self.config.dtype)
    src = x if context is None else context.astype(dt)
    q = self._heads(self.norm_q(self.to_q(x.astype(dt))))
    k = self._heads(self.norm_k(self.to_k(src)))
    v = self._heads(self.to_v(src))
    if angles is not None:
      q = rope.apply_rotary(q, angles, interleaved=True)
      k = rope.apply_rotary(k, angles, interleaved=True)
    return q, k, v

  def image_kv(self, image_context):
    """image_context [B, S_img, D] -> k, v [B, S_img, H, Dh] (Wan2.1 I2V)."""
    img = image_context.astype(jnp.dtype(self.config.dtype))
    return self._heads(self.norm_added_k(self.add_k_proj(img))), self._heads(self.add_v_proj(img))

  def out(self, o):
    return self.to_out(o.reshape(o.shape[:2] + (-1,)).astype(jnp.dtype(self.config.dtype)))

  def __call__(self, x, context=None, *, angles=None, mask=None, image_context=None, image_mask=None):
    """Self-attention (context None, with angles) or cross-attention; mask / image_mask: bool broadcastable
    to [B, H, L, S] / [B, H, L, S_img] (True = may attend). The image K/V (Wan2.1 I2V; UniTalking's
    reference-audio K/V) attend separately and their output is added before to_out. -> [B, L, D]."""
    impl = self.config.attention_impl
    q, k, v = self.qkv(x, context, angles)
    o = kernels.attention(q, k, v, mask=mask, implementation=impl)
    if image_context is not None:
      ki, vi = self.image_kv(image_context)
      o = o + kernels.attention(q, ki, vi, mask=image_mask, implementation=impl)
    return self.out(checkpoint_name(o, ATTENTION_OUT))


class WanBlock(nn.Module):
  """One Wan transformer block with its stages exposed (see the module docstring).

  h [B, L, D] (residual stream, float32), context [B, S, D], temb_proj [B, L|1, 6, D],
  angles [B, L, Dh/2]; context_mask [B, S] bool (True = real token; diffusers/Wan attend to all);
  image_context [B, S_img, D] with image_mask [B, S_img] (needs added_kv_proj_dim)."""
  config: WanDiTConfig

  def setup(self):
    c = self.config
    self.attn1 = WanAttention(c, cross=False)
    self.attn2 = WanAttention(c, cross=True)
    if c.cross_attn_norm:
      self.norm2 = LayerNorm(c.eps, F32, jnp.dtype(c.param_dtype))
    dt, pdt = _dts(c)
    self.ffn = MLP(c.ffn_dim, "gelu_pytorch_tanh", True, dtype=dt, param_dtype=pdt)
    self.scale_shift_table = self.param(
        "scale_shift_table",
        nn.with_logical_partitioning(lambda k, s, d: jax.random.normal(k, s, d) / math.sqrt(c.dim), (None, "embed")),
        (6, c.dim), pdt)

  def modulation(self, temb_proj):
    """temb_proj [B, L|1, 6, D] -> (shift, scale, gate, c_shift, c_scale, c_gate), each [B, L|1, D] f32."""
    m = self.scale_shift_table.astype(F32) + temb_proj.astype(F32)
    return tuple(m[..., i, :] for i in range(6))

  def pre_attention(self, h, mod):
    """h [B, L, D] -> modulated LN(h) [B, L, D] in the compute dtype (the self-attention input)."""
    shift, scale = mod[0], mod[1]
    return (layer_norm(h, self.config.eps) * (1 + scale) + shift).astype(jnp.dtype(self.config.dtype))

  def qkv(self, x, angles):
    """x [B, L, D] -> q, k, v [B, L, H, Dh] (q/k RMSNorm'd and rotated)."""
    return self.attn1.qkv(x, None, angles)

  def post_attention(self, h, o, mod, context, context_mask=None, image_context=None, image_mask=None):
    """h [B, L, D] residual, o [B, L, H, Dh] self-attention output -> new h [B, L, D] f32
    (gated attn1 output, cross-attention, gated FFN)."""
    o = checkpoint_name(o, ATTENTION_OUT)
    h = checkpoint_name(h.astype(F32) + self.attn1.out(o).astype(F32) * mod[2], RESIDUAL)
    return self.cross_and_ffn(h, mod, context, context_mask, image_context, image_mask)

  def cross_and_ffn(self, h, mod, context, context_mask=None, image_context=None, image_mask=None):
    c = self.config
    x = self.norm2(h) if c.cross_attn_norm else h
    keys = lambda m: None if m is None else jnp.asarray(m, bool)[:, None, None, :]  # noqa: E731
    h = h + self.attn2(x.astype(jnp.dtype(c.dtype)), context, mask=keys(context_mask), image_context=image_context,
                       image_mask=keys(image_mask)).astype(F32)
    h = checkpoint_name(h, RESIDUAL)
    x = (layer_norm(h, c.eps) * (1 + mod[4]) + mod[3]).astype(jnp.dtype(c.dtype))
    h = checkpoint_name(h + self.ffn(x).astype(F32) * mod[5], RESIDUAL)
    return nn.with_logical_constraint(h, ("batch", "length", "act_embed"))

  def __call__(self, h, context, temb_proj, angles, context_mask=None, image_context=None, image_mask=None):
    mod = self.modulation(temb_proj)
    q, k, v = self.qkv(self.pre_attention(h, mod), angles)
    o = kernels.attention(q, k, v, implementation=self.config.attention_impl)
    return self.post_attention(h, o, mod, context, context_mask, image_context, image_mask)


class _ScannedBlock(WanBlock):
  """WanBlock with nn.scan's (carry, output) signature."""

  def __call__(self, h, context, temb_proj, angles, context_mask=None, image_context=None):
    return super().__call__(h, context, temb_proj, angles, context_mask, image_context), None


class WanConditionEmbedder(nn.Module):
  """diffusers WanTimeTextImageEmbedding: time(t) -> (temb [..., D] f32, temb_proj [..., 6, D] f32);
  text(x [B, S, text_dim]) -> [B, S, D]; image(x [B, S_img, image_dim]) -> [B, S_img, D]."""
  config: WanDiTConfig

  def setup(self):
    c = self.config
    dt, pdt = _dts(c)
    t32 = dict(dtype=F32, param_dtype=pdt, kernel_init=TORCH_LINEAR_INIT)
    self.time_embedder_linear_1 = Dense(c.dim, True, (None, "embed"), **t32)
    self.time_embedder_linear_2 = Dense(c.dim, True, ("mlp", "embed"), **t32)
    self.time_proj = _dense(6 * c.dim, ("embed", "mlp"), c)
    self.text_embedder_linear_1 = _dense(c.dim, (None, "embed"), c)
    self.text_embedder_linear_2 = _dense(c.dim, ("mlp", "embed"), c)
    if c.image_dim is not None:
      self.image_norm1 = LayerNorm(1e-5, F32, pdt)
      self.image_ff_1 = _dense(c.image_dim, (None, "mlp"), c)
      self.image_ff_2 = _dense(c.dim, ("mlp", "embed"), c)
      self.image_norm2 = LayerNorm(1e-5, F32, pdt)
      if c.pos_embed_seq_len is not None:
        self.image_pos_embed = self.param("image_pos_embed", nn.with_logical_partitioning(
            nn.initializers.zeros, (None, None, None)), (1, c.pos_embed_seq_len, c.image_dim), pdt)

  def time(self, t):
    c = self.config
    temb = self.time_embedder_linear_2(jax.nn.silu(self.time_embedder_linear_1(timestep_sinusoid(t, c.freq_dim))))
    proj = self.time_proj(jax.nn.silu(temb).astype(jnp.dtype(c.dtype))).astype(F32)
    return temb.astype(F32), proj.reshape(proj.shape[:-1] + (6, c.dim))

  def text(self, x):
    h = self.text_embedder_linear_1(x.astype(jnp.dtype(self.config.dtype)))
    return self.text_embedder_linear_2(jax.nn.gelu(h, approximate=True))

  def image(self, x):
    c = self.config
    if c.image_dim is None:
      raise ConfigError("image embeddings given, but the model has no image_embedder (config.image_dim is None)")
    if c.pos_embed_seq_len is not None:
      x = x.reshape(-1, 2 * x.shape[1], x.shape[2]) + self.image_pos_embed
    h = self.image_ff_1(self.image_norm1(x).astype(jnp.dtype(c.dtype)))
    h = self.image_ff_2(jax.nn.gelu(h, approximate=False))
    return self.image_norm2(h).astype(jnp.dtype(c.dtype))

  def __call__(self, t, text, image=None):
    temb, proj = self.time(t)
    return temb, proj, self.text(text), (None if image is None else self.image(image))


class PatchEmbed(nn.Module):
  """Conv3d with kernel = stride = patch as one matmul: x [B, T, H, W, C] -> [B, t, h, w, D].
  kernel [pt, ph, pw, C, D] (torch weight [D, C, pt, ph, pw]), bias [D]."""
  config: WanDiTConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dt, pdt = _dts(c)
    pt, ph, pw = c.patch_size
    b, T, H, W, C = x.shape
    if T % pt or H % ph or W % pw:
      raise ConfigError(f"video latents {x.shape} [B, T, H, W, C]: T, H, W must be multiples of patch {c.patch_size}")
    kernel = self.param("kernel", nn.with_logical_partitioning(
        TORCH_LINEAR_INIT, ("conv_kernel", None, None, "conv_in", "embed")),  # names must be unique
        (pt, ph, pw, C, c.dim), pdt)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (c.dim,), pdt)
    x = x.reshape(b, T // pt, pt, H // ph, ph, W // pw, pw, C).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = x.reshape(b, T // pt, H // ph, W // pw, pt * ph * pw * C).astype(dt)
    return jnp.dot(x, kernel.reshape(-1, c.dim).astype(dt)) + bias.astype(dt)


class WanDiT(nn.Module):
  """WanTransformer3DModel. __call__(video [B, T, H, W, C_in], timestep [B] | [B, L], text [B, S, text_dim],
  image [B, S_img, image_dim] | None, context_mask [B, S] | None, positions [B, L, 3] | None)
  -> velocity [B, T, H, W, C_out] float32. L = (T/pt)(H/ph)(W/pw) tokens in (t, h, w) raster order."""
  config: WanDiTConfig

  def setup(self):
    c = self.config
    dt, pdt = _dts(c)
    self.patch_embedding = PatchEmbed(c)
    self.condition_embedder = WanConditionEmbedder(c)
    block = remat(_ScannedBlock, c.remat_policy)
    self.blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                          in_axes=(nn.broadcast,) * 5, length=c.num_layers,
                          metadata_params={nn.PARTITION_NAME: "layers"})(c)
    self.proj_out = _dense(c.out_channels * math.prod(c.patch_size), ("embed", "mlp"), c)
    self.scale_shift_table = self.param(
        "scale_shift_table",
        nn.with_logical_partitioning(lambda k, s, d: jax.random.normal(k, s, d) / math.sqrt(c.dim), (None, "embed")),
        (2, c.dim), pdt)

  def patchify(self, video):
    """video [B, T, H, W, C_in] -> (tokens [B, L, D] f32, grid (t, h, w))."""
    x = self.patch_embedding(video)
    b, t, h, w, d = x.shape
    return x.reshape(b, t * h * w, d).astype(F32), (t, h, w)

  def head(self, h, temb):
    """h [B, L, D], temb [B, L|1, D] -> [B, L, C_out * pt * ph * pw] float32."""
    m = self.scale_shift_table.astype(F32) + temb.astype(F32)[..., None, :]
    x = layer_norm(h, self.config.eps) * (1 + m[..., 1, :]) + m[..., 0, :]
    return self.proj_out(x.astype(jnp.dtype(self.config.dtype))).astype(F32)

  def unpatchify(self, x, grid):
    """x [B, L, C_out * pt * ph * pw] -> [B, T, H, W, C_out]."""
    c = self.config
    (t, h, w), (pt, ph, pw) = grid, c.patch_size
    b = x.shape[0]
    x = x.reshape(b, t, h, w, pt, ph, pw, c.out_channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, t * pt, h * ph, w * pw, c.out_channels)

  def __call__(self, video, timestep, text, image=None, context_mask=None, positions=None):
    c = self.config
    h, grid = self.patchify(video)
    b, l, _ = h.shape
    timestep = jnp.asarray(timestep)
    if timestep.ndim == 0:
      timestep = jnp.broadcast_to(timestep, (b,))
    if timestep.ndim == 1:
      timestep = timestep[:, None]
    if timestep.ndim != 2 or timestep.shape[0] != b or timestep.shape[1] not in (1, l):
      raise ConfigError(f"timestep has shape {timestep.shape}; expected [B] or [B, L] with B={b}, L={l} tokens")
    temb, temb_proj = self.condition_embedder.time(timestep)
    context = self.condition_embedder.text(text)
    image_context = None if image is None else self.condition_embedder.image(image)
    if positions is None:
      positions = jnp.broadcast_to(jnp.asarray(grid_positions(*grid))[None], (b, l, 3))
    angles = rope_angles(positions, c)
    h = nn.with_logical_constraint(h, ("batch", "length", "act_embed"))
    h, _ = self.blocks(h, context, temb_proj, angles, context_mask, image_context)
    return self.unpatchify(self.head(h, temb), grid)
