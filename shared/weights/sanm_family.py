"""Name tables + FunASR model directories for the SANM family (shared.models.sanm), both ways.

FunASR keeps one model-level state dict: `encoder.*` (SANMEncoder), `decoder.*` (ParaformerSANMDecoder),
`ctc.ctc_lo.*` (CTC) and, in Paraformer, `predictor.*` (CIF; not modelled, ignored on import). Our params are
one tree per module; the functions below take dicts keyed by part name ("encoder", "decoder", "ctc"):

  sd = to_torch_state_dict(params, modules)          # {FunASR key: np.ndarray}; torch.load_state_dict(strict)
  params = from_torch_state_dict(sd, modules)        # -> {"encoder": ..., "decoder": ..., "ctc": ...}
  save_funasr(dir, modules, params, config=None)     # config.yaml + model.safetensors (+ model.pt on request)
  modules, params, config = load_funasr(dir)         # config.yaml + model.safetensors | model.pt

`prefixes` (default {"encoder": "encoder.", "decoder": "decoder.", "ctc": "ctc."}) maps a part to its key
prefix (give "" for a bare funasr SANMEncoder's own state dict). Both directions run on the SAME rows
(`rows(modules, prefixes)`), each (our "<part>/<param path>", their key, transform).

FunASR's config.yaml is not a transformers config.json (three modules, their own keys), so this family is not
registered with shared.weights.load_pretrained; these two functions are its entry points. config.yaml layout
(what FunASR's trainer writes; unknown keys such as frontend / tokenizer / model_conf are carried through):
  model: <model class>   input_size: Din   vocab_size: V
  encoder: SANMEncoder          encoder_conf: {output_size, attention_heads, linear_units, num_blocks,
                                               input_layer, kernel_size, sanm_shfit, normalize_before, ...}
  decoder: ParaformerSANMDecoder decoder_conf: {attention_heads, linear_units, num_blocks, att_layer_num,
                                               kernel_size, sanm_shfit}
  ctc_conf: {...}
FunASR's AutoModel reads `model.pt` (torch.load) and takes vocab_size from its tokenizer, input_size from its
frontend; here input_size / vocab_size come from config.yaml, else from the checkpoint's shapes.
"""
from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from shared.errors import CheckpointError, ConfigError
from shared.models.sanm import CTCHead, SANMDecoder, SANMDecoderConfig, SANMEncoder, SANMEncoderConfig
from shared.weights import io, table
from shared.weights.table import IDENTITY, LINEAR, Row, Transform

PREFIXES = {"encoder": "encoder.", "decoder": "decoder.", "ctc": "ctc."}
# torch depthwise Conv1d weight [D, 1, k] <-> our temporal_conv kernel [k, D]
FSMN = Transform("fsmn", lambda x: x[:, 0, :].T, lambda x: x.T[:, None, :])
ENCODER_NAMES = ("SANMEncoder", "sanm")
DECODER_NAMES = ("ParaformerSANMDecoder", "paraformer_decoder_sanm")
IGNORE = (r"predictor\..*",)


def _linear(ours, theirs, n=None, bias=True):
  out = [Row(f"{ours}/kernel", f"{theirs}.weight", LINEAR, n)]
  return out + ([Row(f"{ours}/bias", f"{theirs}.bias", IDENTITY, n)] if bias else [])


def _norm(ours, theirs, n=None):
  return [Row(f"{ours}/scale", f"{theirs}.weight", IDENTITY, n), Row(f"{ours}/bias", f"{theirs}.bias", IDENTITY, n)]


def encoder_rows(cfg: SANMEncoderConfig, ours: str = "", theirs: str = "") -> list[Row]:
  """SANMEncoder: encoders0.0.*, encoders.{i}.* (our scanned `encoders`), after_norm, [embed.0/1 for 'linear']."""
  out = []
  if cfg.input_layer == "linear":
    out += _linear(ours + "embed_linear", theirs + "embed.0") + _norm(ours + "embed_norm", theirs + "embed.1")
  stacks = [(ours + "encoders0/", theirs + "encoders0.0.", None)]
  if cfg.num_blocks > 1:
    stacks.append((ours + "encoders/", theirs + "encoders.{i}.", cfg.num_blocks - 1))
  for o, t, n in stacks:
    out += _linear(o + "self_attn/linear_q_k_v", t + "self_attn.linear_q_k_v", n)
    out += _linear(o + "self_attn/linear_out", t + "self_attn.linear_out", n)
    out.append(Row(o + "self_attn/fsmn_block/kernel", t + "self_attn.fsmn_block.weight", FSMN, n))
    out += _linear(o + "feed_forward/w_1", t + "feed_forward.w_1", n)
    out += _linear(o + "feed_forward/w_2", t + "feed_forward.w_2", n)
    out += _norm(o + "norm1", t + "norm1", n) + _norm(o + "norm2", t + "norm2", n)
  return out + _norm(ours + "after_norm", theirs + "after_norm")


def _decoder_layer_rows(o, t, n, fsmn: bool, cross: bool):
  out = _norm(o + "norm1", t + "norm1", n)
  out += _linear(o + "feed_forward/w_1", t + "feed_forward.w_1", n)
  out += _norm(o + "feed_forward/norm", t + "feed_forward.norm", n)
  out += _linear(o + "feed_forward/w_2", t + "feed_forward.w_2", n, bias=False)
  if fsmn:
    out += _norm(o + "norm2", t + "norm2", n) + [Row(o + "self_attn/kernel", t + "self_attn.fsmn_block.weight",
                                                     FSMN, n)]
  if cross:
    out += _norm(o + "norm3", t + "norm3", n)
    for p in ("linear_q", "linear_k_v", "linear_out"):
      out += _linear(f"{o}src_attn/{p}", f"{t}src_attn.{p}", n)
  return out


def decoder_rows(cfg: SANMDecoderConfig, ours: str = "", theirs: str = "") -> list[Row]:
  """ParaformerSANMDecoder: embed.0, decoders.{i}, decoders2.{i}, decoders3.0, after_norm, output_layer."""
  out = [Row(ours + "embed/embedding", theirs + "embed.0.weight")]
  if cfg.att_layer_num:
    out += _decoder_layer_rows(ours + "decoders/", theirs + "decoders.{i}.", cfg.att_layer_num, True, True)
  if cfg.num_blocks - cfg.att_layer_num:
    out += _decoder_layer_rows(ours + "decoders2/", theirs + "decoders2.{i}.", cfg.num_blocks - cfg.att_layer_num,
                               True, False)
  out += _decoder_layer_rows(ours + "decoders3/", theirs + "decoders3.0.", None, False, False)
  return out + _norm(ours + "after_norm", theirs + "after_norm") + _linear(ours + "output_layer",
                                                                            theirs + "output_layer")


def ctc_rows(ours: str = "", theirs: str = "") -> list[Row]:
  return _linear(ours + "ctc_lo", theirs + "ctc_lo")


def rows(modules: Mapping[str, nn.Module], prefixes: Mapping[str, str] | None = None) -> list[Row]:
  """One table over the given parts; our paths are "<part>/<path in that part's params>"."""
  prefixes = {**PREFIXES, **(prefixes or {})}
  out = []
  for part, module in modules.items():
    if part == "encoder":
      out += encoder_rows(module.config, "encoder/", prefixes[part])
    elif part == "decoder":
      out += decoder_rows(module.config, "decoder/", prefixes[part])
    elif part == "ctc":
      out += ctc_rows("ctc/", prefixes[part])
    else:
      raise CheckpointError(f"unknown SANM part {part!r}; expected encoder, decoder or ctc")
  return out


def example_inputs(part: str, module) -> tuple:
  if part == "encoder":
    return jnp.zeros((1, 2, module.config.input_size), jnp.float32), jnp.full((1,), 2, jnp.int32)
  if part == "decoder":
    d = module.config.encoder_output_size
    return jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2, d), jnp.float32), jnp.ones((1, 2), bool)
  return (jnp.zeros((1, 2, module.encoder_output_size), jnp.float32),)


def abstract_params(modules: Mapping[str, nn.Module]) -> dict[tuple, tuple]:
  """{("<part>", ...path): shape} of every part's params (eval_shape; no memory)."""
  out = {}
  for part, module in modules.items():
    shapes = jax.eval_shape(lambda m=module, p=part: m.init(jax.random.key(0), *example_inputs(p, m)))
    for k, v in traverse_util.flatten_dict(nn.meta.unbox(shapes["params"])).items():
      out[(part,) + k] = tuple(v.shape)
  return out


def _flat(params: Mapping[str, object]) -> dict[tuple, object]:
  return {(part,) + k: v for part, tree in params.items()
          for k, v in traverse_util.flatten_dict(nn.meta.unbox(tree)).items()}


def _import(reader, modules, prefixes, dtype, ignore, source):
  table_rows = rows(modules, prefixes)
  expected = abstract_params(modules)
  table.check_coverage(table_rows, expected)
  flat = table.import_tensors(table_rows, reader, expected, np.dtype(dtype), tuple(IGNORE) + tuple(ignore),
                              source=source)
  tree = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
  return {part: tree[part] for part in modules}


def from_torch_state_dict(sd: Mapping[str, object], modules: Mapping[str, nn.Module], *,
                          prefixes: Mapping[str, str] | None = None, dtype=jnp.float32, ignore=(),
                          source: str = "state_dict") -> dict:
  """FunASR state dict (torch tensors or arrays) -> {part: params}. CheckpointError lists missing /
  unexpected / mis-shaped keys (keys of parts not in `modules` count as unexpected unless `ignore`d)."""
  return _import(io.StateDictReader(sd), modules, prefixes, dtype, ignore, source)


def _specs(params, modules, prefixes, dtype=None):
  table_rows = rows(modules, prefixes)
  flat = _flat({part: params[part] for part in modules})
  table.check_coverage(table_rows, {k: v.shape for k, v in flat.items()})
  return table.export_specs(table_rows, flat, dtype)


def to_torch_state_dict(params: Mapping[str, object], modules: Mapping[str, nn.Module], *,
                        prefixes: Mapping[str, str] | None = None, dtype=None) -> dict[str, np.ndarray]:
  """{part: params} -> {FunASR key: np.ndarray} (torch.from_numpy each for load_state_dict(strict=True))."""
  return {key: produce() for key, _, _, produce in _specs(params, modules, prefixes, dtype)}


# ---------------------------------------------------------------- config.yaml

_ENC_KEYS = ("output_size", "attention_heads", "linear_units", "num_blocks", "input_layer", "kernel_size",
             "sanm_shfit")
_DEC_KEYS = ("attention_heads", "linear_units", "num_blocks", "att_layer_num", "kernel_size", "sanm_shfit")
# encoder_conf values this implementation requires (FunASR defaults)
_ENC_FIXED = {"normalize_before": True, "concat_after": False, "selfattention_layer_type": "sanm",
              "positionwise_layer_type": "linear", "interctc_layer_idx": [], "lora_list": None}
_DEC_FIXED = {"normalize_before": True, "concat_after": False, "input_layer": "embed", "use_output_layer": True,
              "wo_input_layer": False, "lora_list": None}


def _check_fixed(conf: dict, fixed: dict, where: str):
  for k, want in fixed.items():
    if k in conf and conf[k] != want and not (want == [] and conf[k] is None):
      raise ConfigError(f"{where}.{k} = {conf[k]!r} is not supported (expected {want!r})")


def encoder_config(conf: dict, input_size: int, **overrides) -> SANMEncoderConfig:
  _check_fixed(conf, _ENC_FIXED, "encoder_conf")
  d = SANMEncoderConfig.__dataclass_fields__
  kw = {k: conf.get(k, d[k].default) for k in _ENC_KEYS}
  return SANMEncoderConfig(input_size=int(input_size), **kw, **overrides)


def decoder_config(conf: dict, vocab_size: int, encoder_output_size: int, **overrides) -> SANMDecoderConfig:
  _check_fixed(conf, _DEC_FIXED, "decoder_conf")
  # FunASR's own defaults (ParaformerSANMDecoder signature), not ours
  defaults = {"attention_heads": 4, "linear_units": 2048, "num_blocks": 6, "att_layer_num": 6, "kernel_size": 21,
              "sanm_shfit": 0}
  kw = {k: conf.get(k, defaults[k]) for k in _DEC_KEYS}
  return SANMDecoderConfig(vocab_size=int(vocab_size), encoder_output_size=int(encoder_output_size), **kw,
                           **overrides)


def to_config(modules: Mapping[str, nn.Module], base: Mapping | None = None) -> dict:
  """The config.yaml dict: `base` (e.g. a loaded config.yaml: frontend, tokenizer, model_conf, ...) updated with
  what the modules define."""
  cfg = dict(base or {})
  enc = modules["encoder"].config
  cfg.setdefault("model", "Transformer")   # FunASR's generic encoder/decoder/ctc model: the same key layout
  has_dec, has_ctc = "decoder" in modules, "ctc" in modules
  model_conf = dict(cfg.get("model_conf") or {})
  w = model_conf.get("ctc_weight")
  if w is None or (w == 0.0) == has_ctc or (w == 1.0) == has_dec:   # FunASR builds ctc iff w > 0, decoder iff w < 1
    model_conf["ctc_weight"] = 0.5 if has_dec and has_ctc else (1.0 if has_ctc else 0.0)
  cfg["model_conf"] = model_conf
  cfg["input_size"] = enc.input_size
  cfg["encoder"] = cfg.get("encoder") if cfg.get("encoder") in ENCODER_NAMES else "SANMEncoder"
  cfg["encoder_conf"] = {**dict(cfg.get("encoder_conf") or {}), **{k: getattr(enc, k) for k in _ENC_KEYS},
                         "normalize_before": True, "selfattention_layer_type": "sanm"}
  vocab = None
  if has_dec:
    dec = modules["decoder"].config
    vocab = dec.vocab_size
    cfg["decoder"] = cfg.get("decoder") if cfg.get("decoder") in DECODER_NAMES else "ParaformerSANMDecoder"
    cfg["decoder_conf"] = {**dict(cfg.get("decoder_conf") or {}), **{k: getattr(dec, k) for k in _DEC_KEYS}}
  else:
    cfg.pop("decoder", None)
    cfg.pop("decoder_conf", None)
  if has_ctc:
    if vocab is not None and modules["ctc"].vocab_size != vocab:
      raise ConfigError(f"ctc vocab_size {modules['ctc'].vocab_size} != decoder vocab_size {vocab}")
    vocab = modules["ctc"].vocab_size
    cfg["ctc_conf"] = dict(cfg.get("ctc_conf") or {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True,
                                                    "ignore_nan_grad": True})
  if vocab is not None:
    cfg["vocab_size"] = vocab
  return cfg


def _read_yaml(path: str) -> dict:
  import yaml
  try:
    with open(path) as f:
      cfg = yaml.safe_load(f)
  except FileNotFoundError:
    raise CheckpointError(f"file {path} not found (a FunASR model directory holds config.yaml)") from None
  except yaml.YAMLError as e:
    raise CheckpointError(f"file {path} is not valid YAML: {e}") from None
  if not isinstance(cfg, dict):
    raise CheckpointError(f"file {path} is not a YAML mapping")
  return cfg


def _reader(path: str):
  st = os.path.join(path, "model.safetensors")
  pt = os.path.join(path, "model.pt")
  if os.path.exists(st) or os.path.exists(os.path.join(path, io.INDEX)):
    return io.SafetensorsReader(path), st
  if not os.path.exists(pt):
    raise CheckpointError(f"{path}: no model.safetensors nor model.pt")
  sd = io.load_torch_state_dict(pt, unwrap=("state_dict", "model"))   # FunASR's load_pretrained_model unwraps these
  return io.StateDictReader(sd), pt


def _shape(reader, key):
  return tuple(reader.shape(key)) if key in set(reader.keys()) else None


def modules_from_config(cfg: dict, reader=None, source: str = "config.yaml", **overrides) -> dict:
  """{part: module} from a config.yaml dict; input_size / vocab_size fall back on the checkpoint's shapes.
  A CTC head is built when the checkpoint holds ctc.ctc_lo.weight (or, without a reader, ctc_conf is given)."""
  enc_name = cfg.get("encoder")
  if enc_name not in ENCODER_NAMES:
    raise CheckpointError(f"{source}: encoder {enc_name!r} is not supported; expected one of {ENCODER_NAMES}")
  keys = set(reader.keys()) if reader is not None else set()
  input_size = cfg.get("input_size")
  qkv = _shape(reader, "encoder.encoders0.0.self_attn.linear_q_k_v.weight") if reader else None
  if input_size is None and qkv is not None:
    input_size = qkv[1]
  if input_size is None:
    raise CheckpointError(f"{source}: no input_size, and no encoder.encoders0.0.self_attn.linear_q_k_v.weight "
                          "to read it from")
  vocab = cfg.get("vocab_size")
  if vocab is None or int(vocab) <= 0:
    vocab = next((s[0] for k in ("decoder.output_layer.weight", "ctc.ctc_lo.weight", "decoder.embed.0.weight")
                  if reader is not None and (s := _shape(reader, k)) is not None), None)
  enc = SANMEncoder(encoder_config(dict(cfg.get("encoder_conf") or {}), input_size, **overrides))
  modules = {"encoder": enc}
  has_dec = cfg.get("decoder") is not None
  has_ctc = "ctc.ctc_lo.weight" in keys if reader is not None else cfg.get("ctc_conf") is not None
  if (has_dec or has_ctc) and vocab is None:
    raise CheckpointError(f"{source}: no vocab_size, and no decoder.output_layer / ctc.ctc_lo weight to read it from")
  if has_dec:
    if cfg["decoder"] not in DECODER_NAMES:
      raise CheckpointError(f"{source}: decoder {cfg['decoder']!r} is not supported; expected one of {DECODER_NAMES}")
    modules["decoder"] = SANMDecoder(decoder_config(dict(cfg.get("decoder_conf") or {}), vocab,
                                                    enc.config.output_size, **overrides))
  if has_ctc:
    modules["ctc"] = CTCHead(int(vocab), enc.config.output_size)
  return modules


def load_funasr(path: str, *, dtype=jnp.float32, ignore=(), **overrides):
  """FunASR model directory (config.yaml + model.safetensors, or model.pt read with torch.load(weights_only=True))
  -> (modules {part: module}, params {part: params}, config dict). `overrides` go to every part's config
  (dtype="bfloat16" compute, remat_policy, attention_impl, conv_impl)."""
  cfg_path = os.path.join(path, "config.yaml")
  cfg = _read_yaml(cfg_path)
  reader, source = _reader(path)
  modules = modules_from_config(cfg, reader, cfg_path, **overrides)
  return modules, _import(reader, modules, None, dtype, ignore, source), cfg


def save_funasr(path: str, modules: Mapping[str, nn.Module], params: Mapping[str, object], *,
                config: Mapping | None = None, dtype=None, write_pt: bool = False):
  """Writes config.yaml (to_config(modules, config)) + model.safetensors under FunASR's keys. write_pt also
  writes model.pt (torch.save of the state dict; what FunASR's AutoModel reads; needs torch)."""
  import yaml
  if "encoder" not in modules:
    raise CheckpointError("save_funasr: a FunASR model directory needs an encoder (modules['encoder'])")
  os.makedirs(path, exist_ok=True)
  specs = _specs(params, modules, None, dtype)
  with open(os.path.join(path, "config.yaml"), "w") as f:
    yaml.safe_dump(to_config(modules, config), f, sort_keys=False)
  io.write_checkpoint(path, specs)
  if write_pt:
    import torch
    torch.save({key: torch.from_numpy(np.array(produce())) for key, _, _, produce in specs},
               os.path.join(path, "model.pt"))
