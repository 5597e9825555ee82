"""MBart encoder-decoder (UniCUE's recognition decoder; transformers MBartForConditionalGeneration).

  encoder: h = shared(ids) * embed_scale (ids only; inputs_embeds are used as given) + pos[arange + 2]
           h = layernorm_embedding(h); pre-LN blocks (self_attn, fc1-GELU-fc2); h = layer_norm(h)
  decoder: same embedding path on decoder ids; pre-LN blocks (causal self_attn, encoder_attn, MLP);
           layer_norm; logits = h @ shared^T + final_logits_bias (one table tied everywhere)
embed_scale = sqrt(d_model) if scale_embedding else 1. Learned positions have max_position_embeddings
+ 2 rows (MBart's offset 2). LayerNorms have bias, eps 1e-5. Both stacks are nn.scan'ed (params
[layers, ...]) with an optional remat policy; params float32, compute `dtype`.

Param tree: shared/embedding [V, E]; {encoder,decoder}_positions/embedding [P + 2, E];
{encoder,decoder}_layernorm_embedding, {encoder,decoder}_layer_norm /{scale,bias};
encoder_layers/{self_attn_layer_norm,final_layer_norm}/{scale,bias}, encoder_layers/self_attn/
{q,k,v,out}_proj/{kernel,bias}, encoder_layers/mlp/{fc1,fc2}/{kernel,bias};
decoder_layers/... plus encoder_attn/*, encoder_attn_layer_norm/*; final_logits_bias [V].

Calls (B batch, S source length, L target length):
  logits [B, L, V] = apply(vars, input_ids [B, S] | inputs_embeds=[B, S, E], decoder_input_ids [B, L],
                           attention_mask=[B, S], decoder_attention_mask=[B, L])
  enc [B, S, E]   = apply(vars, input_ids, attention_mask=..., method="encode")
  logits          = apply(vars, decoder_input_ids, enc, encoder_attention_mask=..., method="decode")
KV-cache decoding (shared.decoding searches): `MBartGenerator(module)` gives prefill/step/reorder/tile;
decode(..., cache=init_cache(B, L_max), cache_index=t, cross_kv=...) -> (logits, cache, cross_kv).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared.errors import ConfigError
from shared.nn.linear import Embed
from shared.nn.lora import LoraConfig
from shared.nn.mha import MultiHeadAttention
from shared.nn.mlp import ACTIVATIONS, MLP
from shared.nn.norms import LayerNorm
from shared.nn.remat import RESIDUAL, check_remat_policy, checkpoint_name
from shared.nn.scan import scan_layers


@dataclasses.dataclass(frozen=True)
class MBartConfig:
  vocab_size: int = 250054
  d_model: int = 1024
  encoder_layers: int = 12
  decoder_layers: int = 12
  encoder_attention_heads: int = 16
  decoder_attention_heads: int = 16
  encoder_ffn_dim: int = 4096
  decoder_ffn_dim: int = 4096
  max_position_embeddings: int = 1024
  scale_embedding: bool = True
  activation_function: str = "gelu"
  layer_norm_eps: float = 1e-5
  pad_token_id: int = 1
  bos_token_id: int = 0
  eos_token_id: int = 2
  decoder_start_token_id: int = 2
  forced_eos_token_id: int | None = 2
  dtype: str = "float32"             # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"
  lora: LoraConfig | None = None
  attention_impl: str = "auto"
  # imported config.json keys outside the fields above, as sorted (key, JSON text) pairs; written back on
  # export (shared/weights/mbart_family); metadata, so left out of == and hash
  hf_extra: tuple = dataclasses.field(default=(), compare=False)

  def __post_init__(self):
    check_remat_policy(self.remat_policy)
    if self.activation_function not in ACTIVATIONS:
      raise ConfigError(f"activation_function {self.activation_function!r} not in {sorted(ACTIVATIONS)}")
    for side in ("encoder", "decoder"):
      heads = getattr(self, f"{side}_attention_heads")
      if self.d_model % heads:
        raise ConfigError(f"d_model {self.d_model} is not a multiple of {side}_attention_heads {heads}")

  def replace(self, **kw) -> "MBartConfig":
    return dataclasses.replace(self, **kw)

  @property
  def embed_scale(self) -> float:
    return math.sqrt(self.d_model) if self.scale_embedding else 1.0


def shift_tokens_right(labels, pad_token_id: int):
  """MBart's teacher-forcing input: labels [B, L] (-100 = ignore) -> [B, L], the last non-pad token of
  each row (its eos / language id) moved to the front (transformers' mbart shift_tokens_right)."""
  ids = jnp.where(labels == -100, pad_token_id, labels)
  last = jnp.sum(ids != pad_token_id, axis=1) - 1
  start = jnp.take_along_axis(ids, jnp.maximum(last, 0)[:, None], axis=1)
  return jnp.concatenate([start, ids[:, :-1]], axis=1)


def _kw(c: MBartConfig) -> dict[str, Any]:
  return dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))


class EncoderLayer(nn.Module):
  config: MBartConfig

  @nn.compact
  def __call__(self, h, mask, deterministic):
    c = self.config
    kw = _kw(c)
    heads = c.encoder_attention_heads
    r = LayerNorm(c.layer_norm_eps, **kw, name="self_attn_layer_norm")(h)
    a, _ = MultiHeadAttention(heads, c.d_model // heads, lora=c.lora, implementation=c.attention_impl, **kw,
                              name="self_attn")(r, mask=mask, deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = LayerNorm(c.layer_norm_eps, **kw, name="final_layer_norm")(h)
    h = h + MLP(c.encoder_ffn_dim, c.activation_function, True, lora=c.lora, **kw, name="mlp")(r, deterministic)
    return nn.with_logical_constraint(checkpoint_name(h, RESIDUAL), ("batch", None, "act_embed")), None


class DecoderLayer(nn.Module):
  config: MBartConfig

  @nn.compact
  def __call__(self, h, enc, enc_mask, self_mask, cache_index, cross_kv, cache, deterministic):
    """cross_kv / cache: this layer's slices (scanned); returns (h, (new cache, cross k/v or None))."""
    c = self.config
    kw = _kw(c)
    heads = c.decoder_attention_heads
    attn = lambda name: MultiHeadAttention(heads, c.d_model // heads, lora=c.lora, implementation=c.attention_impl,
                                           **kw, name=name)
    r = LayerNorm(c.layer_norm_eps, **kw, name="self_attn_layer_norm")(h)
    a, new_cache = attn("self_attn")(r, mask=self_mask, causal=True, cache=cache, cache_index=cache_index,
                                     deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = LayerNorm(c.layer_norm_eps, **kw, name="encoder_attn_layer_norm")(h)
    a, new_cross = attn("encoder_attn")(r, context=None if cross_kv is not None else enc, kv=cross_kv,
                                        mask=enc_mask, deterministic=deterministic)
    h = checkpoint_name(h + a, RESIDUAL)
    r = LayerNorm(c.layer_norm_eps, **kw, name="final_layer_norm")(h)
    h = h + MLP(c.decoder_ffn_dim, c.activation_function, True, lora=c.lora, **kw, name="mlp")(r, deterministic)
    h = checkpoint_name(h, RESIDUAL)
    return nn.with_logical_constraint(h, ("batch", None, "act_embed")), (new_cache, new_cross)


class MBart(nn.Module):
  config: MBartConfig

  def setup(self):
    c = self.config
    kw = _kw(c)
    self.shared = Embed(c.vocab_size, c.d_model, **kw)
    pos = lambda: Embed(c.max_position_embeddings + 2, c.d_model, **kw, embedding_axes=(None, "embed"))
    self.encoder_positions, self.decoder_positions = pos(), pos()
    ln = lambda: LayerNorm(c.layer_norm_eps, **kw)
    self.encoder_layernorm_embedding, self.encoder_layer_norm = ln(), ln()
    self.decoder_layernorm_embedding, self.decoder_layer_norm = ln(), ln()
    b = nn.broadcast
    self.encoder_layers = scan_layers(EncoderLayer, c, c.encoder_layers, (b, b), 3)(c)
    self.decoder_layers = scan_layers(DecoderLayer, c, c.decoder_layers, (b, b, b, b, 0, 0, b), 8)(c)
    self.final_logits_bias = self.param("final_logits_bias", nn.with_logical_partitioning(
        nn.initializers.zeros, ("vocab",)), (c.vocab_size,), jnp.dtype(c.param_dtype))

  def embed(self, input_ids):
    """[B, L] ids -> [B, L, E] scaled token embeddings (what inputs_embeds replaces)."""
    return self.shared(input_ids) * jnp.asarray(self.config.embed_scale, jnp.dtype(self.config.dtype))

  def init_cache(self, batch: int, max_len: int, dtype=None):
    """Zero self-attention KV cache: (k, v), each [decoder_layers, B, max_len, H, Dh]."""
    c = self.config
    h = c.decoder_attention_heads
    shape = (c.decoder_layers, batch, max_len, h, c.d_model // h)
    dtype = jnp.dtype(dtype or c.dtype)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)

  def encode(self, input_ids=None, *, inputs_embeds=None, attention_mask=None, deterministic: bool = True):
    """-> encoder last hidden state [B, S, E]. attention_mask [B, S]: 1 = token, 0 = padding."""
    c = self.config
    if (input_ids is None) == (inputs_embeds is None):
      raise ConfigError("give exactly one of input_ids [B, S] or inputs_embeds [B, S, E]")
    h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(jnp.dtype(c.dtype))
    s = h.shape[1]
    if s > c.max_position_embeddings:
      raise ConfigError(f"source length {s} exceeds max_position_embeddings {c.max_position_embeddings}")
    h = h + self.encoder_positions(jnp.arange(s) + 2)[None]
    h = self.encoder_layernorm_embedding(h)
    mask = None if attention_mask is None else jnp.asarray(attention_mask, bool)[:, None, None, :]
    h, _ = self.encoder_layers(h, mask, deterministic)
    return self.encoder_layer_norm(h)

  def decode(self, decoder_input_ids, encoder_hidden_states=None, *, encoder_attention_mask=None,
             decoder_attention_mask=None, cache=None, cache_index=None, cross_kv=None,
             deterministic: bool = True, return_hidden: bool = False):
    """decoder_input_ids [B, L] -> logits [B, L, V] float32.

    With `cache` (init_cache) the ids sit at positions cache_index.. and the call returns
    (logits, new cache, cross_kv); cross_kv ((k, v) each [layers, B, S, H, Dh]) is computed from
    encoder_hidden_states when not given, and reused by later steps (then encoder_hidden_states may be None)."""
    c = self.config
    l = decoder_input_ids.shape[1]
    start = 0 if cache_index is None else jnp.asarray(cache_index, jnp.int32)
    h = self.embed(decoder_input_ids) + self.decoder_positions(jnp.arange(l) + start + 2)[None]
    h = self.decoder_layernorm_embedding(h)
    enc_mask = None if encoder_attention_mask is None else jnp.asarray(encoder_attention_mask, bool)[:, None, None, :]
    self_mask = None
    if decoder_attention_mask is not None:
      self_mask = jnp.asarray(decoder_attention_mask, bool)[:, None, None, :]
    enc = None if encoder_hidden_states is None else encoder_hidden_states.astype(jnp.dtype(c.dtype))
    if enc is None and cross_kv is None:
      raise ConfigError("decode needs encoder_hidden_states [B, S, E] or cross_kv from an earlier call")
    h, (new_cache, new_cross) = self.decoder_layers(h, enc, enc_mask, self_mask, start, cross_kv, cache,
                                                    deterministic)
    h = self.decoder_layer_norm(h)
    if return_hidden:
      out = h
    else:
      out = self.shared.attend(h).astype(jnp.float32) + self.final_logits_bias.astype(jnp.float32)
      out = nn.with_logical_constraint(out, ("batch", None, "act_vocab"))
    if cache is None:
      return out
    return out, new_cache, (cross_kv if cross_kv is not None else new_cross)

  def __call__(self, input_ids=None, decoder_input_ids=None, *, inputs_embeds=None, attention_mask=None,
               decoder_attention_mask=None, deterministic: bool = True):
    """Teacher-forced forward -> logits [B, L, V] float32."""
    enc = self.encode(input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                      deterministic=deterministic)
    return self.decode(decoder_input_ids, enc, encoder_attention_mask=attention_mask,
                       decoder_attention_mask=decoder_attention_mask, deterministic=deterministic)


@dataclasses.dataclass(frozen=True)
class MBartGenerator:
  """Encoder-decoder adapter for shared.decoding (greedy / sample / beam_search).

  Cache: {"kv": (k, v) [layers, N, S_max, H, Dh], "cross": (k, v) [layers, N, S, H, Dh],
  "enc_mask": [N, S], "index": scalar next slot}.
    logits, cache = gen.prefill(params, input_ids=src, attention_mask=m, max_new_tokens=T)
    tokens = shared.decoding.search.greedy(gen, params, logits, cache, max_new_tokens=T, eos_ids=(2,))
  The decoder prefix defaults to [decoder_start_token_id]; tokens returned are those after the prefix."""
  module: MBart

  def prefill(self, params, *, input_ids=None, inputs_embeds=None, attention_mask=None, encoder_hidden_states=None,
              decoder_input_ids=None, max_new_tokens: int):
    m = self.module
    if encoder_hidden_states is None:
      encoder_hidden_states = m.apply({"params": params}, input_ids, inputs_embeds=inputs_embeds,
                                      attention_mask=attention_mask, method=m.encode)
    b, s = encoder_hidden_states.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((b, s), jnp.int32)
    if decoder_input_ids is None:
      decoder_input_ids = jnp.full((b, 1), m.config.decoder_start_token_id, jnp.int32)
    p = decoder_input_ids.shape[1]
    kv = m.init_cache(b, p + max_new_tokens)
    logits, kv, cross = m.apply({"params": params}, decoder_input_ids, encoder_hidden_states,
                                encoder_attention_mask=attention_mask, cache=kv, cache_index=0, method=m.decode)
    cache = {"kv": kv, "cross": cross, "enc_mask": jnp.asarray(attention_mask, jnp.int32),
             "index": jnp.asarray(p, jnp.int32)}
    return logits[:, -1], cache

  def step(self, params, tokens, cache):
    m = self.module
    logits, kv, _ = m.apply({"params": params}, tokens[:, None], None, encoder_attention_mask=cache["enc_mask"],
                            cache=cache["kv"], cache_index=cache["index"], cross_kv=cache["cross"], method=m.decode)
    return logits[:, 0], {**cache, "kv": kv, "index": cache["index"] + 1}

  def reorder(self, cache, index):
    take = lambda x: jnp.take(x, index, axis=1)
    return {**cache, "kv": jax.tree_util.tree_map(take, cache["kv"]),
            "cross": jax.tree_util.tree_map(take, cache["cross"]),
            "enc_mask": jnp.take(cache["enc_mask"], index, axis=0)}

  def tile(self, cache, k: int):
    n = cache["enc_mask"].shape[0]
    return self.reorder(cache, jnp.repeat(jnp.arange(n), k))
