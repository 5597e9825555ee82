"""Name table + config mapping for transformers LlamaForCausalLM and Qwen3ForCausalLM <-> shared.models.llm.

config.json keys LLMConfig does not model (initializer_range, use_cache, pretraining_tp, Qwen3's sliding_window /
max_window_layers, ...) are kept in its `hf_extra` on import and written back on export.
"""
from __future__ import annotations

import jax.numpy as jnp

from shared.errors import CheckpointError
from shared.models.llm import LLM, LLMConfig
from shared.weights.table import IDENTITY, LINEAR, Row, carry_extra, with_extra

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# config.json keys from_config reads (to_config writes them from the config) and layer_types (derived from the
# sliding-window keys, stale once num_layers changes); the rest goes to hf_extra, except keys that describe the
# written files (rewritten by save_pretrained) and "_"-prefixed bookkeeping
_READ = ("architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
         "rope_parameters", "tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act",
         "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "layer_types")


def _rope(cfg: dict) -> tuple[float, dict]:
  params = dict(cfg.get("rope_parameters") or {})
  if not params:  # transformers 4.x layout
    params = dict(cfg.get("rope_scaling") or {})
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
  theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
  kind = params.pop("rope_type", params.pop("type", "default"))
  if kind == "default":
    return theta, {}
  if kind not in ("llama3", "linear"):
    raise CheckpointError(f"config.json rope type {kind!r} is not supported (default, linear, llama3)")
  return theta, {"rope_type": kind, **params}


def from_config(cfg: dict, *, compute_dtype="float32", **overrides) -> LLM:
  mt = cfg["model_type"]
  if cfg.get("use_sliding_window"):
    raise CheckpointError("config.json use_sliding_window=true is not supported")
  theta, scaling = _rope(cfg)
  heads = cfg["num_attention_heads"]
  eos = cfg.get("eos_token_id")
  c = LLMConfig(
      vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
      num_layers=cfg["num_hidden_layers"], num_heads=heads, num_kv_heads=cfg.get("num_key_value_heads") or heads,
      head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
      rope_theta=theta, rope_scaling=scaling, qk_norm=(mt == "qwen3"),
      tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), attention_bias=bool(cfg.get("attention_bias")),
      mlp_bias=bool(cfg.get("mlp_bias", False)), hidden_act=cfg.get("hidden_act", "silu"),
      max_position_embeddings=cfg.get("max_position_embeddings", 2048), family=mt,
      bos_token_id=cfg.get("bos_token_id"), eos_token_id=tuple(eos) if isinstance(eos, list) else (
          () if eos is None else (eos,)), pad_token_id=cfg.get("pad_token_id"), dtype=str(jnp.dtype(compute_dtype)),
      hf_extra=carry_extra(cfg, _READ))
  return LLM(c.replace(**overrides) if overrides else c)


def to_config(module: LLM) -> dict:
  """Defaults < the imported keys in hf_extra < the fields LLMConfig models."""
  c = module.config
  rope = {"rope_type": "default", "rope_theta": c.rope_theta, **dict(c.rope_scaling)}
  out = with_extra({"attention_dropout": 0.0}, c.hf_extra, {
      "architectures": [ARCHITECTURES[c.family]], "model_type": c.family, "vocab_size": c.vocab_size,
      "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
      "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim,
      "rms_norm_eps": c.rms_eps, "rope_parameters": rope, "tie_word_embeddings": c.tie_embeddings,
      "attention_bias": c.attention_bias, "hidden_act": c.hidden_act,
      "max_position_embeddings": c.max_position_embeddings, "bos_token_id": c.bos_token_id,
      "eos_token_id": (c.eos_token_id[0] if len(c.eos_token_id) == 1 else list(c.eos_token_id) or None),
      "pad_token_id": c.pad_token_id, "dtype": "float32",
  })
  if c.family == "llama":
    out["mlp_bias"] = c.mlp_bias
  return out


def rows(module: LLM) -> list[Row]:
  c = module.config
  n = c.num_layers
  L = lambda ours, theirs, t=LINEAR: Row("layers/" + ours, "model.layers.{i}." + theirs, t, n)
  out = [Row("embed_tokens/embedding", "model.embed_tokens.weight"), Row("norm/scale", "model.norm.weight")]
  out += [L("input_layernorm/scale", "input_layernorm.weight", IDENTITY),
          L("post_attention_layernorm/scale", "post_attention_layernorm.weight", IDENTITY)]
  for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
    out.append(L(f"self_attn/{p}/kernel", f"self_attn.{p}.weight"))
    if c.attention_bias:
      out.append(L(f"self_attn/{p}/bias", f"self_attn.{p}.bias", IDENTITY))
  if c.qk_norm:
    out += [L("self_attn/q_norm/scale", "self_attn.q_norm.weight", IDENTITY),
            L("self_attn/k_norm/scale", "self_attn.k_norm.weight", IDENTITY)]
  for p in ("gate_proj", "up_proj", "down_proj"):
    out.append(L(f"mlp/{p}/kernel", f"mlp.{p}.weight"))
    if c.mlp_bias:
      out.append(L(f"mlp/{p}/bias", f"mlp.{p}.bias", IDENTITY))
  if not c.tie_embeddings:
    out.append(Row("lm_head/kernel", "lm_head.weight", LINEAR))
  return out


def ignore(module: LLM) -> tuple[str, ...]:
  pats = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq")
  return pats + ((r"lm_head\.weight",) if module.config.tie_embeddings else ())


def example_inputs(module: LLM) -> tuple:
  return (jnp.zeros((1, 1), jnp.int32),)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="llm", model_types=tuple(ARCHITECTURES), module_class=LLM, from_config=from_config,
                to_config=to_config, rows=rows, example_inputs=example_inputs, ignore=ignore,
                peft_task_type="CAUSAL_LM")
