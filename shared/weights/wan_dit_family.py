"""Wan2.x video DiT <-> diffusers `WanTransformer3DModel` and the original Wan (Wan-Video/Wan2.x) layout.

One table of (our path, diffusers key, original-Wan key, transform) drives every direction:
  ours   blocks/attn1/to_q/kernel [N, D, D]    diffusers blocks.{i}.attn1.to_q.weight   original blocks.{i}.self_attn.q.weight
  ours   blocks/norm2/scale [N, D]             diffusers blocks.{i}.norm2.weight        original blocks.{i}.norm3.weight
(the original names the cross-attention norm `norm3` and the parameter-free FFN norm `norm2`; diffusers
swaps them). Transforms: Linear weight [out, in] <-> kernel [in, out]; Conv3d weight [D, C, pt, ph, pw] <->
kernel [pt, ph, pw, C, D]; scale_shift_table / modulation [1, 6|2, D] <-> [6|2, D]; the rest identity.

  model, params = load_wan_dit(dir)                  # diffusers dir (config.json `_class_name`
                                                     # WanTransformer3DModel) or original Wan dir (WanModel)
  save_wan_dit(model, params, dir)                   # WanTransformer3DModel.from_pretrained(dir) loads it
  params = import_wan_dit(state_dict, config, layout="diffusers" | "original")
  sd = export_wan_dit(params, config, layout=...)    # numpy state_dict (load_state_dict strict)
  sd = diffusers_to_original(sd, config) / original_to_diffusers(sd, config)   # key renames only
`FAMILY` plugs the diffusers layout into shared.weights.load_pretrained / save_pretrained; `ORIGINAL_FAMILY`
(registered too) reads original-layout directories (config.json model_type t2v / ti2v / i2v); the original keys
we do not model (model_type, text_len, window_size, qk_norm) are kept in the config's `hf_extra` and written back
by save_wan_dit(..., layout="original"), so a t2v directory stays t2v (Wan2.1's WanModel accepts t2v / i2v only).
Original checkpoints saved by ComfyUI-style tools prefix keys with "model.diffusion_model."; it is stripped.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from shared.errors import CheckpointError, ConfigError
from shared.models.wan_dit import WanDiT, WanDiTConfig
from shared.weights import io, table
from shared.weights.table import IDENTITY, LINEAR, Row

CLASS_NAME = "WanTransformer3DModel"
ORIGINAL_CLASS_NAME = "WanModel"
WEIGHTS_STEM = "diffusion_pytorch_model"
ORIGINAL_PREFIX = "model.diffusion_model."
CONV3D = table.transpose((2, 3, 4, 1, 0), "conv3d")  # [D, C, pt, ph, pw] -> [pt, ph, pw, C, D]
_RUNTIME = ("dtype", "param_dtype", "remat_policy", "attention_impl", "rope_theta")
_DIFFUSERS_KEYS = tuple(f.name for f in dataclasses.fields(WanDiTConfig) if f.name not in _RUNTIME + ("hf_extra",))
# original config.json key -> our field
_ORIGINAL_KEYS = {"patch_size": "patch_size", "in_dim": "in_channels", "out_dim": "out_channels",
                  "text_dim": "text_dim", "freq_dim": "freq_dim", "ffn_dim": "ffn_dim", "num_layers": "num_layers",
                  "num_heads": "num_attention_heads", "cross_attn_norm": "cross_attn_norm", "eps": "eps"}
_ORIGINAL_IGNORED = ("model_type", "text_len", "window_size", "qk_norm", "dim")


# ---- configs ----

def _build(kwargs: dict, overrides: dict) -> WanDiTConfig:
  if "compute_dtype" in overrides:
    overrides["dtype"] = overrides.pop("compute_dtype")
  bad = sorted(set(overrides) - set(f.name for f in dataclasses.fields(WanDiTConfig)))
  if bad:
    raise ConfigError(f"unknown overrides {bad} for {CLASS_NAME}; expected fields of WanDiTConfig ({_RUNTIME} ...)")
  return WanDiTConfig(**{**kwargs, **{k: (str(jnp.dtype(v)) if k in ("dtype", "param_dtype") else v)
                                      for k, v in overrides.items()}})


def config_from_diffusers(d: dict[str, Any], **overrides) -> WanDiTConfig:
  """diffusers config.json dict -> WanDiTConfig (unknown keys are an error)."""
  if d.get("_class_name", CLASS_NAME) != CLASS_NAME:
    raise ConfigError(f"config.json _class_name is {d['_class_name']!r}; expected {CLASS_NAME!r}")
  kwargs = {}
  for k, v in d.items():
    if k.startswith("_") or k == "model_type":
      continue
    if k not in _DIFFUSERS_KEYS:
      raise ConfigError(f"config.json key {k!r} is not a setting of {CLASS_NAME}; expected one of "
                        f"{sorted(_DIFFUSERS_KEYS)}")
    kwargs[k] = tuple(v) if k == "patch_size" else v
  return _build(kwargs, dict(overrides))


def config_to_diffusers(c: WanDiTConfig) -> dict[str, Any]:
  out: dict[str, Any] = {"_class_name": CLASS_NAME}
  for k in _DIFFUSERS_KEYS:
    v = getattr(c, k)
    out[k] = list(v) if isinstance(v, tuple) else v
  return out


def config_from_original(d: dict[str, Any], **overrides) -> WanDiTConfig:
  """Original Wan config.json (WanModel: dim, num_heads, in_dim, ...) -> WanDiTConfig (no image embedder)."""
  if d.get("_class_name", ORIGINAL_CLASS_NAME) != ORIGINAL_CLASS_NAME:
    raise ConfigError(f"config.json _class_name is {d['_class_name']!r}; expected {ORIGINAL_CLASS_NAME!r}")
  kwargs = dict(patch_size=(1, 2, 2), text_dim=4096, cross_attn_norm=True, eps=1e-6)
  for k, v in d.items():
    if k.startswith("_") or k in _ORIGINAL_IGNORED:
      continue
    if k not in _ORIGINAL_KEYS:
      raise ConfigError(f"config.json key {k!r} is not a setting of the original {ORIGINAL_CLASS_NAME}; "
                        f"expected one of {sorted(set(_ORIGINAL_KEYS) | set(_ORIGINAL_IGNORED))}")
    kwargs[_ORIGINAL_KEYS[k]] = tuple(v) if k == "patch_size" else v
  heads, dim = d.get("num_heads", 16), d.get("dim", 2048)
  if dim % heads:
    raise ConfigError(f"config.json dim {dim} is not a multiple of num_heads {heads}")
  kwargs.update(num_attention_heads=heads, attention_head_dim=dim // heads,
                hf_extra=tuple(sorted((k, json.dumps(d[k])) for k in _ORIGINAL_IGNORED if k in d and k != "dim")))
  return _build(kwargs, dict(overrides))


def config_to_original(c: WanDiTConfig, model_type: str | None = None) -> dict[str, Any]:
  """Defaults (model_type ti2v, text_len 512) < the imported keys in c.hf_extra < our fields; `model_type` wins."""
  out = {"_class_name": ORIGINAL_CLASS_NAME, "model_type": "ti2v", "text_len": 512,
         **{k: json.loads(v) for k, v in c.hf_extra}, "dim": c.dim}
  if model_type is not None:
    out["model_type"] = model_type
  for k, ours in _ORIGINAL_KEYS.items():
    v = getattr(c, ours)
    out[k] = list(v) if isinstance(v, tuple) else v
  return out


# ---- the name table ----

def _entries(c: WanDiTConfig) -> list[tuple[str, str, str, table.Transform, bool]]:
  """(our path, diffusers key, original key, transform, stacked) for every parameter of WanDiT(c)."""
  d = c.dim
  lin = lambda ours, theirs, orig, stacked=False: [  # noqa: E731
      (ours + "/kernel", theirs + ".weight", orig + ".weight", LINEAR, stacked),
      (ours + "/bias", theirs + ".bias", orig + ".bias", IDENTITY, stacked)]
  ce = "condition_embedder/"
  out = [("patch_embedding/kernel", "patch_embedding.weight", "patch_embedding.weight", CONV3D, False),
         ("patch_embedding/bias", "patch_embedding.bias", "patch_embedding.bias", IDENTITY, False)]
  out += lin(ce + "time_embedder_linear_1", "condition_embedder.time_embedder.linear_1", "time_embedding.0")
  out += lin(ce + "time_embedder_linear_2", "condition_embedder.time_embedder.linear_2", "time_embedding.2")
  out += lin(ce + "time_proj", "condition_embedder.time_proj", "time_projection.1")
  out += lin(ce + "text_embedder_linear_1", "condition_embedder.text_embedder.linear_1", "text_embedding.0")
  out += lin(ce + "text_embedder_linear_2", "condition_embedder.text_embedder.linear_2", "text_embedding.2")
  if c.image_dim is not None:
    ie = "condition_embedder.image_embedder."
    for ours, theirs, orig in (("image_norm1", "norm1", "0"), ("image_norm2", "norm2", "4")):
      out += [(ce + ours + "/scale", ie + theirs + ".weight", f"img_emb.proj.{orig}.weight", IDENTITY, False),
              (ce + ours + "/bias", ie + theirs + ".bias", f"img_emb.proj.{orig}.bias", IDENTITY, False)]
    out += lin(ce + "image_ff_1", ie + "ff.net.0.proj", "img_emb.proj.1")
    out += lin(ce + "image_ff_2", ie + "ff.net.2", "img_emb.proj.3")
    if c.pos_embed_seq_len is not None:
      out.append((ce + "image_pos_embed", ie + "pos_embed", "img_emb.emb_pos", IDENTITY, False))
  projs = [("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out", "o")]
  for attn, orig_attn in (("attn1", "self_attn"), ("attn2", "cross_attn")):
    names = projs + ([("add_k_proj", "k_img"), ("add_v_proj", "v_img")]
                     if attn == "attn2" and c.added_kv_proj_dim is not None else [])
    for ours, orig in names:
      theirs = "to_out.0" if ours == "to_out" else ours
      out += lin(f"blocks/{attn}/{ours}", f"blocks.{{i}}.{attn}.{theirs}", f"blocks.{{i}}.{orig_attn}.{orig}", True)
    norms = [("norm_q", "norm_q"), ("norm_k", "norm_k")]
    if attn == "attn2" and c.added_kv_proj_dim is not None:
      norms.append(("norm_added_k", "norm_k_img"))
    for ours, orig in norms:
      out.append((f"blocks/{attn}/{ours}/scale", f"blocks.{{i}}.{attn}.{ours}.weight",
                  f"blocks.{{i}}.{orig_attn}.{orig}.weight", IDENTITY, True))
  if c.cross_attn_norm:
    out += [("blocks/norm2/scale", "blocks.{i}.norm2.weight", "blocks.{i}.norm3.weight", IDENTITY, True),
            ("blocks/norm2/bias", "blocks.{i}.norm2.bias", "blocks.{i}.norm3.bias", IDENTITY, True)]
  out += lin("blocks/ffn/fc1", "blocks.{i}.ffn.net.0.proj", "blocks.{i}.ffn.0", True)
  out += lin("blocks/ffn/fc2", "blocks.{i}.ffn.net.2", "blocks.{i}.ffn.2", True)
  out.append(("blocks/scale_shift_table", "blocks.{i}.scale_shift_table", "blocks.{i}.modulation",
              table.reshape((6, d), (1, 6, d), "modulation"), True))
  out += lin("proj_out", "proj_out", "head.head")
  out.append(("scale_shift_table", "scale_shift_table", "head.modulation",
              table.reshape((2, d), (1, 2, d), "modulation"), False))
  return out


def name_table(c: WanDiTConfig, layout: str = "diffusers") -> list[Row]:
  if layout not in ("diffusers", "original"):
    raise ConfigError(f"layout {layout!r}; expected 'diffusers' or 'original'")
  col = 1 if layout == "diffusers" else 2
  return [Row(e[0], e[col], e[3], c.num_layers if e[4] else None) for e in _entries(c)]


def _key_map(c: WanDiTConfig, src: str, dst: str) -> dict[str, str]:
  a, b = name_table(c, src), name_table(c, dst)
  return {k1: k2 for r1, r2 in zip(a, b) for k1, k2 in zip(r1.their_keys(), r2.their_keys())}


def _rename(state_dict: dict, mapping: dict[str, str], what: str) -> dict:
  unknown = sorted(k for k in state_dict if k not in mapping)
  if unknown:
    raise CheckpointError(f"{what}: keys {unknown[:20]} have no counterpart in the name table")
  return {mapping[k]: v for k, v in state_dict.items()}


def strip_prefix(state_dict: dict) -> dict:
  """Drops the "model.diffusion_model." prefix some original-layout checkpoints carry."""
  return {(k[len(ORIGINAL_PREFIX):] if k.startswith(ORIGINAL_PREFIX) else k): v for k, v in state_dict.items()}


def diffusers_to_original(state_dict: dict, c: WanDiTConfig) -> dict:
  """diffusers WanTransformer3DModel keys -> original Wan keys (tensors unchanged: same shapes)."""
  return _rename(state_dict, _key_map(c, "diffusers", "original"), "diffusers state_dict")


def original_to_diffusers(state_dict: dict, c: WanDiTConfig) -> dict:
  return _rename(strip_prefix(state_dict), _key_map(c, "original", "diffusers"), "original Wan state_dict")


def param_shapes(c: WanDiTConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  model = WanDiT(c)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(nn.meta.unbox(shapes["params"])).items()}


# ---- in-memory and directory import/export ----

def _ignore(layout: str) -> tuple[str, ...]:
  return (r"blocks\.\d+\.attn2\.norm_added_q\.weight",) if layout == "diffusers" else ()


def import_wan_dit(state_dict: dict, c: WanDiTConfig, *, layout: str = "diffusers", dtype=jnp.float32) -> dict:
  """A WanTransformer3DModel (or original WanModel, layout="original") state_dict -> our params (strict)."""
  if layout == "original":
    state_dict = strip_prefix(state_dict)
  return table.import_params(name_table(c, layout), io.StateDictReader(state_dict), param_shapes(c), dtype,
                             f"{layout} state_dict", _ignore(layout))


def export_wan_dit(params: dict, c: WanDiTConfig, *, layout: str = "diffusers", dtype=None) -> dict[str, np.ndarray]:
  """Our params -> a numpy state_dict in the diffusers (or original) layout."""
  return table.export_state_dict(name_table(c, layout), params, param_shapes(c), CLASS_NAME, dtype)


def load_wan_dit(path: str, *, dtype=jnp.float32, **overrides) -> tuple[WanDiT, dict]:
  """A diffusers WanTransformer3DModel directory or an original Wan (WanModel) directory -> (model, params)."""
  cfg = io.read_json(os.path.join(path, "config.json"))
  original = cfg.get("_class_name") == ORIGINAL_CLASS_NAME or "dim" in cfg
  c = config_from_original(cfg, **overrides) if original else config_from_diffusers(cfg, **overrides)
  layout = "original" if original else "diffusers"
  reader = io.SafetensorsReader(path, index_name=f"{WEIGHTS_STEM}.safetensors.index.json",
                                single_name=f"{WEIGHTS_STEM}.safetensors")
  if original and any(k.startswith(ORIGINAL_PREFIX) for k in reader.keys()):
    reader = io.StateDictReader(strip_prefix({k: reader.get(k) for k in reader.keys()}))
  return WanDiT(c), table.import_params(name_table(c, layout), reader, param_shapes(c), dtype, path, _ignore(layout))


def save_wan_dit(model: WanDiT, params: dict, path: str, *, layout: str = "diffusers", dtype=None,
                 max_shard_size="5GB") -> None:
  """Writes a directory that WanTransformer3DModel.from_pretrained(path) loads (or an original Wan dir)."""
  c = model.config
  specs = table.export_params_specs(name_table(c, layout), params, dtype=dtype)
  os.makedirs(path, exist_ok=True)
  io.write_json(os.path.join(path, "config.json"), config_to_diffusers(c) if layout == "diffusers"
                else config_to_original(c))
  io.write_checkpoint(path, specs, max_shard_size,
                      single_name=f"{WEIGHTS_STEM}.safetensors", index_name=f"{WEIGHTS_STEM}.safetensors.index.json")


# ---- the shared.weights family interface ----

def from_config(cfg: dict, **overrides) -> WanDiT:
  return WanDiT(config_from_diffusers(cfg, **overrides))


def from_original_config(cfg: dict, **overrides) -> WanDiT:
  return WanDiT(config_from_original(cfg, **overrides))


def to_config(module: WanDiT) -> dict:
  return config_to_diffusers(module.config)


def example_inputs(module: WanDiT) -> tuple:
  c = module.config
  video = jnp.zeros((1,) + c.patch_size + (c.in_channels,), jnp.float32)
  image = None
  if c.image_dim is not None:  # FLF2V (pos_embed_seq_len): two images per sample, joined to one sequence
    n, l = (2, c.pos_embed_seq_len // 2) if c.pos_embed_seq_len else (1, 1)
    image = jnp.zeros((n, l, c.image_dim), jnp.float32)
  return video, jnp.zeros((1,), jnp.float32), jnp.zeros((1, 1, c.text_dim), jnp.float32), image


class _OriginalLayout:
  """Never instantiated: the original-layout family is import-only (export always writes diffusers' layout;
  use save_wan_dit(..., layout="original") for the original one)."""


from shared.weights import Family, register  # noqa: E402  (after the functions: avoids a cycle at import time)

# diffusers' config.json has no "model_type"; the class is named in "_class_name".
FAMILY = Family(name="wan_dit", model_types=(CLASS_NAME,), module_class=WanDiT, from_config=from_config,
                to_config=to_config, rows=lambda m: name_table(m.config), example_inputs=example_inputs,
                ignore=lambda m: _ignore("diffusers"), weights_name=WEIGHTS_STEM)
ORIGINAL_FAMILY = register(Family(
    name="wan_dit_original", model_types=("t2v", "ti2v", "i2v"), module_class=_OriginalLayout,
    from_config=from_original_config, to_config=lambda m: config_to_original(m.config),
    rows=lambda m: name_table(m.config, "original"), example_inputs=example_inputs, weights_name=WEIGHTS_STEM))
