"""BigVGAN <-> NVIDIA checkpoint (bigvgan_generator.pt: {"generator": state_dict}): name table, import/export.

A row reads
  our  resblocks_4/convs1_2/weight_v   [k, in, out]     their  resblocks.4.convs1.2.weight_v  [out, in, k]
  our  ups_1/weight_v                  [k, in, out]     their  ups.1.0.weight_v               [in, out, k]
  our  ups_1/weight_g                  [in]             their  ups.1.0.weight_g               [in, 1, 1]
  our  resblocks_4/activations_3/beta  [C]              their  resblocks.4.activations.3.act.beta
Weight norm comes in two spellings: torch.nn.utils.weight_norm (`weight_g` / `weight_v`, NVIDIA's
repository) and torch.nn.utils.parametrizations.weight_norm (`parametrizations.weight.original0` /
`original1`, e.g. MMAudio's copy); both import, export writes either (`style`). A checkpoint whose weight
norm was removed (plain `.weight`) imports too (g = ||w||, v = w). The anti-aliasing filters are
persistent buffers (`*.upsample.filter`, `*.downsample.lowpass.filter` [1, 1, 12]): import checks them
against our fixed Kaiser-sinc taps, export writes them.

Entry points: `import_bigvgan(state_dict, config)`, `export_bigvgan(params, config)`,
`io.read_state_dict(path)` (.safetensors, or a torch file via torch.load(weights_only=True)), `load_bigvgan(path)`
(a directory with config.json + bigvgan_generator.pt/.safetensors, or a weights file plus a config),
`save_bigvgan(params, config, dir)` (NVIDIA's release layout: config.json + bigvgan_generator.pt =
{"generator": state_dict}, what `bigvgan.bigvgan.BigVGAN.from_pretrained(dir)` of PyPI `bigvgan` reads).
config.json keys are NVIDIA's `h` (their training keys are ignored on reading); keys absent from it take
NVIDIA's code defaults: use_tanh_at_final and use_bias_at_final True (the v1 configs lack both), and our own
extra key "mel_log" (the log base of the mel the vocoder takes; NVIDIA's code ignores it) "ln", the natural log
of NVIDIA's meldataset - set "mel_log": "log10" in the config.json of MMAudio's 16 kHz vocoder.
BigVGAN's config.json has no model_type, so this family is not in the shared.weights registry.
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
from shared.models.bigvgan import BigVGAN, BigVGANConfig, init_params, kaiser_sinc_filter
from shared.weights import io, table
from shared.weights.io import to_numpy
from shared.weights.table import IDENTITY, Row

CONV = table.transpose((2, 1, 0), "conv1d")             # [out, in, k] -> [k, in, out]
CONV_T = table.transpose((2, 0, 1), "conv_transpose1d")  # [in, out, k] -> [k, in, out]
_FIELDS = tuple(BigVGANConfig.__dataclass_fields__)
_TUPLES = ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes")
_INTS, _FLOATS = ("num_mels", "upsample_initial_channel", "sampling_rate", "hop_size", "n_fft", "win_size"), ("fmin", "fmax")
# NVIDIA's defaults for keys a config.json may lack (bigvgan.py: h.get(key, True)); mel_log: their meldataset's ln
ABSENT = {"use_tanh_at_final": True, "use_bias_at_final": True, "mel_log": "ln"}
GENERATOR_FILE, CONFIG_JSON = "bigvgan_generator.pt", "config.json"


def config_from_dict(h: dict[str, Any]) -> BigVGANConfig:
  """NVIDIA's config.json (hyper-parameters incl. training ones, which are ignored) -> BigVGANConfig."""
  kw: dict[str, Any] = dict(ABSENT)
  for k in _FIELDS:
    if k in h and h[k] is not None:
      v = h[k]
      if k in _TUPLES:
        v = tuple(int(x) for x in v)
      elif k == "resblock_dilation_sizes":
        v = tuple(tuple(int(x) for x in d) for d in v)
      elif k == "resblock":
        v = str(v)
      elif k in _INTS:
        v = int(v)
      elif k in _FLOATS:
        v = float(v)
      kw[k] = v
  missing = [k for k in ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel")
             if k not in kw]
  if missing:
    raise ConfigError(f"BigVGAN config lacks {missing}")
  return BigVGANConfig(**kw)


def config_to_dict(cfg: BigVGANConfig) -> dict[str, Any]:
  """BigVGANConfig -> NVIDIA's `h` keys (+ n_fft / win_size / fmin / fmax / mel_log; None written as null)."""
  out = {}
  for k in _FIELDS:
    v = getattr(cfg, k)
    out[k] = [list(d) for d in v] if k == "resblock_dilation_sizes" else (list(v) if isinstance(v, tuple) else v)
  return out


@functools.lru_cache(maxsize=16)
def param_shapes(config: BigVGANConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(lambda: init_params(BigVGAN(config), jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def _their_key(path: tuple[str, ...]) -> str:
  parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]
  if parts[0].startswith("ups."):
    parts.append("0")
  if path[-1] in ("alpha", "beta"):
    parts.append("act")
  return ".".join(parts + [path[-1]])


def name_table(config: BigVGANConfig) -> list[Row]:
  rows = []
  for path, shape in sorted(param_shapes(config).items()):
    transposed = path[0].startswith("ups_")
    if path[-1] == "weight_v":
      transform = CONV_T if transposed else CONV
    elif path[-1] == "weight_g":
      transform = table.reshape(shape, shape + (1, 1), "weight_g")
    else:
      transform = IDENTITY
    rows.append(Row("/".join(path), _their_key(path), transform))
  return rows


def buffers(config: BigVGANConfig) -> dict[str, np.ndarray]:
  """The anti-aliasing filter buffers of the PyTorch state_dict (constants), key -> [1, 1, 12]."""
  taps = kaiser_sinc_filter(0.25, 0.3, 12).reshape(1, 1, 12)
  prefixes = sorted({".".join(_their_key(p).split(".")[:-2]) for p in param_shapes(config) if p[-1] == "alpha"})
  out = {}
  for pre in prefixes:
    out[f"{pre}.upsample.filter"] = taps
    out[f"{pre}.downsample.lowpass.filter"] = taps
  return out


def _legacy_names(state_dict: dict[str, Any]) -> dict[str, Any]:
  """parametrizations.weight.original0/1 -> weight_g/weight_v; a plain conv `weight` -> (g = ||w||, v = w)."""
  out = {}
  for k, v in state_dict.items():
    k2 = k.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v")
    if k2.endswith(".weight") and not k2.endswith("filter"):
      w = to_numpy(v).astype(np.float32)
      out[k2[:-len("weight")] + "weight_v"] = w
      out[k2[:-len("weight")] + "weight_g"] = np.sqrt(np.sum(w * w, axis=(1, 2), keepdims=True))
      continue
    out[k2] = v
  return out


def import_bigvgan(state_dict: dict[str, Any], config: BigVGANConfig, *, dtype=jnp.float32) -> dict:
  """PyTorch BigVGAN state_dict (any weight-norm spelling) -> our params (strict on names and shapes)."""
  sd = _legacy_names(state_dict)
  for key, want in buffers(config).items():
    if key in sd and not np.allclose(to_numpy(sd[key]).reshape(want.shape), want, atol=1e-6):
      raise CheckpointError(f"BigVGAN checkpoint buffer {key} differs from the Kaiser-sinc filter this "
                            f"implementation uses (cutoff 0.25, half-width 0.3, 12 taps)")
  reader = io.StateDictReader({k: v for k, v in sd.items()})
  ignore = [re.escape(k) for k in buffers(config)]
  return table.import_params(name_table(config), reader, param_shapes(config), dtype, "BigVGAN state_dict", ignore)


def export_bigvgan(params: dict, config: BigVGANConfig, *, style: str = "weight_g", dtype=np.float32
                   ) -> dict[str, np.ndarray]:
  """Our params -> PyTorch BigVGAN state_dict (numpy). style "weight_g" (torch.nn.utils.weight_norm) or
  "parametrizations" (torch.nn.utils.parametrizations.weight_norm); buffers included."""
  if style not in ("weight_g", "parametrizations"):
    raise ConfigError(f"style must be 'weight_g' or 'parametrizations', got {style!r}")
  out = {}
  for key, _, _, produce in table.export_params_specs(name_table(config), params, dtype=dtype):
    if style == "parametrizations":
      key = key.replace(".weight_g", ".parametrizations.weight.original0").replace(
          ".weight_v", ".parametrizations.weight.original1")
    out[key] = produce()
  out.update({k: v.astype(dtype) for k, v in buffers(config).items()})
  return out


def load_bigvgan(path: str, config: BigVGANConfig | None = None, *, dtype=jnp.float32,
                 compute_dtype=jnp.float32) -> tuple[BigVGAN, dict]:
  """A directory (config.json + bigvgan_generator.pt or *.safetensors) or a weights file -> (model, params)."""
  weights = path
  if os.path.isdir(path):
    if config is None:
      cfg_path = os.path.join(path, "config.json")
      if not os.path.exists(cfg_path):
        raise CheckpointError(f"{cfg_path} not found and no config given")
      config = config_from_dict(io.read_json(cfg_path))
    names = [n for n in ("bigvgan_generator.safetensors", "bigvgan_generator.pt", "model.safetensors")
             if os.path.exists(os.path.join(path, n))]
    if not names:
      raise CheckpointError(f"no bigvgan_generator.pt / .safetensors in {path}")
    weights = os.path.join(path, names[0])
  if config is None:
    raise ConfigError(f"loading {path}: a weights file needs a BigVGANConfig")
  return BigVGAN(config, dtype=compute_dtype), import_bigvgan(io.read_state_dict(weights), config, dtype=dtype)


def save_bigvgan(params: dict, config: BigVGANConfig, path: str, *, extra: dict | None = None) -> None:
  """Our params -> NVIDIA's release layout in directory `path`: config.json (config_to_dict + use_cuda_kernel
  false + extra) and bigvgan_generator.pt = {"generator": state_dict} (torch.nn.utils.weight_norm's weight_g /
  weight_v, filter buffers included), as bigvgan.BigVGAN.save_pretrained writes it. config.mel_log must be
  stated ("ln" or "log10"): a reader of the directory needs it to feed the right mel. Needs torch."""
  import json
  if config.mel_log is None:
    raise ConfigError("save_bigvgan: config.mel_log is None: state the log base of the mel this vocoder takes "
                      "('ln': NVIDIA's mel, 'log10': MMAudio's 16k mel)")
  try:
    import torch  # noqa: PLC0415 (optional dependency: the .pt file)
  except ImportError as e:
    raise CheckpointError(f"writing {path}/{GENERATOR_FILE} needs torch (pip install torch)") from e
  sd = export_bigvgan(jax.device_get(params), config)
  os.makedirs(path, exist_ok=True)
  torch.save({"generator": {k: torch.from_numpy(np.array(v, np.float32, order="C")) for k, v in sd.items()}},
             os.path.join(path, GENERATOR_FILE))
  h = {**config_to_dict(config), "use_cuda_kernel": False, **(extra or {})}
  with open(os.path.join(path, CONFIG_JSON), "w") as f:
    json.dump(h, f, indent=2)
    f.write("\n")
