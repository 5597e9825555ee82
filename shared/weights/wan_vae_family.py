"""Wan video VAE <-> diffusers `AutoencoderKLWan`: name table, config.json, import/export, files.

One table (shared.weights.table rows) derived from the model's own parameter tree drives every
direction; our names mirror diffusers' module tree, so a row reads
  our  encoder/down_blocks_3/resnets_0/conv1/kernel   [kt, kh, kw, in, out]
  their encoder.down_blocks.3.resnets.0.conv1.weight  [out, in, kt, kh, kw]
Transforms: "conv3d"/"conv2d" (kernel <-> weight, transposed), "norm" (gamma [C] <-> [C,1,1,1],
or [C,1,1] inside an attention block), identity (biases).

Entry points: `import_wan_vae(state_dict, config)` / `export_wan_vae(params, config)` (in memory),
`load_wan_vae(dir)` / `save_wan_vae(model, params, dir)` (diffusers directories), and `FAMILY` for
shared.weights.save_pretrained / load_pretrained.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError, ConfigError
from shared.models.wan_vae import AutoencoderKLWan, WanVAEConfig, init_params
from shared.weights import io, table
from shared.weights.table import IDENTITY, Row

CLASS_NAME = "AutoencoderKLWan"
WEIGHTS_STEM = "diffusion_pytorch_model"

# config.json key -> WanVAEConfig field (same name unless listed).
_RENAMED = {"temperal_downsample": "temporal_downsample"}
_TUPLES = ("dim_mult", "attn_scales", "temporal_downsample", "latents_mean", "latents_std")
_IGNORED = ("clip_output", "model_type")  # plus every "_..." bookkeeping key

CONV3D = table.transpose((2, 3, 4, 1, 0), "conv3d")  # [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]
CONV2D = table.transpose((2, 3, 1, 0), "conv2d")     # [out, in, kh, kw] -> [kh, kw, in, out]


def config_from_diffusers(d: dict[str, Any]) -> WanVAEConfig:
  """diffusers config.json dict -> WanVAEConfig (unknown keys are an error)."""
  if d.get("_class_name", CLASS_NAME) != CLASS_NAME:
    raise ConfigError(f"config.json _class_name is {d['_class_name']!r}; expected {CLASS_NAME!r}")
  fields = WanVAEConfig.__dataclass_fields__
  kwargs = {}
  for k, v in d.items():
    if k in _IGNORED or k.startswith("_"):
      continue
    name = _RENAMED.get(k, k)
    if name not in fields:
      known = sorted((set(fields) - set(_RENAMED.values())) | set(_RENAMED))
      raise ConfigError(f"config.json key {k!r} is not a setting of {CLASS_NAME}; expected one of {known}")
    if name in _TUPLES and v is not None:
      v = tuple(bool(x) if name == "temporal_downsample" else x for x in v)
    kwargs[name] = v
  return WanVAEConfig(**kwargs)


def config_to_diffusers(cfg: WanVAEConfig) -> dict[str, Any]:
  """WanVAEConfig -> the config.json diffusers writes for AutoencoderKLWan."""
  inverse = {v: k for k, v in _RENAMED.items()}
  out: dict[str, Any] = {"_class_name": CLASS_NAME}
  for name in WanVAEConfig.__dataclass_fields__:
    v = getattr(cfg, name)
    out[inverse.get(name, name)] = list(v) if isinstance(v, tuple) else v
  return out


@functools.lru_cache(maxsize=16)
def param_shapes(config: WanVAEConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{our param path: shape} (eval_shape only: no memory). Cached per config: do not mutate."""
  model = AutoencoderKLWan(config)
  shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _their_key(path: tuple[str, ...]) -> str:
  parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]  # resnets_0 -> resnets.0
  return ".".join(parts + [{"kernel": "weight"}.get(path[-1], path[-1])])


def name_table(config: WanVAEConfig) -> list[Row]:
  """Every parameter of the model for `config`: (our path, diffusers key, transform)."""
  rows = []
  for path, shape in sorted(param_shapes(config).items()):
    if path[-1] == "kernel":
      transform = CONV3D if len(shape) == 5 else CONV2D
    elif path[-1] == "gamma":  # WanRMS_norm: [C,1,1] with images=True (attention), else [C,1,1,1]
      extra = (1, 1) if path[-2] == "norm" else (1, 1, 1)
      transform = table.reshape(shape, shape + extra, "norm")
    else:
      transform = IDENTITY
    rows.append(Row("/".join(path), _their_key(path), transform))
  return rows


def _import(reader, config: WanVAEConfig, dtype, source: str) -> dict:
  return table.import_params(name_table(config), reader, param_shapes(config), dtype, source)


def import_wan_vae(state_dict: dict[str, Any], config: WanVAEConfig, *, dtype=jnp.float32) -> dict:
  """diffusers AutoencoderKLWan state_dict -> our params (strict: every key read, every param set)."""
  return _import(io.StateDictReader(state_dict), config, dtype, "state_dict")


def export_wan_vae(params: dict, config: WanVAEConfig, *, dtype=np.float32) -> dict[str, np.ndarray]:
  """Our params -> a diffusers AutoencoderKLWan state_dict of numpy arrays (load_state_dict strict)."""
  return table.export_state_dict(name_table(config), params, param_shapes(config), CLASS_NAME, dtype)


def load_wan_vae(path: str, *, dtype=jnp.float32, compute_dtype=jnp.float32) -> tuple[AutoencoderKLWan, dict]:
  """A diffusers VAE directory (config.json + diffusion_pytorch_model.safetensors) -> (model, params)."""
  with_cfg = os.path.join(path, "config.json")
  if not os.path.exists(with_cfg):
    raise CheckpointError(f"{with_cfg} not found: expected a diffusers {CLASS_NAME} directory")
  model = from_config(io.read_json(with_cfg), dtype=compute_dtype)
  reader = io.SafetensorsReader(path, index_name=f"{WEIGHTS_STEM}.safetensors.index.json",
                                single_name=f"{WEIGHTS_STEM}.safetensors")
  return model, _import(reader, model.config, dtype, path)


def save_wan_vae(model: AutoencoderKLWan, params: dict, path: str, *, dtype=None) -> None:
  """Writes a directory that `diffusers.AutoencoderKLWan.from_pretrained(path)` loads."""
  specs = table.export_params_specs(name_table(model.config), params, dtype=dtype)
  os.makedirs(path, exist_ok=True)
  io.write_json(os.path.join(path, "config.json"), to_config(model))
  io.write_checkpoint(path, specs, single_name=f"{WEIGHTS_STEM}.safetensors",
                      index_name=f"{WEIGHTS_STEM}.safetensors.index.json")


# ---- the shared.weights family interface ----


def from_config(cfg: dict, *, dtype=jnp.float32, compute_dtype=None, **overrides) -> AutoencoderKLWan:
  if overrides:
    raise ConfigError(f"unknown overrides for {CLASS_NAME}: {sorted(overrides)}; expected dtype/compute_dtype")
  return AutoencoderKLWan(config_from_diffusers(cfg), dtype=compute_dtype or dtype)


def to_config(module: AutoencoderKLWan) -> dict:
  return config_to_diffusers(module.config)


def rows(module: AutoencoderKLWan) -> list[Row]:
  return name_table(module.config)


def example_inputs(module: AutoencoderKLWan) -> tuple:
  c = module.config
  s = 2 ** (len(c.dim_mult) - 1)
  return (jnp.zeros((1, 1 + c.temporal_stride, s, s, c.in_channels), jnp.float32),)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

# diffusers' config.json has no "model_type": the registry matches its "_class_name".
FAMILY = Family(name="wan_vae", model_types=(CLASS_NAME,), module_class=AutoencoderKLWan,
                from_config=from_config, to_config=to_config, rows=rows, example_inputs=example_inputs,
                weights_name=WEIGHTS_STEM)
