"""Name table + config mapping for transformers UMT5EncoderModel <-> shared.models.umt5.UMT5Encoder.

Import also reads the encoder half of UMT5Model / UMT5ForConditionalGeneration / MT5/T5-style
checkpoints with model_type "umt5" (decoder.*, lm_head.* and the tied encoder.embed_tokens are
ignored); export always writes a UMT5EncoderModel directory. config.json keys UMT5Config does not model
(num_decoder_layers, scale_decoder_outputs, tie_word_embeddings, dropout_rate, ...) are kept in its `hf_extra` on
import and written back on export, so UMT5Model / UMT5ForConditionalGeneration build the imported decoder shape.
"""
from __future__ import annotations

import jax.numpy as jnp

from shared.errors import CheckpointError
from shared.models.umt5 import UMT5Config, UMT5Encoder
from shared.weights.table import IDENTITY, LINEAR, Row, carry_extra, with_extra

# config.json keys from_config reads or transformers derives from feed_forward_proj (to_config writes them from
# the config); the rest goes to hf_extra, except keys that describe the written files and "_"-prefixed bookkeeping
_READ = ("architectures", "model_type", "vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers",
         "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
         "feed_forward_proj", "dense_act_fn", "is_gated_act", "pad_token_id", "eos_token_id")


def _act(cfg: dict) -> str:
  proj = cfg.get("feed_forward_proj", "gated-gelu")
  parts = proj.split("-")
  if len(parts) != 2 or parts[0] != "gated":
    raise CheckpointError(f"config.json feed_forward_proj {proj!r}: only gated activations ('gated-gelu') "
                          "are supported for UMT5")
  return "gelu_new" if parts[1] == "gelu" else parts[1]


def from_config(cfg: dict, *, compute_dtype="float32", **overrides) -> UMT5Encoder:
  c = UMT5Config(
      vocab_size=cfg["vocab_size"], d_model=cfg["d_model"], d_kv=cfg["d_kv"], num_heads=cfg["num_heads"],
      d_ff=cfg["d_ff"], num_layers=cfg["num_layers"],
      relative_attention_num_buckets=cfg.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=cfg.get("relative_attention_max_distance", 128),
      layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-6)), dense_act_fn=_act(cfg),
      pad_token_id=cfg.get("pad_token_id", 0), eos_token_id=cfg.get("eos_token_id", 1),
      dtype=str(jnp.dtype(compute_dtype)),
      hf_extra=carry_extra(cfg, _READ))
  return UMT5Encoder(c.replace(**overrides) if overrides else c)


def to_config(module: UMT5Encoder) -> dict:
  """Defaults < the imported keys in hf_extra < the fields UMT5Config models."""
  c = module.config
  act = "gelu" if c.dense_act_fn == "gelu_new" else c.dense_act_fn
  defaults = {"dropout_rate": 0.0, "decoder_start_token_id": c.pad_token_id, "tie_word_embeddings": True,
              "is_encoder_decoder": True}
  modelled = {
      "architectures": ["UMT5EncoderModel"], "model_type": "umt5", "vocab_size": c.vocab_size,
      "d_model": c.d_model, "d_kv": c.d_kv, "num_heads": c.num_heads, "d_ff": c.d_ff, "num_layers": c.num_layers,
      "relative_attention_num_buckets": c.relative_attention_num_buckets,
      "relative_attention_max_distance": c.relative_attention_max_distance,
      "layer_norm_epsilon": c.layer_norm_epsilon, "feed_forward_proj": f"gated-{act}",
      "pad_token_id": c.pad_token_id, "eos_token_id": c.eos_token_id, "dtype": "float32",
  }
  return with_extra(defaults, c.hf_extra, modelled)


def rows(module: UMT5Encoder) -> list[Row]:
  n = module.config.num_layers
  L = lambda ours, theirs, t=LINEAR: Row("layers/" + ours, "encoder.block.{i}.layer." + theirs, t, n)
  out = [Row("shared/embedding", "shared.weight"), Row("final_layer_norm/scale", "encoder.final_layer_norm.weight")]
  out += [L("attn_norm/scale", "0.layer_norm.weight", IDENTITY), L("ffn_norm/scale", "1.layer_norm.weight", IDENTITY),
          L("relative_attention_bias/embedding", "0.SelfAttention.relative_attention_bias.weight", IDENTITY)]
  out += [L(f"SelfAttention/{p}/kernel", f"0.SelfAttention.{p}.weight") for p in ("q", "k", "v", "o")]
  out += [L(f"DenseReluDense/{ours}/kernel", f"1.DenseReluDense.{theirs}.weight")
          for ours, theirs in (("gate_proj", "wi_0"), ("up_proj", "wi_1"), ("down_proj", "wo"))]
  return out


def ignore(module: UMT5Encoder) -> tuple[str, ...]:
  return (r"encoder\.embed_tokens\.weight", r"decoder\..*", r"lm_head\.weight")


def example_inputs(module: UMT5Encoder) -> tuple:
  return (jnp.zeros((1, 2), jnp.int32),)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="umt5", model_types=("umt5",), module_class=UMT5Encoder, from_config=from_config,
                to_config=to_config, rows=rows, example_inputs=example_inputs, ignore=ignore,
                peft_task_type="FEATURE_EXTRACTION")
