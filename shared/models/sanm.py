"""FunASR SANM family: SANMEncoder, the Paraformer SANM decoder (run autoregressively) and the CTC head.

Encoder (funasr.models.sanm.encoder.SANMEncoder, pre-LN, every LayerNorm eps 1e-12):
  x [B, T, Din] * sqrt(D)  -> + sinusoid(positions 1..T, depth Din, concat[sin, cos])   (input_layer "pe")
  encoders0 (Din -> D; no attention residual when Din != D), encoders.0..N-2 (D -> D), after_norm
  layer:  h = x + SANMAttn(norm1(x)) ;  h = h + w_2(relu(w_1(norm2(h))))
  SANMAttn(y): q, k, v = split(linear_q_k_v(y)) ; out = linear_out(MHA(q, k, v, key mask))
               + FSMN(v),   FSMN(v) = (dwconv(v*m) + v*m) * m     (m: frame mask, conv padding below)
Decoder (funasr.models.paraformer.decoder.ParaformerSANMDecoder) plus its `embed.0` token table:
  decoders.i  (i < att_layer_num):  t = ffn(norm1(x)); x = x + FSMN(norm2(t)); x = x + src_attn(norm3(x), memory)
  decoders2.j (num_blocks - att_layer_num, FSMN always centred):  t = ffn(norm1(x)); x = x + FSMN(norm2(t))
  decoders3.0:  x = ffn(norm1(x))   (no residual);   logits = output_layer(after_norm(x))
  ffn(y) = w_2(LayerNorm_norm(relu(w_1(y))))   (w_2 without bias);  src_attn: linear_q, linear_k_v, linear_out
CTC head (funasr.models.ctc.ctc.CTC): log_softmax(ctc_lo(h)) in float32.

FSMN padding (FunASR, both MultiHeadedAttentionSANM and MultiHeadedAttentionSANMDecoder):
  left = (k-1)//2 + (sanm_shfit if sanm_shfit > 0 else 0),  right = k-1-left.
ParaformerSANMDecoder turns sanm_shfit=None into (k-1)//2, i.e. left = 2*((k-1)//2) = k-1 for odd k: the
causal pad (k-1, 0) that autoregressive decoding needs (`SANMDecoderConfig.causal`); decoders2 always use
shift 0 (centred). The depthwise conv runs through shared.kernels.temporal_conv.

Incremental decoding (`SANMDecoder.init_cache` / `step`, needs config.causal): cache =
  {"fsmn":  [A, N, k-1, D]   last k-1 FSMN inputs (norm2 outputs) of each `decoders` layer (zeros at start),
   "fsmn2": [A2, N, k-1, D]  the same for decoders2 (present when A2 > 0; causal only for k == 1),
   "cross_k", "cross_v": [A, N, S, H, D/H]  src-attention keys/values of the memory (computed once),
   "memory_mask": [N, S] bool}
A = att_layer_num, A2 = num_blocks - att_layer_num. Layer stacks are nn.scan'ed (params [layers, ...]).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError, DataError
from shared.kernels import attention as attention_kernel
from shared.kernels.temporal_conv import fsmn_padding, temporal_conv
from shared.nn.linear import Dense, Embed
from shared.nn.norms import LayerNorm
from shared.nn.remat import ATTENTION_OUT, RESIDUAL, check_remat_policy, checkpoint_name, remat
from shared.nn.scan import scan_layers

EPS = 1e-12
INPUT_LAYERS = ("pe", "linear", None)
_ACT = ("batch", None, "act_embed")


def sanm_left_padding(kernel_size: int, sanm_shfit: int) -> int:
  """FunASR's FSMN left pad: (k-1)//2 plus sanm_shfit when it is positive (a shift <= 0 adds nothing)."""
  return fsmn_padding(kernel_size, max(int(sanm_shfit), 0))[0]


def _check_fsmn(kernel_size, left, key):
  if kernel_size < 1:
    raise ConfigError(f"{key}: kernel_size {kernel_size} must be >= 1")
  if left > kernel_size - 1:
    raise ConfigError(f"{key}: sanm_shfit gives a left pad of {left} > kernel_size - 1 = {kernel_size - 1} "
                      "(a negative right pad; FunASR would crop the sequence)")


@dataclasses.dataclass(frozen=True)
class SANMEncoderConfig:
  """funasr SANMEncoder(input_size, output_size, attention_heads, linear_units, num_blocks, input_layer,
  kernel_size, sanm_shfit) with normalize_before=True, selfattention_layer_type "sanm", no dropout."""
  input_size: int = 560
  output_size: int = 256
  attention_heads: int = 4
  linear_units: int = 2048
  num_blocks: int = 6
  input_layer: str | None = "pe"     # "pe" | "linear" (needs input_size == output_size) | None (the same)
  kernel_size: int = 11
  sanm_shfit: int = 0
  dtype: str = "float32"             # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"
  conv_impl: str = "auto"            # shared.kernels.temporal_conv implementation

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    if self.input_layer not in INPUT_LAYERS:
      raise ConfigError(f"encoder input_layer {self.input_layer!r}: expected one of {INPUT_LAYERS}")
    if self.input_layer != "pe" and self.input_size != self.output_size:
      raise ConfigError(f"encoder input_layer {self.input_layer!r} needs input_size == output_size (FunASR builds "
                        f"encoders0 on input_size); got {self.input_size} != {self.output_size}")
    if self.input_layer == "pe" and (self.input_size % 2 or self.input_size < 4):
      raise ConfigError(f"encoder input_layer 'pe' needs an even input_size >= 4, got {self.input_size}")
    if self.output_size % self.attention_heads:
      raise ConfigError(f"encoder output_size {self.output_size} is not a multiple of attention_heads "
                        f"{self.attention_heads}")
    if self.num_blocks < 1:
      raise ConfigError(f"encoder num_blocks {self.num_blocks} must be >= 1")
    _check_fsmn(self.kernel_size, self.fsmn_left, "encoder_conf")

  @property
  def fsmn_left(self) -> int:
    return sanm_left_padding(self.kernel_size, self.sanm_shfit)

  def replace(self, **kw) -> "SANMEncoderConfig":
    return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class SANMDecoderConfig:
  """funasr ParaformerSANMDecoder(vocab_size, encoder_output_size, attention_heads, linear_units, num_blocks,
  att_layer_num, kernel_size, sanm_shfit) with its `embed.0` token table; no dropout.
  sanm_shfit=None is FunASR's (k-1)//2: the causal pad for odd kernel_size."""
  vocab_size: int = 4470
  encoder_output_size: int = 256     # = attention dim D
  attention_heads: int = 4
  linear_units: int = 2048
  num_blocks: int = 6
  att_layer_num: int = 6
  kernel_size: int = 21
  sanm_shfit: int | None = 0
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat_policy: str = "none"
  attention_impl: str = "auto"
  conv_impl: str = "auto"

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    if self.encoder_output_size % self.attention_heads:
      raise ConfigError(f"decoder encoder_output_size {self.encoder_output_size} is not a multiple of "
                        f"attention_heads {self.attention_heads}")
    if not 0 <= self.att_layer_num <= self.num_blocks:
      raise ConfigError(f"decoder att_layer_num {self.att_layer_num} must lie in [0, num_blocks={self.num_blocks}]")
    _check_fsmn(self.kernel_size, self.fsmn_left, "decoder_conf")

  @property
  def fsmn_left(self) -> int:
    """Left pad of the `decoders` FSMN (ParaformerSANMDecoder: sanm_shfit None -> (k-1)//2)."""
    shift = (self.kernel_size - 1) // 2 if self.sanm_shfit is None else self.sanm_shfit
    return sanm_left_padding(self.kernel_size, shift)

  @property
  def fsmn2_left(self) -> int:
    """decoders2 are built with sanm_shfit=0 whatever the config says."""
    return sanm_left_padding(self.kernel_size, 0)

  @property
  def causal(self) -> bool:
    """Every FSMN pads (k-1, 0): position t sees no later position (what `step` requires)."""
    k = self.kernel_size
    return self.fsmn_left == k - 1 and (self.num_blocks == self.att_layer_num or self.fsmn2_left == k - 1)

  def replace(self, **kw) -> "SANMDecoderConfig":
    return dataclasses.replace(self, **kw)


def _kw(c):
  return dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))


def _ln(c, name):
  return LayerNorm(EPS, **_kw(c), name=name)


class FSMNBlock(nn.Module):
  """FunASR's fsmn_block: depthwise Conv1d(D, D, k, groups=D, no bias) + residual, masked before and after.
  kernel [k, D] (torch weight [D, 1, k])."""
  features: int
  kernel_size: int
  left: int
  implementation: str = "auto"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")   # torch Conv1d default bound
    self.kernel = self.param("kernel", nn.with_logical_partitioning(init, ("conv_kernel", "norm")),
                             (self.kernel_size, self.features), self.param_dtype)

  def __call__(self, v, mask):
    """v [B, T, D], mask [B, T] bool -> (conv(v*m) + v*m) * m  [B, T, D]."""
    m = mask[..., None].astype(self.dtype)
    v = v.astype(self.dtype) * m
    y = temporal_conv(v, self.kernel.astype(self.dtype), left=self.left, residual=True,
                      implementation=self.implementation)
    return y * m

  def step(self, v, hist):
    """Causal (left = k-1) one-position update: v [N, 1, D], hist [N, k-1, D] (the previous k-1 inputs)
    -> (out [N, 1, D], hist [N, k-1, D])."""
    window = jnp.concatenate([hist.astype(self.dtype), v.astype(self.dtype)], axis=1)   # [N, k, D]
    y = jnp.einsum("nkd,kd->nd", window, self.kernel.astype(self.dtype), preferred_element_type=jnp.float32)
    y = y + v[:, 0].astype(jnp.float32)
    return y[:, None].astype(self.dtype), window[:, 1:]


def _heads(x, h):
  """[B, L, H*Dh] -> [B, L, H, Dh]."""
  return x.reshape(x.shape[:2] + (h, x.shape[-1] // h))


class SANMAttention(nn.Module):
  """MultiHeadedAttentionSANM: linear_q_k_v [Din -> 3D], key-masked MHA -> linear_out, plus FSMN(v)."""
  config: SANMEncoderConfig

  def setup(self):
    c = self.config
    d = c.output_size
    self.linear_q_k_v = Dense(3 * d, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c))
    self.linear_out = Dense(d, use_bias=True, kernel_axes=("mlp", "embed"), **_kw(c))
    self.fsmn_block = FSMNBlock(d, c.kernel_size, c.fsmn_left, c.conv_impl, **_kw(c))

  def __call__(self, x, mask):
    """x [B, T, Din], mask [B, T] bool -> [B, T, D]."""
    c = self.config
    q, k, v = jnp.split(self.linear_q_k_v(x), 3, axis=-1)
    fsmn = self.fsmn_block(v, mask)
    h = c.attention_heads
    a = attention_kernel(_heads(q, h), _heads(k, h), _heads(v, h), mask=mask[:, None, None, :],
                         implementation=c.attention_impl)
    a = checkpoint_name(a.reshape(x.shape[:2] + (-1,)), ATTENTION_OUT)
    return self.linear_out(a) + fsmn


class EncoderFFN(nn.Module):
  """PositionwiseFeedForward: w_2(relu(w_1(x))), both with bias. [B, T, D] -> [B, T, D]."""
  config: SANMEncoderConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    y = Dense(c.linear_units, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c), name="w_1")(x)
    return Dense(c.output_size, use_bias=True, kernel_axes=("mlp", "embed"), **_kw(c), name="w_2")(jax.nn.relu(y))


class EncoderLayer(nn.Module):
  """EncoderLayerSANM (pre-LN). x [B, T, in_size], mask [B, T] bool -> ([B, T, D], None)."""
  config: SANMEncoderConfig
  in_size: int

  @nn.compact
  def __call__(self, x, mask, deterministic: bool = True):
    c = self.config
    a = SANMAttention(c, name="self_attn")(_ln(c, "norm1")(x), mask)
    x = checkpoint_name(x + a if self.in_size == c.output_size else a, RESIDUAL)
    x = x + EncoderFFN(c, name="feed_forward")(_ln(c, "norm2")(x))
    return nn.with_logical_constraint(checkpoint_name(x, RESIDUAL), _ACT), None


def sinusoid_positions(length: int, depth: int) -> jnp.ndarray:
  """FunASR SinusoidalPositionEncoder: positions 1..length, concat[sin, cos] -> [length, depth] float32."""
  inc = math.log(10000.0) / (depth / 2 - 1)
  inv = jnp.exp(jnp.arange(depth // 2, dtype=jnp.float32) * jnp.float32(-inc))
  t = jnp.arange(1, length + 1, dtype=jnp.float32)[:, None] * inv[None, :]
  return jnp.concatenate([jnp.sin(t), jnp.cos(t)], axis=-1)


class SANMEncoder(nn.Module):
  """Param tree: [embed_linear, embed_norm (input_layer "linear")], encoders0/..., encoders/... [N-1, ...],
  after_norm. Layer params: norm1, norm2, self_attn/{linear_q_k_v, linear_out, fsmn_block/kernel [k, D]}, w_1, w_2."""
  config: SANMEncoderConfig

  def setup(self):
    c = self.config
    if c.input_layer == "linear":
      self.embed_linear = Dense(c.output_size, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c))
      self.embed_norm = LayerNorm(1e-5, **_kw(c))   # torch.nn.LayerNorm default eps inside `embed`
    self.encoders0 = EncoderLayer(c, c.input_size)
    if c.num_blocks > 1:
      self.encoders = scan_layers(EncoderLayer, c, c.num_blocks - 1, (nn.broadcast, nn.broadcast), 3)(
          c, c.output_size)
    self.after_norm = _ln(c, "after_norm")

  def __call__(self, x, lengths, deterministic: bool = True):
    """x [B, T, Din] float, lengths [B] int32 (valid frames) -> [B, T, D] in the compute dtype.
    Valid frames do not depend on padded ones (padded outputs are finite but meaningless)."""
    c = self.config
    if x.ndim != 3 or x.shape[-1] != c.input_size:
      raise DataError(f"encoder input has shape {tuple(x.shape)}; expected [B, T, {c.input_size}]", key="x")
    t = x.shape[1]
    mask = jnp.arange(t)[None, :] < jnp.asarray(lengths, jnp.int32)[:, None]
    x = x.astype(jnp.float32) * jnp.float32(math.sqrt(c.output_size))
    if c.input_layer == "linear":
      x = jax.nn.relu(self.embed_norm(self.embed_linear(x))).astype(jnp.float32)
    if c.input_layer is not None:
      x = x + sinusoid_positions(t, x.shape[-1])[None]
    x = nn.with_logical_constraint(x.astype(jnp.dtype(c.dtype)), _ACT)
    x, _ = self.encoders0(x, mask, deterministic)
    if c.num_blocks > 1:
      x, _ = self.encoders(x, mask, deterministic)
    return self.after_norm(x)


class CTCHead(nn.Module):
  """funasr CTC(odim=vocab_size, encoder_output_size): ctc_lo Linear(D -> V); h [B, T, D] -> log-probs
  [B, T, V] float32."""
  vocab_size: int
  encoder_output_size: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    if h.shape[-1] != self.encoder_output_size:
      raise DataError(f"CTC input has shape {tuple(h.shape)}; expected [..., {self.encoder_output_size}]", key="h")
    logits = Dense(self.vocab_size, use_bias=True, kernel_axes=("embed", "vocab"), dtype=jnp.float32,
                   param_dtype=self.param_dtype, name="ctc_lo")(h)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


# ---------------------------------------------------------------- decoder

class CrossAttention(nn.Module):
  """MultiHeadedAttentionCrossAtt: linear_q, linear_k_v [D -> 2D], linear_out; memory keys masked."""
  config: SANMDecoderConfig

  def setup(self):
    c = self.config
    d = c.encoder_output_size
    self.linear_q = Dense(d, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c))
    self.linear_k_v = Dense(2 * d, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c))
    self.linear_out = Dense(d, use_bias=True, kernel_axes=("mlp", "embed"), **_kw(c))

  def kv(self, memory):
    """memory [B, S, D] -> (k, v) [B, S, H, D/H]."""
    k, v = jnp.split(self.linear_k_v(memory), 2, axis=-1)
    return _heads(k, self.config.attention_heads), _heads(v, self.config.attention_heads)

  def attend(self, x, k, v, memory_mask):
    """x [B, L, D], k/v [B, S, H, Dh], memory_mask [B, S] bool -> [B, L, D]."""
    c = self.config
    a = attention_kernel(_heads(self.linear_q(x), c.attention_heads), k, v, mask=memory_mask[:, None, None, :],
                         implementation=c.attention_impl)
    return self.linear_out(checkpoint_name(a.reshape(x.shape[:2] + (-1,)), ATTENTION_OUT))

  def __call__(self, x, memory, memory_mask):
    return self.attend(x, *self.kv(memory), memory_mask)


class DecoderFFN(nn.Module):
  """PositionwiseFeedForwardDecoderSANM: w_2(norm(relu(w_1(x)))), w_2 without bias."""
  config: SANMDecoderConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    y = Dense(c.linear_units, use_bias=True, kernel_axes=("embed", "mlp"), **_kw(c), name="w_1")(x)
    y = _ln(c, "norm")(jax.nn.relu(y))
    return Dense(c.encoder_output_size, use_bias=False, kernel_axes=("mlp", "embed"), **_kw(c), name="w_2")(y)


class DecoderLayer(nn.Module):
  """DecoderLayerSANM. fsmn_left None: no FSMN (decoders3); cross False: no src_attn (decoders2, decoders3)."""
  config: SANMDecoderConfig
  fsmn_left: int | None
  cross: bool

  def setup(self):
    c = self.config
    self.norm1 = _ln(c, "norm1")
    self.feed_forward = DecoderFFN(c)
    if self.fsmn_left is not None:
      self.norm2 = _ln(c, "norm2")
      self.self_attn = FSMNBlock(c.encoder_output_size, c.kernel_size, self.fsmn_left, c.conv_impl, **_kw(c))
    if self.cross:
      self.norm3 = _ln(c, "norm3")
      self.src_attn = CrossAttention(c)

  def __call__(self, x, tgt_mask, memory, memory_mask, deterministic: bool = True):
    """x [B, L, D], tgt_mask [B, L] bool, memory [B, S, D], memory_mask [B, S] bool -> ([B, L, D], None)."""
    t = self.feed_forward(self.norm1(x))
    if self.fsmn_left is None:
      return t, None
    x = checkpoint_name(x + self.self_attn(self.norm2(t), tgt_mask), RESIDUAL)
    if self.cross:
      x = checkpoint_name(x + self.src_attn(self.norm3(x), memory, memory_mask), RESIDUAL)
    return nn.with_logical_constraint(x, _ACT), None

  def cross_kv(self, memory):
    return self.src_attn.kv(memory)

  def step(self, x, hist, k, v, memory_mask):
    """One position: x [N, 1, D], hist [N, k-1, D], k/v [N, S, H, Dh] (None without src_attn), memory_mask
    [N, S] -> (x [N, 1, D], hist)."""
    t = self.feed_forward(self.norm1(x))
    if self.fsmn_left is None:
      return t, hist
    y, hist = self.self_attn.step(self.norm2(t), hist)
    x = x + y
    if self.cross:
      x = x + self.src_attn.attend(self.norm3(x), k, v, memory_mask)
    return x, hist


def _scan(fn, n, in_axes):
  return nn.scan(fn, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=in_axes, length=n,
                 metadata_params={nn.PARTITION_NAME: "layers"})


class SANMDecoder(nn.Module):
  """Param tree: embed/embedding [V, D], decoders/... [A, ...], decoders2/... [A2, ...], decoders3/...,
  after_norm, output_layer. Layer params: norm1, feed_forward/{w_1, norm, w_2}, norm2, self_attn/kernel [k, D],
  norm3, src_attn/{linear_q, linear_k_v, linear_out}."""
  config: SANMDecoderConfig

  def setup(self):
    c = self.config
    d = c.encoder_output_size
    self.embed = Embed(c.vocab_size, d, **_kw(c))
    layer = remat(DecoderLayer, c.remat_policy, static_argnums=(5,))
    n2 = c.num_blocks - c.att_layer_num
    if c.att_layer_num:
      self.decoders = layer(c, c.fsmn_left, True)
    if n2:
      self.decoders2 = layer(c, c.fsmn2_left, False)
    self.decoders3 = DecoderLayer(c, None, False)
    self.after_norm = _ln(c, "after_norm")
    self.output_layer = Dense(c.vocab_size, use_bias=True, kernel_axes=("embed", "vocab"), dtype=jnp.float32,
                              param_dtype=jnp.dtype(c.param_dtype))

  def _stacks(self):
    c = self.config
    out = []
    if c.att_layer_num:
      out.append(("fsmn", self.decoders, c.att_layer_num))
    if c.num_blocks - c.att_layer_num:
      out.append(("fsmn2", self.decoders2, c.num_blocks - c.att_layer_num))
    return out

  def __call__(self, inputs, memory, memory_mask, tgt_mask=None, deterministic: bool = True):
    """Teacher forcing. inputs: tokens [B, L] int or embeddings [B, L, D]; memory [B, S, D]; memory_mask
    [B, S] bool; tgt_mask [B, L] bool (None: all valid) -> logits [B, L, V] float32."""
    c = self.config
    if jnp.issubdtype(inputs.dtype, jnp.integer):
      x = self.embed(inputs)
    else:
      x = inputs.astype(jnp.dtype(c.dtype))
      if self.is_initializing():
        self.embed(jnp.zeros((1,), jnp.int32))   # the token table exists whatever init was given
    tgt_mask = jnp.ones(x.shape[:2], bool) if tgt_mask is None else jnp.asarray(tgt_mask, bool)
    memory = memory.astype(jnp.dtype(c.dtype))
    memory_mask = jnp.asarray(memory_mask, bool)
    x = nn.with_logical_constraint(x, _ACT)
    body = lambda mdl, x, tm, m, mm: mdl(x, tm, m, mm, deterministic)
    for _, stack, n in self._stacks():
      x, _ = _scan(body, n, (nn.broadcast,) * 3)(stack, x, tgt_mask, memory, memory_mask)
    x, _ = self.decoders3(x, tgt_mask, memory, memory_mask)
    return self.output_layer(self.after_norm(x)).astype(jnp.float32)

  def init_cache(self, memory, memory_mask):
    """memory [N, S, D], memory_mask [N, S] bool -> the decoding cache (module docstring)."""
    c = self.config
    if not c.causal:
      raise ConfigError(f"incremental decoding needs causal FSMN padding (left = kernel_size - 1 = "
                        f"{c.kernel_size - 1}); decoder_conf kernel_size {c.kernel_size}, sanm_shfit "
                        f"{c.sanm_shfit} gives left {c.fsmn_left}"
                        + ("" if c.num_blocks == c.att_layer_num else " and decoders2 are centred"))
    n = memory.shape[0]
    memory = memory.astype(jnp.dtype(c.dtype))
    cache = {"memory_mask": jnp.asarray(memory_mask, bool)}
    for key, _, layers in self._stacks():
      cache[key] = jnp.zeros((layers, n, c.kernel_size - 1, c.encoder_output_size), jnp.dtype(c.dtype))
    if c.att_layer_num:
      kv = lambda mdl, carry, m: (carry, mdl.cross_kv(m))
      _, (cache["cross_k"], cache["cross_v"]) = _scan(kv, c.att_layer_num, (nn.broadcast,))(
          self.decoders, jnp.zeros((), jnp.int32), memory)
    return cache

  def step(self, tokens, cache):
    """tokens [N] int32 (or embeddings [N, D]) -> (logits [N, V] float32, cache): the teacher-forced
    logits of the next position."""
    c = self.config
    x = self.embed(tokens) if jnp.issubdtype(tokens.dtype, jnp.integer) else tokens.astype(jnp.dtype(c.dtype))
    x = x[:, None]
    mm = cache["memory_mask"]
    new = dict(cache)
    for key, stack, n in self._stacks():
      if key == "fsmn":
        body = lambda mdl, x, h, k, v, mm: mdl.step(x, h, k, v, mm)
        x, new[key] = _scan(body, n, (0, 0, 0, nn.broadcast))(stack, x, cache[key], cache["cross_k"],
                                                              cache["cross_v"], mm)
      else:
        body = lambda mdl, x, h: mdl.step(x, h, None, None, None)
        x, new[key] = _scan(body, n, (0,))(stack, x, cache[key])
    x, _ = self.decoders3.step(x, None, None, None, None)
    return self.output_layer(self.after_norm(x[:, 0])).astype(jnp.float32), new


_BATCH_AXIS = {"memory_mask": 0, "fsmn": 1, "fsmn2": 1, "cross_k": 1, "cross_v": 1}


@dataclasses.dataclass(frozen=True)
class SANMDecoderSearch:
  """shared.decoding.search protocol (greedy / sample / beam_search) for a causal SANMDecoder:

    logits, cache = dec.prefill(params, memory, memory_mask, sos_id=..., max_new_tokens=...)
    tokens = search.greedy(dec, params, logits, cache, max_new_tokens=..., eos_ids=(eos,))
  params: the decoder's params. The cache has a fixed size (k-1 positions per FSMN layer), so max_new_tokens
  does not size it; it is accepted for the protocol's symmetry."""
  module: SANMDecoder

  def prefill(self, params, memory, memory_mask, *, sos_id: int, max_new_tokens: int | None = None):
    """memory [B, S, D], memory_mask [B, S] bool -> (logits [B, V] float32 after <sos>, cache)."""
    del max_new_tokens
    cache = self.module.apply({"params": params}, memory, memory_mask, method=SANMDecoder.init_cache)
    return self.step(params, jnp.full((memory.shape[0],), sos_id, jnp.int32), cache)

  def step(self, params, tokens, cache):
    return self.module.apply({"params": params}, tokens, cache, method=SANMDecoder.step)

  def reorder(self, cache, index):
    return {k: jnp.take(v, index, axis=_BATCH_AXIS[k]) for k, v in cache.items()}

  def tile(self, cache, k: int):
    """Repeat every row k times (beam search): N -> N*k."""
    return self.reorder(cache, jnp.repeat(jnp.arange(cache["memory_mask"].shape[0]), k))
