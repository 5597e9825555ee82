"""Decoder-only LLM covering LLaMA 3.x and Qwen3 by config (transformers LlamaForCausalLM / Qwen3ForCausalLM).

  pre-norm blocks: h += self_attn(RMSNorm(h)); h += GatedMLP(RMSNorm(h)); logits = head(RMSNorm(h)).
Qwen3 adds per-head RMSNorm on q and k before RoPE (qk_norm). head_dim is independent of
hidden/heads; embeddings tied or not; rope scaling (llama3, linear). Layers are one nn.scan over
`layers` (params [num_layers, ...]) with an optional nn.remat policy. Params float32, compute `dtype`.

Param tree: embed_tokens/embedding [V, E]; layers/{input_layernorm,post_attention_layernorm}/scale [N, E];
layers/self_attn/{q,k,v,o}_proj/kernel [N, in, out]; layers/self_attn/{q,k}_norm/scale [N, Dh];
layers/mlp/{gate,up,down}_proj/kernel; norm/scale [E]; lm_head/kernel [E, V] (untied only).

Call: logits = LLM(cfg).apply(vars, input_ids [B, L]) or inputs_embeds=[B, L, E] (modality embeddings +
prompt, see shared.text.prompts); attention_mask [B, L] (1 = real token). Decoding with a KV cache:
cache = module.init_cache(B, S_max); logits, cache = apply(..., cache=cache, cache_index=t,
attention_mask=[B, S_max] key validity, positions=[B, L]).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError
from shared.nn.attention import Attention
from shared.nn.linear import Dense, Embed
from shared.nn.lora import LoraConfig
from shared.nn.mlp import GatedMLP
from shared.nn.norms import RMSNorm
from shared.nn import rope
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name, remat


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_layers: int = 32
  num_heads: int = 32
  num_kv_heads: int = 32
  head_dim: int = 128
  rms_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()          # sorted (key, value) items of HF rope_parameters minus rope_theta
  qk_norm: bool = False             # Qwen3
  tie_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  hidden_act: str = "silu"
  max_position_embeddings: int = 2048
  family: str = "llama"             # "llama" | "qwen3": the HF architecture to export to
  bos_token_id: int | None = None
  eos_token_id: tuple = ()
  pad_token_id: int | None = None
  dtype: str = "float32"            # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  lora: LoraConfig | None = None
  attention_impl: str = "auto"
  # imported config.json keys outside the fields above, as sorted (key, JSON text) pairs; written back on
  # export (shared/weights/llm_family); metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ConfigError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")
    check_remat_policy(self.remat_policy)
    # a dict (HF rope_parameters), or pairs read back from JSON as lists (a checkpoint's config): hashable pairs
    scaling = self.rope_scaling.items() if isinstance(self.rope_scaling, dict) else (self.rope_scaling or ())
    object.__setattr__(self, "rope_scaling", tuple(sorted(tuple(p) for p in scaling)))
    if isinstance(self.eos_token_id, int):
      object.__setattr__(self, "eos_token_id", (self.eos_token_id,))
    object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id or ()))

  def replace(self, **kw) -> "LLMConfig":
    return dataclasses.replace(self, **kw)

  def inv_freq(self) -> np.ndarray:
    return rope.inv_freq(self.head_dim, self.rope_theta, dict(self.rope_scaling) or None)


class DecoderLayer(nn.Module):
  config: LLMConfig

  @nn.compact
  def __call__(self, h, angles, mask, cache, cache_index, deterministic):
    c = self.config
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    r = RMSNorm(c.rms_eps, dt, pdt, name="input_layernorm")(h)
    a, new_cache = Attention(c.num_heads, c.num_kv_heads, c.head_dim, qk_norm=c.qk_norm, norm_eps=c.rms_eps,
                             use_bias=c.attention_bias, out_bias=c.attention_bias, dtype=dt, param_dtype=pdt,
                             lora=c.lora, implementation=c.attention_impl, name="self_attn")(
        r, angles=angles, mask=mask, causal=True, cache=cache, cache_index=cache_index,
        deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = RMSNorm(c.rms_eps, dt, pdt, name="post_attention_layernorm")(h)
    h = h + GatedMLP(c.intermediate_size, c.hidden_act, c.mlp_bias, dt, pdt, c.lora, name="mlp")(
        r, deterministic)
    h = nn.with_logical_constraint(checkpoint_name(h, RESIDUAL), ("batch", None, "act_embed"))
    return h, new_cache


class LLM(nn.Module):
  config: LLMConfig

  def setup(self):
    c = self.config
    dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
    self.embed_tokens = Embed(c.vocab_size, c.hidden_size, dt, pdt)
    self.norm = RMSNorm(c.rms_eps, dt, pdt)
    if not c.tie_embeddings:
      self.lm_head = Dense(c.vocab_size, False, ("embed", "vocab"), dt, pdt)
    layer = remat(DecoderLayer, c.remat_policy, static_argnums=(6,))
    stack = nn.scan(layer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast, nn.broadcast), length=c.num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
    self.layers = stack(c)

  def embed(self, input_ids):
    """input_ids [B, L] -> [B, L, E] in the compute dtype."""
    return self.embed_tokens(input_ids)

  def init_cache(self, batch: int, max_len: int, dtype=None):
    """Zero KV cache: (k, v), each [num_layers, B, max_len, Hkv, Dh]."""
    c = self.config
    shape = (c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim)
    dtype = jnp.dtype(dtype or c.dtype)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)

  def __call__(self, input_ids=None, *, inputs_embeds=None, attention_mask=None, positions=None, cache=None,
               cache_index=None, deterministic: bool = True, return_hidden: bool = False):
    """-> logits [B, L, V] float32 (and the new cache when `cache` is given).

    attention_mask: [B, L] without a cache, [B, S_max] (validity of every cache slot) with one.
    positions [B, L]: rotary positions; default arange(L) (+ cache_index)."""
    c = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ConfigError("give exactly one of input_ids [B, L] or inputs_embeds [B, L, E]")
    h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(jnp.dtype(c.dtype))
    b, l, _ = h.shape
    if positions is None:
      start = 0 if cache_index is None else cache_index
      positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32)[None] + start, (b, l))
    angles = rope.angles(positions, self.config.inv_freq())
    mask = None if attention_mask is None else jnp.asarray(attention_mask, bool)[:, None, None, :]
    h = nn.with_logical_constraint(h, ("batch", None, "act_embed"))
    h, new_cache = self.layers(h, angles, mask, cache, cache_index, deterministic)
    h = self.norm(h)
    if return_hidden:
      out = h
    else:
      out = self.embed_tokens.attend(h) if c.tie_embeddings else self.lm_head(h)
      out = nn.with_logical_constraint(out.astype(jnp.float32), ("batch", None, "act_vocab"))
    return (out, new_cache) if cache is not None else out
