"""KL autoencoder (SD/SDXL image VAE, AudioLDM mel VAE) <-> diffusers `AutoencoderKL`: name table, config.json.

One table derived from the model's own parameter tree drives import and export; our names mirror diffusers'
module tree, so a row reads
  our  encoder/down_blocks_1/resnets_0/conv1/kernel        [3, 3, in, out]
  their encoder.down_blocks.1.resnets.0.conv1.weight        [out, in, 3, 3]        (transform "conv2d")
  our  decoder/mid_block/attentions_0/to_out_0/kernel       [C, C]
  their decoder.mid_block.attentions.0.to_out.0.weight      [C, C]                 (transform LINEAR)
  our  encoder/conv_norm_out/scale                          <-> encoder.conv_norm_out.weight   [C]
  our  quant_conv/bias                                      <-> quant_conv.bias                [2 z]
Files: config.json (keys of diffusers' AutoencoderKL.__init__, plus "_class_name") and
diffusion_pytorch_model.safetensors (sharded index too). config.json keys we do not model are carried through
import -> export (config.hf_extra).

Old attention names (query / key / value / proj_attn, from diffusers < 0.14 checkpoints; diffusers renames them
to to_q / to_k / to_v / to_out.0 when it loads a single-file checkpoint): `import_autoencoder_kl` and
`load_autoencoder_kl` below accept them; shared.weights.load_pretrained has no per-family key rename and rejects
them (missing to_q..., unexpected query...). Export always writes the current names.

Entry points: `import_autoencoder_kl(state_dict, config)` / `export_autoencoder_kl(params, config)` (in memory),
`load_autoencoder_kl(dir)` (a diffusers directory, old names accepted), and `FAMILY` for
shared.weights.load_pretrained / save_pretrained.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError, ConfigError
from shared.models.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig, example_input, init_params
from shared.weights import io, table
from shared.weights.table import IDENTITY, LINEAR, Row

CLASS_NAME = "AutoencoderKL"
WEIGHTS_STEM = "diffusion_pytorch_model"
CONV2D = table.transpose((2, 3, 1, 0), "conv2d")     # [out, in, kh, kw] -> [kh, kw, in, out]

_RUNTIME = ("dtype", "attention_implementation", "hf_extra")   # ours only, never in config.json
_KEYS = tuple(f.name for f in dataclasses.fields(AutoencoderKLConfig) if f.name not in _RUNTIME)
_TUPLES = ("down_block_types", "up_block_types", "block_out_channels", "latents_mean", "latents_std", "sample_size")
_OLD_ATTENTION = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_NAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def config_from_diffusers(d: dict[str, Any], *, compute_dtype=None, **overrides) -> AutoencoderKLConfig:
  """diffusers config.json dict -> AutoencoderKLConfig. Absent keys take diffusers' defaults; keys we do not
  model go to hf_extra; overrides replace config fields (dtype, attention_implementation, ...)."""
  if d.get("_class_name", CLASS_NAME) != CLASS_NAME:
    raise ConfigError(f"config.json _class_name is {d['_class_name']!r}; expected {CLASS_NAME!r}")
  kwargs = {}
  for k in _KEYS:
    if k in d:
      v = d[k]
      kwargs[k] = tuple(v) if k in _TUPLES and isinstance(v, (list, tuple)) else v
  fields = {f.name for f in dataclasses.fields(AutoencoderKLConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ConfigError(f"unknown overrides for {CLASS_NAME}: {unknown}; expected compute_dtype or config fields "
                      f"{sorted(fields - {'hf_extra'})}")
  if compute_dtype is not None:
    kwargs["dtype"] = str(jnp.dtype(compute_dtype))
  return AutoencoderKLConfig(**kwargs, **overrides, hf_extra=table.carry_extra(d, _KEYS))


def config_to_diffusers(cfg: AutoencoderKLConfig) -> dict[str, Any]:
  """AutoencoderKLConfig -> the config.json diffusers' AutoencoderKL.from_pretrained reads."""
  modelled = {"_class_name": CLASS_NAME}
  for k in _KEYS:
    v = getattr(cfg, k)
    modelled[k] = list(v) if isinstance(v, tuple) else v
  return table.with_extra({}, cfg.hf_extra, modelled)


@functools.lru_cache(maxsize=16)
def param_shapes(config: AutoencoderKLConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{our param path: shape} (eval_shape only: no memory). Cached per config: do not mutate."""
  shapes = jax.eval_shape(lambda: init_params(AutoencoderKL(config), jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _their_key(path: tuple[str, ...]) -> str:
  parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]   # resnets_0 -> resnets.0, to_out_0 -> to_out.0
  return ".".join(parts + [{"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])])


def name_table(config: AutoencoderKLConfig) -> list[Row]:
  """Every parameter of the model for `config`: (our path, diffusers key, transform)."""
  rows = []
  for path, shape in sorted(param_shapes(config).items()):
    transform = IDENTITY
    if path[-1] == "kernel":
      transform = CONV2D if len(shape) == 4 else LINEAR
    rows.append(Row("/".join(path), _their_key(path), transform))
  return rows


def current_name(key: str) -> str:
  """An old attention key (mid_block.attentions.0.query.weight) -> today's (...to_q.weight); others unchanged."""
  m = _OLD_ATTENTION.match(key)
  return f"{m.group(1)}.{_NEW_NAME[m.group(2)]}.{m.group(3)}" if m else key


class RenamingReader:
  """A reader (keys/shape/get) that shows old attention keys under their current names."""

  def __init__(self, reader):
    self.reader = reader
    self.original: dict[str, str] = {}
    for k in reader.keys():
      new = current_name(k)
      if new in self.original:
        raise CheckpointError(f"checkpoint holds both {self.original[new]!r} and {k!r} for {new!r}")
      self.original[new] = k

  def keys(self):
    return list(self.original)

  def shape(self, key):
    return self.reader.shape(self.original[key])

  def get(self, key, *args, **kw):
    return self.reader.get(self.original[key], *args, **kw)


def _import(reader, config: AutoencoderKLConfig, dtype, source: str) -> dict:
  return table.import_params(name_table(config), RenamingReader(reader), param_shapes(config), dtype, source)


def import_autoencoder_kl(state_dict: dict[str, Any], config: AutoencoderKLConfig, *, dtype=jnp.float32) -> dict:
  """diffusers AutoencoderKL state_dict (current or old attention names) -> our params (strict)."""
  return _import(io.StateDictReader(state_dict), config, dtype, "state_dict")


def export_autoencoder_kl(params: dict, config: AutoencoderKLConfig, *, dtype=np.float32) -> dict[str, np.ndarray]:
  """Our params -> a diffusers AutoencoderKL state_dict of numpy arrays (load_state_dict strict)."""
  return table.export_state_dict(name_table(config), params, param_shapes(config), CLASS_NAME, dtype)


def load_autoencoder_kl(path: str, *, dtype=jnp.float32, **overrides) -> tuple[AutoencoderKL, dict]:
  """A diffusers AutoencoderKL directory -> (model, params); like shared.weights.load_pretrained but also
  accepts old attention names. overrides: compute_dtype=..., config fields."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise CheckpointError(f"{cfg_path} not found: expected a diffusers {CLASS_NAME} directory")
  model = from_config(io.read_json(cfg_path), **overrides)
  reader = io.SafetensorsReader(path, index_name=f"{WEIGHTS_STEM}.safetensors.index.json",
                                single_name=f"{WEIGHTS_STEM}.safetensors")
  return model, _import(reader, model.config, dtype, path)


# ---- the shared.weights family interface ----


def from_config(cfg: dict, **overrides) -> AutoencoderKL:
  return AutoencoderKL(config_from_diffusers(cfg, **overrides))


def to_config(module: AutoencoderKL) -> dict:
  return config_to_diffusers(module.config)


def rows(module: AutoencoderKL) -> list[Row]:
  return name_table(module.config)


def example_inputs(module: AutoencoderKL) -> tuple:
  return (example_input(module.config),)


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

# diffusers' config.json has no "model_type": the registry matches its "_class_name".
FAMILY = Family(name="autoencoder_kl", model_types=(CLASS_NAME,), module_class=AutoencoderKL,
                from_config=from_config, to_config=to_config, rows=rows, example_inputs=example_inputs,
                weights_name=WEIGHTS_STEM)
