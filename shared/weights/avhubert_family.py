"""AV-HuBERT video path (shared.models.avhubert.AVHubertVideo) <-> the fairseq av_hubert checkpoint keys.

One name table, both ways. Their keys, after a prefix: "" (pretrained AVHubertModel), "encoder.w2v_model."
(fine-tuned seq2seq AVHubertSeq2Seq) or "w2v_encoder.w2v_model." (fine-tuned CTC AVHubertCtc):

  ours (variables path)                              theirs                                    transform
  params|batch_stats/resnet/...                      feature_extractor_video.resnet.*          resnet_family's table
  params/video_proj/{kernel [512, D], bias}          feature_extractor_video.proj.{weight, bias}   linear
  params/audio_proj/{kernel [A, D], bias}            feature_extractor_audio.proj.{weight, bias}   linear
  params/layer_norm/{scale, bias} [2D]               layer_norm.{weight, bias}
  params/post_extract_proj/{kernel [2D, D], bias}    post_extract_proj.{weight, bias}          linear
  params/encoder/pos_conv/weight_g [1, 1, k]         encoder.pos_conv.0.weight_g               (torch layout)
  params/encoder/pos_conv/weight_v [D, D / g, k]     encoder.pos_conv.0.weight_v               (torch layout)
  params/encoder/pos_conv/bias [D]                   encoder.pos_conv.0.bias
  params/encoder/layers/self_attn/{q,k,v,out}_proj/{kernel, bias} [N, ...]
                                                     encoder.layers.{i}.self_attn.{q,k,v,out}_proj.*   linear
  params/encoder/layers/{self_attn_layer_norm, final_layer_norm}/{scale, bias}
                                                     encoder.layers.{i}.{self_attn_layer_norm, final_layer_norm}.*
  params/encoder/layers/mlp/{fc1, fc2}/{kernel, bias}  encoder.layers.{i}.{fc1, fc2}.*         linear
  params/encoder/layer_norm/{scale, bias}            encoder.layer_norm.{weight, bias}
A checkpoint re-saved with torch's new weight-norm parametrization (encoder.pos_conv.0.parametrizations.
weight.original0 / original1) is read as weight_g / weight_v by from_torch_state_dict and the converter.

Ignored on import (present in the checkpoints, never read by the video path), as regexes after the prefix:
  mask_emb, label_embs_concat, final_proj.*, target_glu.*  (pretraining heads / input masking)
and, for a prefixed (fine-tuned) checkpoint, every key outside the prefix: decoder.* (seq2seq decoder,
embed_tokens, output_projection), w2v_encoder.proj.* (CTC head), ...

  variables = from_torch_state_dict(sd, module)          # prefix detected ("", encoder.w2v_model., ...)
  sd = to_torch_state_dict(variables, module)            # {their key: np.ndarray}, loads strict in torch
  module, variables = shared.weights.load_pretrained(dir)  # config.json model_type "av_hubert"
  python -m shared.weights convert-avhubert --trust-pickle IN.pt OUT_DIR    # the official fairseq .pt
      (also: python -m shared.weights.avhubert_family --trust-pickle IN.pt OUT_DIR)

config.json (this family's; fairseq's field names, so the converter copies cfg.model):
  {"model_type": "av_hubert", "architectures": ["AVHubertVideo"], "encoder_layers", "encoder_embed_dim",
   "encoder_ffn_embed_dim", "encoder_attention_heads", "conv_pos", "conv_pos_groups", "audio_feat_dim",
   "activation_fn", "layer_norm_first": true, "modality_fuse": "concat", "resnet_relu_type": "prelu",
   "resnet_width": 64, "resnet_layers": [2, 2, 2, 2], "checkpoint_prefix": ""}
(checkpoint_prefix: the key prefix of model.safetensors; the converter writes plain keys.)
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax import traverse_util

from shared.errors import CheckpointError, StackError
from shared.models.avhubert import AVHubertConfig, AVHubertVideo
from shared.nn.resnet import ResNetConfig
from shared.weights import io, table
from shared.weights import resnet_family
from shared.weights.table import IDENTITY, LINEAR, Row

MODEL_TYPE = "av_hubert"
PREFIXES = ("", "encoder.w2v_model.", "w2v_encoder.w2v_model.")
IGNORED = (r"mask_emb", r"label_embs_concat", r"final_proj\..*", r"target_glu\..*")
_RENAMES = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}


def _config(module) -> AVHubertConfig:
  return module.config if isinstance(module, AVHubertVideo) else module


def rows(module: AVHubertVideo | AVHubertConfig, prefix: str | None = None) -> list[Row]:
  """The name table (variables rows: Row.collection says params / batch_stats); prefix defaults to the
  config's checkpoint_prefix."""
  c = _config(module)
  p = c.checkpoint_prefix if prefix is None else prefix
  out = [r if r.constant is not None else dataclasses.replace(r, ours="resnet/" + r.ours)
         for r in resnet_family.rows(c.resnet, f"{p}feature_extractor_video.resnet.")]
  lin = lambda ours, theirs: [Row(f"{ours}/kernel", f"{p}{theirs}.weight", LINEAR),
                              Row(f"{ours}/bias", f"{p}{theirs}.bias")]
  norm = lambda ours, theirs: [Row(f"{ours}/scale", f"{p}{theirs}.weight"), Row(f"{ours}/bias", f"{p}{theirs}.bias")]
  out += lin("video_proj", "feature_extractor_video.proj") + lin("audio_proj", "feature_extractor_audio.proj")
  out += norm("layer_norm", "layer_norm") + lin("post_extract_proj", "post_extract_proj")
  out += [Row(f"encoder/pos_conv/{n}", f"{p}encoder.pos_conv.0.{n}") for n in ("weight_g", "weight_v", "bias")]
  n = c.layers
  L = lambda ours, theirs, t=IDENTITY: Row(f"encoder/layers/{ours}", f"{p}encoder.layers.{{i}}.{theirs}", t, n)
  for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
    out += [L(f"self_attn/{proj}/kernel", f"self_attn.{proj}.weight", LINEAR),
            L(f"self_attn/{proj}/bias", f"self_attn.{proj}.bias")]
  for ln in ("self_attn_layer_norm", "final_layer_norm"):
    out += [L(f"{ln}/scale", f"{ln}.weight"), L(f"{ln}/bias", f"{ln}.bias")]
  for fc in ("fc1", "fc2"):
    out += [L(f"mlp/{fc}/kernel", f"{fc}.weight", LINEAR), L(f"mlp/{fc}/bias", f"{fc}.bias")]
  out += norm("encoder/layer_norm", "encoder.layer_norm")
  return out


def ignore(module: AVHubertVideo | AVHubertConfig, prefix: str | None = None) -> tuple[str, ...]:
  c = _config(module)
  p = c.checkpoint_prefix if prefix is None else prefix
  out = tuple(re.escape(p) + r for r in IGNORED)
  return out + ((f"(?!{re.escape(p)}).*",) if p else ())


def example_inputs(module: AVHubertVideo) -> tuple:
  return (jnp.zeros((1, 2, 32, 32, 1), jnp.float32),)


@functools.lru_cache(maxsize=16)
def _shapes(config: AVHubertConfig) -> dict[tuple, tuple]:
  module = AVHubertVideo(config)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs(module)))
  flat = traverse_util.flatten_dict(nn.meta.unbox({k: shapes[k] for k in ("params", "batch_stats")}))
  return {k: tuple(v.shape) for k, v in flat.items()}


def _renamed(state_dict: Mapping) -> dict:
  out = {}
  for k, v in state_dict.items():
    for old, new in _RENAMES.items():
      if k.endswith(old):
        k = k[:-len(old)] + new
    out[k] = v
  return out


def detect_prefix(keys, source: str = "state dict") -> str:
  """The prefix of the AV-HuBERT keys: the longest of PREFIXES with <prefix>post_extract_proj.weight present."""
  keys = set(keys)
  found = [p for p in PREFIXES if f"{p}post_extract_proj.weight" in keys]
  if not found:
    raise CheckpointError(f"{source}: no AV-HuBERT key post_extract_proj.weight under any prefix {list(PREFIXES)}"
                          f" (keys begin {sorted(keys)[:8]})")
  return max(found, key=len)


def from_torch_state_dict(state_dict: Mapping, module: AVHubertVideo | AVHubertConfig, prefix: str | None = None,
                          dtype=np.float32) -> dict:
  """A fairseq AV-HuBERT state dict (tensors or arrays; pretrained or fine-tuned, prefix detected unless given)
  -> variables {"params": ..., "batch_stats": ...} for `module`. Strict: CheckpointError names missing,
  unexpected (not ignored) and mis-shaped keys."""
  c = _config(module)
  state_dict = _renamed(state_dict)
  p = detect_prefix(state_dict.keys()) if prefix is None else prefix
  all_rows = rows(c, p)
  reader = io.StateDictReader(state_dict)
  flat = table.import_tensors(table.leaf_rows(all_rows, variables=True), reader, _shapes(c), np.dtype(dtype),
                              tuple(ignore(c, p)) + tuple(table.constant_ignore(all_rows)),
                              source=f"state dict (prefix {p!r})")
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def to_torch_state_dict(variables, module: AVHubertVideo | AVHubertConfig, prefix: str = "",
                        dtype=None) -> dict[str, np.ndarray]:
  """variables {"params", "batch_stats"} -> {prefix + their key: np.ndarray} (num_batches_tracked 0-d int64 0)."""
  c = _config(module)
  variables = nn.meta.unbox(variables)
  missing = [k for k in ("params", "batch_stats") if not hasattr(variables, "keys") or k not in variables]
  if missing:
    raise CheckpointError(f"to_torch_state_dict: pass the variables dict {{'params': ..., 'batch_stats': ...}} "
                          f"(missing {missing})")
  all_rows = rows(c, prefix)
  leaf_rows = table.leaf_rows(all_rows, variables=True)
  flat = traverse_util.flatten_dict({k: variables[k] for k in ("params", "batch_stats")})
  table.check_coverage(leaf_rows, {k: v.shape for k, v in flat.items()})
  bad = [f"{'/'.join(k)}: {tuple(v.shape)}, expected {_shapes(c)[k]}" for k, v in flat.items()
         if tuple(v.shape) != _shapes(c)[k]]
  if bad:
    raise CheckpointError(f"variables do not match AVHubertVideo with this config: {bad[:8]}")
  specs = table.export_specs(leaf_rows, flat, dtype) + table.constant_specs(all_rows)
  return {key: np.array(produce()) for key, _, _, produce in specs}


# ---- config.json ----

def _get(cfg: Mapping, key: str, default, source: str):
  v = cfg.get(key, default)
  if v is None:
    raise CheckpointError(f"{source}: config key {key!r} is missing")
  return v


def config_from_fairseq(cfg: Mapping, source: str = "config", **overrides) -> AVHubertConfig:
  """fairseq AVHubertConfig fields (cfg.model of a checkpoint, or our config.json) -> AVHubertConfig.
  Refuses what the video path does not model (post-LN, modality_fuse "add", sub-modality encoders)."""
  checks = {"layer_norm_first": True, "modality_fuse": "concat", "sub_encoder_layers": 0}
  for key, want in checks.items():
    if key in cfg and cfg[key] is not None and cfg[key] != want:
      raise CheckpointError(f"{source}: {key}={cfg[key]!r}; only {key}={want!r} is supported (every released "
                            "AV-HuBERT)")
  relu = _get(cfg, "resnet_relu_type", "prelu", source)
  if relu not in ("prelu", "relu"):
    raise CheckpointError(f"{source}: resnet_relu_type={relu!r}; expected 'prelu' or 'relu'")
  try:
    resnet = ResNetConfig(act=relu, width=int(_get(cfg, "resnet_width", 64, source)),
                          layers=tuple(_get(cfg, "resnet_layers", (2, 2, 2, 2), source)))
    c = AVHubertConfig(
        layers=int(_get(cfg, "encoder_layers", None, source)), dim=int(_get(cfg, "encoder_embed_dim", None, source)),
        ffn=int(_get(cfg, "encoder_ffn_embed_dim", None, source)),
        heads=int(_get(cfg, "encoder_attention_heads", None, source)),
        conv_pos=int(_get(cfg, "conv_pos", 128, source)), conv_pos_groups=int(_get(cfg, "conv_pos_groups", 16, source)),
        audio_feat_dim=int(_get(cfg, "audio_feat_dim", 104, source)),
        activation=str(_get(cfg, "activation_fn", "gelu", source)), resnet=resnet,
        checkpoint_prefix=str(cfg.get("checkpoint_prefix", "")))
  except (TypeError, ValueError) as e:
    if isinstance(e, CheckpointError):
      raise
    raise CheckpointError(f"{source}: {e}") from None
  if c.checkpoint_prefix not in PREFIXES:
    raise CheckpointError(f"{source}: checkpoint_prefix={c.checkpoint_prefix!r}; expected one of {list(PREFIXES)}")
  return c.replace(**overrides) if overrides else c


def from_config(cfg: dict, **overrides) -> AVHubertVideo:
  if "compute_dtype" in overrides:
    overrides["dtype"] = str(jnp.dtype(overrides.pop("compute_dtype")))
  return AVHubertVideo(config_from_fairseq(cfg, "av_hubert config.json", **overrides))


def to_config(module: AVHubertVideo) -> dict:
  c = module.config
  return {"model_type": MODEL_TYPE, "architectures": ["AVHubertVideo"], "encoder_layers": c.layers,
          "encoder_embed_dim": c.dim, "encoder_ffn_embed_dim": c.ffn, "encoder_attention_heads": c.heads,
          "conv_pos": c.conv_pos, "conv_pos_groups": c.conv_pos_groups, "audio_feat_dim": c.audio_feat_dim,
          "activation_fn": c.activation, "layer_norm_first": True, "modality_fuse": "concat",
          "resnet_relu_type": c.resnet.act, "resnet_width": c.resnet.width, "resnet_layers": list(c.resnet.layers),
          "checkpoint_prefix": c.checkpoint_prefix}


# ---- the official fairseq .pt (a pickle) ----

def _plain(obj):
  """cfg as plain dicts: omegaconf DictConfig (to_container), argparse Namespace (vars), dict."""
  if obj is None:
    return None
  if type(obj).__module__.startswith("omegaconf"):
    from omegaconf import OmegaConf
    return OmegaConf.to_container(obj, resolve=False)
  if isinstance(obj, argparse.Namespace):
    return vars(obj)
  if isinstance(obj, Mapping):
    return {k: _plain(v) if not isinstance(v, (int, float, str, bool, list, tuple)) else v for k, v in obj.items()}
  return obj


def model_cfg(ckpt: Mapping, source: str) -> dict:
  """cfg.model of a fairseq checkpoint (new "cfg" or old "args"); for a fine-tuned one whose cfg.model has no
  encoder_layers, the pretrained model's cfg in cfg.model.w2v_args.model."""
  cfg = _plain(ckpt.get("cfg"))
  if cfg is None and ckpt.get("args") is not None:
    return _plain(ckpt["args"])
  if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), Mapping):
    raise CheckpointError(f"{source}: no cfg.model (nor args) in the checkpoint (top-level keys {sorted(ckpt)})")
  m = _plain(cfg["model"])
  if "encoder_layers" not in m:
    w2v = _plain(m.get("w2v_args"))
    if isinstance(w2v, Mapping) and isinstance(w2v.get("model"), Mapping):
      return _plain(w2v["model"])
  return m


def _shape_cfg(sd: Mapping, p: str) -> dict:
  """Fields the shapes give (used where the cfg lacks them): resnet width / relu / layers, sizes."""
  out = {}
  get = lambda k: sd.get(p + k)
  w = get("feature_extractor_video.resnet.frontend3D.0.weight")
  if w is not None:
    out["resnet_width"] = int(w.shape[0])
  out["resnet_relu_type"] = "prelu" if get("feature_extractor_video.resnet.frontend3D.2.weight") is not None else "relu"
  rl = [sum(1 for k in sd if re.fullmatch(re.escape(p) + rf"feature_extractor_video\.resnet\.trunk\.layer{s}\.(\d+)"
                                          r"\.conv1\.weight", k)) for s in range(1, 5)]
  if all(rl):
    out["resnet_layers"] = rl
  layers = [k for k in sd if re.fullmatch(re.escape(p) + r"encoder\.layers\.\d+\.fc1\.weight", k)]
  if layers:
    out["encoder_layers"] = len(layers)
    out["encoder_ffn_embed_dim"] = int(sd[layers[0]].shape[0])
  if get("post_extract_proj.weight") is not None:
    out["encoder_embed_dim"] = int(get("post_extract_proj.weight").shape[0])
  v = get("encoder.pos_conv.0.weight_v")
  if v is not None:
    out["conv_pos"], out["conv_pos_groups"] = int(v.shape[2]), int(v.shape[0]) // int(v.shape[1])
  a = get("feature_extractor_audio.proj.weight")
  if a is not None:
    out["audio_feat_dim"] = int(a.shape[1])
  return out


def load_fairseq_checkpoint(path: str, *, trust_pickle: bool = False) -> tuple[dict, dict]:
  """-> (cfg.model as a dict, state dict). The .pt is a pickle (it can run code when read): refused unless
  trust_pickle=True; read with torch.load(weights_only=False). Needs omegaconf for the cfg of fairseq's
  checkpoints (a DictConfig): CheckpointError naming `pip install omegaconf` when it is not installed."""
  if not trust_pickle:
    raise CheckpointError(f"{path}: a fairseq .pt is a Python pickle, and reading a pickle can run arbitrary "
                          "code; pass --trust-pickle (trust_pickle=True) only for a file from a source you trust "
                          "(e.g. the official AV-HuBERT release)")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: not a file (expected a fairseq AV-HuBERT .pt)")
  import torch
  try:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
  except ModuleNotFoundError as e:
    hint = ("pip install omegaconf (fairseq checkpoints pickle their cfg as an omegaconf DictConfig)"
            if e.name and e.name.split(".")[0] == "omegaconf" else f"install the package that provides {e.name!r}")
    raise CheckpointError(f"{path}: unpickling needs module {e.name!r}, which is not installed: {hint}") from None
  except Exception as e:
    raise CheckpointError(f"{path}: torch.load failed: {type(e).__name__}: {e}") from None
  if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping):
    raise CheckpointError(f"{path}: expected a fairseq checkpoint dict with a 'model' state dict; got "
                          f"{type(ckpt).__name__}" + (f" with keys {sorted(ckpt)}" if isinstance(ckpt, Mapping) else ""))
  return model_cfg(ckpt, path), _renamed(ckpt["model"])


def convert(src: str, out: str, *, trust_pickle: bool = False, dtype=None) -> tuple[AVHubertVideo, dict]:
  """fairseq AV-HuBERT .pt -> OUT/config.json + OUT/model.safetensors (plain keys, the video path's tensors
  only); -> (module, variables). cfg.model fields win; fields it lacks come from the tensor shapes."""
  cfg, sd = load_fairseq_checkpoint(src, trust_pickle=trust_pickle)
  p = detect_prefix(sd.keys(), src)
  merged = {**_shape_cfg(sd, p), **{k: v for k, v in cfg.items() if v is not None}}
  merged.pop("checkpoint_prefix", None)
  module = AVHubertVideo(config_from_fairseq(merged, f"{src} cfg.model"))
  variables = from_torch_state_dict({k: np.asarray(v.float().numpy() if hasattr(v, "float") else v)
                                     for k, v in sd.items() if k.startswith(p)}, module, prefix=p)
  from shared import weights
  weights.save_pretrained(module, variables, out, dtype=dtype)
  return module, variables


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m shared.weights.avhubert_family",
                               description="fairseq AV-HuBERT .pt -> config.json + model.safetensors")
  ap.add_argument("src")
  ap.add_argument("out")
  ap.add_argument("--trust-pickle", action="store_true", help="allow reading the .pt (a pickle)")
  args = ap.parse_args(argv)
  try:
    convert(args.src, args.out, trust_pickle=args.trust_pickle)
  except (StackError, OSError) as e:
    print(f"error: {type(e).__name__}: {' '.join(str(e).splitlines())}", file=sys.stderr, flush=True)
    return 2
  print(f"converted {args.src} -> {args.out}")
  return 0


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="avhubert", model_types=(MODEL_TYPE,), module_class=AVHubertVideo,
                from_config=from_config, to_config=to_config, rows=lambda module: rows(module), example_inputs=example_inputs,
                ignore=lambda module: ignore(module), peft_task_type="FEATURE_EXTRACTION",
                collections=("params", "batch_stats"))

if __name__ == "__main__":
  sys.exit(main())
