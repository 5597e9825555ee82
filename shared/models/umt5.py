"""UMT5 encoder (UniTalking's text encoder; transformers UMT5EncoderModel).

  h = shared(ids)                                            # no embedding scale
  per layer: h += o(attn(q, k, v; bias = rel_bias_l, no 1/sqrt(d) scaling))(RMS(h))
             h += wo(gelu_tanh(wi_0(RMS(h))) * wi_1(RMS(h)))  # gated-GELU FFN
  out = RMS(h)                                               # T5 LayerNorm: no mean, no bias
UMT5 (unlike T5) has its own relative position bias table in EVERY layer (bidirectional buckets).
Layers are one nn.scan (params [num_layers, ...]) with an optional remat policy; params float32,
compute `dtype`; norms and softmax in float32.

Param tree: shared/embedding [V, E]; layers/attn_norm/scale, layers/ffn_norm/scale [N, E];
layers/SelfAttention/{q,k,v}/kernel [N, E, H*Dk], layers/SelfAttention/o/kernel [N, H*Dk, E];
layers/relative_attention_bias/embedding [N, buckets, H]; layers/DenseReluDense/{gate_proj,up_proj}/kernel
[N, E, F] (torch wi_0, wi_1), layers/DenseReluDense/down_proj/kernel [N, F, E] (torch wo);
final_layer_norm/scale [E].

Call: hidden = UMT5Encoder(cfg).apply(vars, input_ids [B, L], attention_mask=[B, L] (1 = token))
      -> [B, L, E] in the compute dtype (or inputs_embeds=[B, L, E]).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.nn.linear import Embed
from shared.nn.lora import LoraConfig
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import ACTIVATIONS, GatedMLP
from shared.nn.norms import RMSNorm
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name
from shared.nn.scan import scan_layers
from shared.nn.t5_bias import RelativePositionBias

@dataclasses.dataclass(frozen=True)
class UMT5Config:
  vocab_size: int = 256384
  d_model: int = 4096
  d_kv: int = 64
  num_heads: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  dense_act_fn: str = "gelu_new"     # gated-GELU (tanh approximation), as "gated-gelu" in HF configs
  pad_token_id: int = 0
  eos_token_id: int = 1
  dtype: str = "float32"             # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  lora: LoraConfig | None = None
  attention_impl: str = "auto"
  # imported config.json keys outside the fields above, as sorted (key, JSON text) pairs; written back on
  # export (shared/weights/umt5_family); metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    if self.dense_act_fn not in ACTIVATIONS:
      raise ConfigError(f"dense_act_fn {self.dense_act_fn!r} not in {sorted(ACTIVATIONS)}")

  def replace(self, **kw) -> "UMT5Config":
    return dataclasses.replace(self, **kw)


class UMT5Layer(nn.Module):
  config: UMT5Config

  @nn.compact
  def __call__(self, h, mask, deterministic):
    c = self.config
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    l = h.shape[1]
    bias = RelativePositionBias(c.relative_attention_num_buckets, c.relative_attention_max_distance, c.num_heads,
                                bidirectional=True, param_dtype=pdt, name="relative_attention_bias")(l, l)
    r = RMSNorm(c.layer_norm_epsilon, dt, pdt, name="attn_norm")(h)
    a, _ = MultiHeadAttention(c.num_heads, c.d_kv, False, False, False, False, scale=1.0, names=("q", "k", "v", "o"),
                              dtype=dt, param_dtype=pdt, lora=c.lora, implementation=c.attention_impl,
                              name="SelfAttention")(r, bias=bias, mask=mask, deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = RMSNorm(c.layer_norm_epsilon, dt, pdt, name="ffn_norm")(h)
    h = h + GatedMLP(c.d_ff, c.dense_act_fn, False, dt, pdt, c.lora, name="DenseReluDense")(r, deterministic)
    return nn.with_logical_constraint(checkpoint_name(h, RESIDUAL), ("batch", None, "act_embed")), None


class UMT5Encoder(nn.Module):
  config: UMT5Config

  def setup(self):
    c = self.config
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    self.shared = Embed(c.vocab_size, c.d_model, dt, pdt)
    self.layers = scan_layers(UMT5Layer, c, c.num_layers, (nn.broadcast, nn.broadcast), 3)(c)
    self.final_layer_norm = RMSNorm(c.layer_norm_epsilon, dt, pdt)

  def embed(self, input_ids):
    """[B, L] int -> [B, L, E] (the table the text conditioner shares)."""
    return self.shared(input_ids)

  def __call__(self, input_ids=None, *, inputs_embeds=None, attention_mask=None, deterministic: bool = True):
    """-> last hidden state [B, L, E] (compute dtype). attention_mask [B, L]: 1 = token, 0 = padding."""
    c = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ConfigError("give exactly one of input_ids [B, L] or inputs_embeds [B, L, E]")
    h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(jnp.dtype(c.dtype))
    mask = None if attention_mask is None else jnp.asarray(attention_mask, bool)[:, None, None, :]
    h = nn.with_logical_constraint(h, ("batch", None, "act_embed"))
    h, _ = self.layers(h, mask, deterministic)
    return self.final_layer_norm(h)
