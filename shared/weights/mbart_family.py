"""Name table + config mapping for transformers MBartForConditionalGeneration <-> shared.models.mbart.MBart.

Tied checkpoints store the table once as model.shared.weight (model.{encoder,decoder}.embed_tokens.weight
and lm_head.weight, when present, are the same tensor and are ignored on import); final_logits_bias
is [1, V] on their side, [V] on ours. config.json keys MBartConfig does not model (dropout, init_std,
use_cache, ...) are kept in its `hf_extra` on import and written back on export.
"""
from __future__ import annotations

import jax.numpy as jnp

from shared.errors import CheckpointError
from shared.models.mbart import MBart, MBartConfig
from shared.weights.table import IDENTITY, LINEAR, Row, reshape, carry_extra, with_extra

ARCH = "MBartForConditionalGeneration"
# config.json keys from_config reads (to_config writes them from the config); the rest goes to hf_extra,
# except keys that describe the written files (rewritten by save_pretrained) and "_"-prefixed bookkeeping
_READ = ("architectures", "model_type", "vocab_size", "d_model", "encoder_layers", "decoder_layers",
         "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
         "max_position_embeddings", "scale_embedding", "activation_function", "tie_word_embeddings", "pad_token_id",
         "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_eos_token_id")


def _start(cfg: dict) -> int:
  """transformers' generate() starts from decoder_start_token_id, or bos_token_id when that is unset."""
  start = cfg.get("decoder_start_token_id")
  return int(cfg.get("bos_token_id", 0) if start is None else start)


def from_config(cfg: dict, *, compute_dtype="float32", **overrides) -> MBart:
  if cfg.get("add_final_layer_norm") is False or cfg.get("normalize_before") is False:
    raise CheckpointError("config.json: only pre-LN MBart with final layer norms is supported")
  if not cfg.get("tie_word_embeddings", True):
    raise CheckpointError("config.json tie_word_embeddings=false (separate encoder/decoder/output tables) is not "
                          "supported; MBart checkpoints tie them (model.shared.weight)")
  c = MBartConfig(
      vocab_size=cfg["vocab_size"], d_model=cfg["d_model"], encoder_layers=cfg["encoder_layers"],
      decoder_layers=cfg["decoder_layers"], encoder_attention_heads=cfg["encoder_attention_heads"],
      decoder_attention_heads=cfg["decoder_attention_heads"], encoder_ffn_dim=cfg["encoder_ffn_dim"],
      decoder_ffn_dim=cfg["decoder_ffn_dim"], max_position_embeddings=cfg["max_position_embeddings"],
      scale_embedding=bool(cfg.get("scale_embedding", False)),
      activation_function=cfg.get("activation_function", "gelu"),
      pad_token_id=cfg.get("pad_token_id", 1),
      bos_token_id=cfg.get("bos_token_id", 0), eos_token_id=cfg.get("eos_token_id", 2),
      decoder_start_token_id=_start(cfg),
      forced_eos_token_id=cfg.get("forced_eos_token_id", 2), dtype=str(jnp.dtype(compute_dtype)),
      hf_extra=carry_extra(cfg, _READ))
  return MBart(c.replace(**overrides) if overrides else c)


def to_config(module: MBart) -> dict:
  """Defaults (no dropout) < the imported keys in hf_extra < the fields MBartConfig models."""
  c = module.config
  defaults = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.0,
              "decoder_layerdrop": 0.0, "is_encoder_decoder": True}
  modelled = {
      "architectures": [ARCH], "model_type": "mbart", "vocab_size": c.vocab_size, "d_model": c.d_model,
      "encoder_layers": c.encoder_layers, "decoder_layers": c.decoder_layers,
      "encoder_attention_heads": c.encoder_attention_heads, "decoder_attention_heads": c.decoder_attention_heads,
      "encoder_ffn_dim": c.encoder_ffn_dim, "decoder_ffn_dim": c.decoder_ffn_dim,
      "max_position_embeddings": c.max_position_embeddings, "scale_embedding": c.scale_embedding,
      "activation_function": c.activation_function, "tie_word_embeddings": True,
      "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
      "decoder_start_token_id": c.decoder_start_token_id, "forced_eos_token_id": c.forced_eos_token_id,
      "dtype": "float32",
  }
  return with_extra(defaults, c.hf_extra, modelled)


def _layer_rows(side: str, n: int, attns: tuple[str, ...], lns: tuple[str, ...]) -> list[Row]:
  out = []
  L = lambda ours, theirs, t: Row(f"{side}_layers/{ours}", f"model.{side}.layers.{{i}}.{theirs}", t, n)
  for a in attns:
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
      out += [L(f"{a}/{p}/kernel", f"{a}.{p}.weight", LINEAR), L(f"{a}/{p}/bias", f"{a}.{p}.bias", IDENTITY)]
  for ln in lns:
    out += [L(f"{ln}/scale", f"{ln}.weight", IDENTITY), L(f"{ln}/bias", f"{ln}.bias", IDENTITY)]
  for fc in ("fc1", "fc2"):
    out += [L(f"mlp/{fc}/kernel", f"{fc}.weight", LINEAR), L(f"mlp/{fc}/bias", f"{fc}.bias", IDENTITY)]
  return out


def rows(module: MBart) -> list[Row]:
  c = module.config
  out = [Row("shared/embedding", "model.shared.weight"),
         Row("final_logits_bias", "final_logits_bias", reshape((c.vocab_size,), (1, c.vocab_size)))]
  for side in ("encoder", "decoder"):
    out.append(Row(f"{side}_positions/embedding", f"model.{side}.embed_positions.weight"))
    for ln in ("layernorm_embedding", "layer_norm"):
      out += [Row(f"{side}_{ln}/scale", f"model.{side}.{ln}.weight"),
              Row(f"{side}_{ln}/bias", f"model.{side}.{ln}.bias")]
  out += _layer_rows("encoder", c.encoder_layers, ("self_attn",), ("self_attn_layer_norm", "final_layer_norm"))
  out += _layer_rows("decoder", c.decoder_layers, ("self_attn", "encoder_attn"),
                     ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"))
  return out


def ignore(module: MBart) -> tuple[str, ...]:
  return (r"model\.encoder\.embed_tokens\.weight", r"model\.decoder\.embed_tokens\.weight", r"lm_head\.weight")


def example_inputs(module: MBart) -> tuple:
  return (jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32))


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="mbart", model_types=("mbart",), module_class=MBart, from_config=from_config,
                to_config=to_config, rows=rows, example_inputs=example_inputs, ignore=ignore,
                peft_task_type="SEQ_2_SEQ_LM")
