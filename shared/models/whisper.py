"""Whisper audio encoder (tri-modal audio encoder, ASR-based evaluation; transformers WhisperEncoder).

  x [B, T, n_mels] log-mels, time-major (shared.data.features.whisper_log_mel*: [T, 80] per utterance)
  h = GELU(conv1(x))            k3, pad 1            [B, T, E]
  h = GELU(conv2(h))            k3, stride 2, pad 1  [B, T', E], T' = ceil(T / 2)
  h = h + positions[:T']        sinusoids, stored as a parameter (as in the checkpoints)
  pre-LN blocks: h += out_proj(attn(LN(h))); h += fc2(act(fc1(LN(h))));  out = layer_norm(h)
k_proj has no bias (q/v/out do). The conv GELUs are exact GELU; the MLP uses activation_function.
transformers insists on T = 2 * max_source_positions (30 s, 3000 frames, padded); here any T with
T' <= max_source_positions is accepted and the first T' positions are used, so a full-length input
equals transformers and a shorter one equals transformers on the truncated-position model.
Optional `attention_mask` [B, T'] (1 = valid frame) masks padded keys (transformers has none: None).
Layers are one nn.scan with an optional remat policy; params float32, compute `dtype`.

Param tree: conv1/{kernel [3, n_mels, E], bias}, conv2/{kernel [3, E, E], bias}; embed_positions/embedding
[max_source_positions, E]; layers/{self_attn_layer_norm,final_layer_norm}/{scale,bias} [N, E];
layers/self_attn/{q,v,out}_proj/{kernel,bias}, layers/self_attn/k_proj/kernel; layers/mlp/{fc1,fc2}/*;
layer_norm/{scale,bias}.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError, DataError
from shared.nn.conv import Conv
from shared.nn.linear import Embed
from shared.nn.lora import LoraConfig
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import ACTIVATIONS, MLP
from shared.nn.norms import LayerNorm
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name
from shared.nn.scan import scan_layers
from shared.nn.positions import sinusoid_init

PREFIXES = {"WhisperEncoder": "", "WhisperModel": "encoder.", "WhisperForConditionalGeneration": "model.encoder.",
            "WhisperForAudioClassification": "encoder."}


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
  num_mel_bins: int = 80
  d_model: int = 1024
  encoder_layers: int = 24
  encoder_attention_heads: int = 16
  encoder_ffn_dim: int = 4096
  max_source_positions: int = 1500
  activation_function: str = "gelu"
  layer_norm_eps: float = 1e-5
  architecture: str = "WhisperEncoder"   # checkpoint layout: the keys' prefix follows PREFIXES[architecture]
  dtype: str = "float32"                 # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  lora: LoraConfig | None = None
  attention_impl: str = "auto"
  # imported config.json keys this encoder does not model (decoder sizes, vocab, token ids, ...) as sorted
  # (key, JSON text) pairs; written back on export (shared/weights/whisper_family); metadata, so left out
  # of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    if self.activation_function not in ACTIVATIONS:
      raise ConfigError(f"activation_function {self.activation_function!r} not in {sorted(ACTIVATIONS)}")
    if self.architecture not in PREFIXES:
      raise ConfigError(f"architecture {self.architecture!r} not in {sorted(PREFIXES)}")
    if self.d_model % self.encoder_attention_heads:
      raise ConfigError(f"d_model {self.d_model} is not a multiple of encoder_attention_heads "
                        f"{self.encoder_attention_heads}")

  def replace(self, **kw) -> "WhisperEncoderConfig":
    return dataclasses.replace(self, **kw)


class WhisperLayer(nn.Module):
  config: WhisperEncoderConfig

  @nn.compact
  def __call__(self, h, mask, deterministic):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    heads = c.encoder_attention_heads
    r = LayerNorm(c.layer_norm_eps, **kw, name="self_attn_layer_norm")(h)
    a, _ = MultiHeadAttention(heads, c.d_model // heads, k_bias=False, lora=c.lora, implementation=c.attention_impl,
                              **kw, name="self_attn")(r, mask=mask, deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = LayerNorm(c.layer_norm_eps, **kw, name="final_layer_norm")(h)
    h = h + MLP(c.encoder_ffn_dim, c.activation_function, True, lora=c.lora, **kw, name="mlp")(r, deterministic)
    return nn.with_logical_constraint(checkpoint_name(h, RESIDUAL), ("batch", None, "act_embed")), None


class WhisperEncoder(nn.Module):
  config: WhisperEncoderConfig

  def setup(self):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    self.conv1 = Conv(c.d_model, (3,), padding=[(1, 1)], **kw)
    self.conv2 = Conv(c.d_model, (3,), strides=(2,), padding=[(1, 1)], **kw)
    self.embed_positions = Embed(c.max_source_positions, c.d_model, **kw, embedding_axes=(None, "embed"),
                                 embedding_init=sinusoid_init)
    self.layers = scan_layers(WhisperLayer, c, c.encoder_layers, (nn.broadcast, nn.broadcast), 3)(c)
    self.layer_norm = LayerNorm(c.layer_norm_eps, **kw)

  @staticmethod
  def output_length(num_frames: int) -> int:
    """Encoder frames for `num_frames` input frames (stride-2 conv, pad 1, k 3)."""
    return (num_frames - 1) // 2 + 1

  def __call__(self, input_features, *, attention_mask=None, deterministic: bool = True):
    """input_features [B, T, n_mels] -> last hidden state [B, ceil(T/2), E] (compute dtype)."""
    c = self.config
    if input_features.ndim != 3 or input_features.shape[-1] != c.num_mel_bins:
      raise DataError(f"input_features has shape {tuple(input_features.shape)}; expected [B, T, {c.num_mel_bins}] "
                      "time-major log-mels (transpose transformers' [B, n_mels, T])", key="input_features")
    t_out = self.output_length(input_features.shape[1])
    if t_out > c.max_source_positions:
      raise DataError(f"input_features has {input_features.shape[1]} frames -> {t_out} encoder frames, more than "
                      f"max_source_positions {c.max_source_positions}", key="input_features")
    gelu = lambda x: jax.nn.gelu(x, approximate=False)
    h = gelu(self.conv2(gelu(self.conv1(input_features.astype(jnp.dtype(c.dtype))))))
    h = h + self.embed_positions.embedding[:t_out].astype(h.dtype)[None]
    mask = None if attention_mask is None else jnp.asarray(attention_mask, bool)[:, None, None, :]
    h = nn.with_logical_constraint(h, ("batch", None, "act_embed"))
    h, _ = self.layers(h, mask, deterministic)
    return self.layer_norm(h)
