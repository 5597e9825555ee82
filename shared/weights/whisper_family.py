"""Name table + config mapping for the Whisper encoder <-> shared.models.whisper.WhisperEncoder.

Reads the encoder of WhisperEncoder ("conv1.weight", ...), WhisperModel ("encoder.*") and
WhisperForConditionalGeneration ("model.encoder.*") directories (by config.json "architectures";
decoder keys are ignored). Export writes the same layout as the imported one (config field
`architecture`); a module built directly, or with config.replace(architecture="WhisperEncoder"),
exports a directory that transformers' WhisperEncoder.from_pretrained loads. Exporting with a
WhisperModel / ...ForConditionalGeneration layout writes the encoder only (the decoder would be new).
config.json keys the encoder does not model (decoder sizes, vocab_size, max_target_positions, token ids,
suppress_tokens, ...) are kept in the config's `hf_extra` on import and written back on export, so the
export loads in the imported class (its decoder newly initialised); a config made from scratch writes a
decoder as wide as the encoder (heads, ffn, layers), so WhisperModel / ...ForConditionalGeneration load it too.
"""
from __future__ import annotations

import jax.numpy as jnp

from shared.errors import CheckpointError
from shared.models.whisper import PREFIXES, WhisperEncoder, WhisperEncoderConfig
from shared.weights.table import IDENTITY, LINEAR, Row, transpose, carry_extra, with_extra

CONV = transpose((2, 1, 0), name="conv1d")   # torch [out, in, k] <-> ours [k, in, out]
# config.json keys from_config reads (to_config writes them from the config); the rest goes to hf_extra,
# except keys that describe the written files (rewritten by save_pretrained) and "_"-prefixed bookkeeping
_READ = ("architectures", "model_type", "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
         "encoder_ffn_dim", "max_source_positions", "activation_function")


def from_config(cfg: dict, *, compute_dtype="float32", **overrides) -> WhisperEncoder:
  archs = cfg.get("architectures") or ["WhisperEncoder"]
  arch = next((a for a in archs if a in PREFIXES), None)
  if arch is None:
    raise CheckpointError(f"config.json architectures {archs}: expected one of {sorted(PREFIXES)}")
  c = WhisperEncoderConfig(
      num_mel_bins=cfg["num_mel_bins"], d_model=cfg["d_model"], encoder_layers=cfg["encoder_layers"],
      encoder_attention_heads=cfg["encoder_attention_heads"], encoder_ffn_dim=cfg["encoder_ffn_dim"],
      max_source_positions=cfg["max_source_positions"], activation_function=cfg.get("activation_function", "gelu"),
      architecture=arch, dtype=str(jnp.dtype(compute_dtype)),
      hf_extra=carry_extra(cfg, _READ))
  return WhisperEncoder(c.replace(**overrides) if overrides else c)


def to_config(module: WhisperEncoder) -> dict:
  """Defaults (a decoder as wide as the encoder: transformers' default 6 decoder heads need not divide d_model;
  no dropout) < the imported keys in hf_extra < the fields this encoder models."""
  c = module.config
  defaults = {"decoder_layers": c.encoder_layers, "decoder_attention_heads": c.encoder_attention_heads,
              "decoder_ffn_dim": c.encoder_ffn_dim, "dropout": 0.0, "attention_dropout": 0.0,
              "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0}
  modelled = {
      "architectures": [c.architecture], "model_type": "whisper", "num_mel_bins": c.num_mel_bins,
      "d_model": c.d_model, "encoder_layers": c.encoder_layers, "encoder_attention_heads": c.encoder_attention_heads,
      "encoder_ffn_dim": c.encoder_ffn_dim, "max_source_positions": c.max_source_positions,
      "activation_function": c.activation_function, "dtype": "float32",
  }
  return with_extra(defaults, c.hf_extra, modelled)


def rows(module: WhisperEncoder) -> list[Row]:
  c = module.config
  p = PREFIXES[c.architecture]
  n = c.encoder_layers
  L = lambda ours, theirs, t=IDENTITY: Row("layers/" + ours, p + "layers.{i}." + theirs, t, n)
  out = [Row("conv1/kernel", p + "conv1.weight", CONV), Row("conv1/bias", p + "conv1.bias"),
         Row("conv2/kernel", p + "conv2.weight", CONV), Row("conv2/bias", p + "conv2.bias"),
         Row("embed_positions/embedding", p + "embed_positions.weight"),
         Row("layer_norm/scale", p + "layer_norm.weight"), Row("layer_norm/bias", p + "layer_norm.bias")]
  for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
    out.append(L(f"self_attn/{proj}/kernel", f"self_attn.{proj}.weight", LINEAR))
    if proj != "k_proj":
      out.append(L(f"self_attn/{proj}/bias", f"self_attn.{proj}.bias"))
  for ln in ("self_attn_layer_norm", "final_layer_norm"):
    out += [L(f"{ln}/scale", f"{ln}.weight"), L(f"{ln}/bias", f"{ln}.bias")]
  for fc in ("fc1", "fc2"):
    out += [L(f"mlp/{fc}/kernel", f"{fc}.weight", LINEAR), L(f"mlp/{fc}/bias", f"{fc}.bias")]
  return out


def ignore(module: WhisperEncoder) -> tuple[str, ...]:
  return (r"(model\.)?decoder\..*", r"proj_out\.weight", r"projector\..*", r"classifier\..*", r"layer_weights")


def example_inputs(module: WhisperEncoder) -> tuple:
  return (jnp.zeros((1, 4, module.config.num_mel_bins), jnp.float32),)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="whisper", model_types=("whisper",), module_class=WhisperEncoder, from_config=from_config,
                to_config=to_config, rows=rows, example_inputs=example_inputs, ignore=ignore,
                peft_task_type="FEATURE_EXTRACTION")
