"""shared.models.swin3d.SwinTransformer3d <-> torchvision's SwinTransformer3d state dict (swin3d_t / _s / _b keys).

One name table, both ways (i = stage, j = block in it; torchvision's features.{2i} is stage i, features.{2i+1}
the patch merging after it):

  ours                                               theirs                                      transform
  patch_embed/proj/kernel [pt,ph,pw,C,E], bias       patch_embed.proj.weight [E,C,pt,ph,pw], bias   conv3d
  patch_embed/norm/{scale,bias}                      patch_embed.norm.{weight,bias}
  stage{i}_block{j}/norm1|norm2/{scale,bias}         features.{2i}.{j}.norm1|norm2.{weight,bias}
  stage{i}_block{j}/attn/relative_position_bias_table  features.{2i}.{j}.attn.relative_position_bias_table
  (constant: torchvision's persistent buffer)        features.{2i}.{j}.attn.relative_position_index  int64
  stage{i}_block{j}/attn/qkv|proj/{kernel,bias}      features.{2i}.{j}.attn.qkv|proj.{weight,bias}  linear
  stage{i}_block{j}/mlp/fc1|fc2/{kernel,bias}        features.{2i}.{j}.mlp.0|3.{weight,bias}        linear
  merge{i}/norm/{scale,bias}                         features.{2i+1}.norm.{weight,bias}
  merge{i}/reduction/kernel [4d, 2d]                 features.{2i+1}.reduction.weight [2d, 4d]      linear
  norm/{scale,bias}                                  norm.{weight,bias}
  head/{kernel,bias} (num_classes > 0 only)          head.{weight,bias}                             linear

Import: relative_position_index is accepted (present or absent) and never read (it is a function of the
window); without a head (num_classes 0) head.* is ignored. Export writes relative_position_index (torchvision
keeps it in its state_dict, so load_state_dict(strict=True) needs it) and, for num_classes 0, no head: load that
into torchvision with strict=False (missing: head.weight, head.bias only) or pass num_classes to export one.

config.json (ours; torchvision stores none):
  {"model_type": "swin3d", "architectures": ["SwinTransformer3d"],
   "patch_size": [2, 4, 4], "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
   "window_size": [8, 7, 7], "mlp_ratio": 4.0, "in_channels": 3, "norm_eps": 1e-05,
   "num_classes": 0,                  # 0: features only (no head.*); 400 for the Kinetics classifier
   "stochastic_depth_prob": 0.1,      # training only
   "clip_window": 16, "clip_stride": 1, "clip_padding": "same"}   # clip_features defaults (25 Hz per frame)
Missing keys take SwinConfig's defaults (Swin-T sizes). torchvision's swin3d_t() state dict saved as
model.safetensors (index buffers and head.* may stay in) plus this config.json is a directory load_pretrained
reads (tests/models/test_swin3d.py does so with a tiny model).

  params = from_torch_state_dict(tv_model.state_dict(), module)     # {"params"-tree} of jax arrays
  sd = to_torch_state_dict(params, module)                          # {key: np.ndarray} (+ index buffers)
  module, params = shared.weights.load_pretrained(dir); shared.weights.save_pretrained(module, params, dir)
"""
from __future__ import annotations

import functools
import re
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
import flax.linen as nn

from shared.errors import CheckpointError
from shared.models.swin3d import SwinConfig, SwinTransformer3d, relative_position_index
from shared.weights import Family, io, table
from shared.weights.table import IDENTITY, LINEAR, Row

MODEL_TYPE = "swin3d"
CONV3D = table.transpose((2, 3, 4, 1, 0), "conv3d")   # torch [out, in, kt, kh, kw] -> ours [kt, kh, kw, in, out]
TUPLES = ("patch_size", "depths", "num_heads", "window_size")
CONFIG_KEYS = TUPLES + ("embed_dim", "mlp_ratio", "in_channels", "norm_eps", "num_classes", "stochastic_depth_prob",
                        "clip_window", "clip_stride", "clip_padding")
OVERRIDES = ("dtype", "compute_dtype", "param_dtype", "remat_policy", "stochastic_depth_prob", "clip_window",
             "clip_stride", "clip_padding")


def _config(module) -> SwinConfig:
  return module.config if isinstance(module, SwinTransformer3d) else module


def _norm(ours: str, theirs: str) -> list[Row]:
  return [Row(f"{ours}/scale", f"{theirs}.weight"), Row(f"{ours}/bias", f"{theirs}.bias")]


def _linear(ours: str, theirs: str, bias: bool = True) -> list[Row]:
  return [Row(f"{ours}/kernel", f"{theirs}.weight", LINEAR)] + ([Row(f"{ours}/bias", f"{theirs}.bias")] if bias else [])


def rows(module: SwinTransformer3d | SwinConfig, prefix: str = "") -> list[Row]:
  """The name table (constant rows: the relative_position_index buffers)."""
  c, p = _config(module), prefix
  index = relative_position_index(c.window_size)
  out = [Row("patch_embed/proj/kernel", f"{p}patch_embed.proj.weight", CONV3D),
         Row("patch_embed/proj/bias", f"{p}patch_embed.proj.bias"), *_norm("patch_embed/norm", f"{p}patch_embed.norm")]
  for i, depth in enumerate(c.depths):
    for j in range(depth):
      ours, theirs = f"stage{i}_block{j}", f"{p}features.{2 * i}.{j}"
      out += [*_norm(f"{ours}/norm1", f"{theirs}.norm1"),
              Row(f"{ours}/attn/relative_position_bias_table", f"{theirs}.attn.relative_position_bias_table",
                  IDENTITY),
              Row("", f"{theirs}.attn.relative_position_index", constant=lambda: index),
              *_linear(f"{ours}/attn/qkv", f"{theirs}.attn.qkv"), *_linear(f"{ours}/attn/proj", f"{theirs}.attn.proj"),
              *_norm(f"{ours}/norm2", f"{theirs}.norm2"),
              *_linear(f"{ours}/mlp/fc1", f"{theirs}.mlp.0"), *_linear(f"{ours}/mlp/fc2", f"{theirs}.mlp.3")]
    if i < len(c.depths) - 1:
      out += [*_norm(f"merge{i}/norm", f"{p}features.{2 * i + 1}.norm"),
              *_linear(f"merge{i}/reduction", f"{p}features.{2 * i + 1}.reduction", bias=False)]
  out += _norm("norm", f"{p}norm")
  if c.num_classes > 0:
    out += _linear("head", f"{p}head")
  return out


def ignore(module: SwinTransformer3d | SwinConfig, prefix: str = "") -> tuple[str, ...]:
  """Keys accepted and not read: the classifier when the model has none (the index buffers are constant rows)."""
  return () if _config(module).num_classes > 0 else (re.escape(prefix) + r"head\..*",)


def example_inputs(module: SwinTransformer3d) -> tuple:
  """A tiny video: param shapes do not depend on the input size."""
  return (jnp.zeros((1, 2, 8, 8, module.config.in_channels), jnp.float32),)


@functools.lru_cache(maxsize=16)
def _shapes(config: SwinConfig) -> dict[tuple, tuple]:
  module = SwinTransformer3d(config)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs(module)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(nn.meta.unbox(shapes["params"])).items()}


def from_torch_state_dict(state_dict: Mapping, module: SwinTransformer3d | SwinConfig, prefix: str = "",
                          dtype=np.float32) -> dict:
  """A torchvision SwinTransformer3d state dict (tensors or arrays; keys under `prefix`; other keys of a larger
  model are left alone) -> the params tree (jax arrays in `dtype`). CheckpointError names missing, unexpected
  (under the prefix) and mis-shaped keys."""
  c = _config(module)
  all_rows = rows(c, prefix)
  reader = io.StateDictReader({k: v for k, v in state_dict.items() if k.startswith(prefix)})
  if not reader.keys():
    raise CheckpointError(f"SwinTransformer3d weights: no key starts with prefix {prefix!r} (keys begin "
                          f"{sorted(state_dict)[:8]}); expected e.g. {prefix}patch_embed.proj.weight")
  return table.import_params(table.leaf_rows(all_rows), reader, _shapes(c), dtype,
                             source=f"state dict (prefix {prefix!r})",
                             ignore=tuple(ignore(c, prefix)) + tuple(table.constant_ignore(all_rows)))


def to_torch_state_dict(params, module: SwinTransformer3d | SwinConfig, prefix: str = "", dtype=None
                        ) -> dict[str, np.ndarray]:
  """params -> {prefix + their key: np.ndarray} in torchvision's layout, relative_position_index buffers (int64)
  included; head.* only when num_classes > 0."""
  c = _config(module)
  all_rows = rows(c, prefix)
  sd = table.export_state_dict(table.leaf_rows(all_rows), params, _shapes(c), "SwinTransformer3d", dtype)
  sd.update({key: np.array(produce()) for key, _, _, produce in table.constant_specs(all_rows)})
  return {k: np.array(v) for k, v in sd.items()}   # writable (torch.from_numpy)


def _from_config(cfg: dict, **overrides) -> SwinTransformer3d:
  unknown = sorted(set(overrides) - set(OVERRIDES))
  if unknown:
    raise CheckpointError(f"{MODEL_TYPE}: unknown overrides {unknown}; expected some of {list(OVERRIDES)}")
  kw = {}
  for k in CONFIG_KEYS:
    if k in cfg:
      v = cfg[k]
      if k in TUPLES and not isinstance(v, (list, tuple)):
        raise CheckpointError(f"{MODEL_TYPE} config.json: {k}={v!r}; expected a list")
      kw[k] = tuple(v) if k in TUPLES else v
  dtype = overrides.pop("compute_dtype", overrides.pop("dtype", None))
  if dtype is not None:
    kw["dtype"] = jnp.dtype(dtype).name
  if "param_dtype" in overrides:
    overrides["param_dtype"] = jnp.dtype(overrides["param_dtype"]).name
  return SwinTransformer3d(SwinConfig(**{**kw, **overrides}))


def _to_config(module: SwinTransformer3d) -> dict:
  c = module.config
  out = {"model_type": MODEL_TYPE, "architectures": ["SwinTransformer3d"]}
  for k in CONFIG_KEYS:
    v = getattr(c, k)
    out[k] = list(v) if k in TUPLES else v
  return out


FAMILY = Family(
    name=MODEL_TYPE, model_types=(MODEL_TYPE,), module_class=SwinTransformer3d,
    from_config=_from_config, to_config=_to_config, rows=lambda module: rows(module),
    example_inputs=example_inputs, ignore=lambda module: ignore(module), peft_task_type="FEATURE_EXTRACTION")
