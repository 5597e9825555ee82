"""HiFi-GAN <-> transformers SpeechT5HifiGan (config.json model_type "speecht5_hifigan"): name table, config.

A row reads
  our  conv_pre/kernel                [7, in, C]      their  conv_pre.weight                    [C, in, 7]
  our  upsampler_1/kernel             [k, in, out]    their  upsampler.1.weight                 [in, out, k]
  our  resblocks_4/convs1_2/kernel    [k, C, C]       their  resblocks.4.convs1.2.weight        [C, C, k]
  our  mean, scale                    [model_in_dim]  their  mean, scale   (buffers, always stored)
SpeechT5HifiGan holds plain convolutions (it applies weight norm only when asked, apply_weight_norm), so
every released checkpoint (microsoft/speecht5_hifigan, cvssp/audioldm*/vocoder, diffusers' converter output)
stores `.weight`/`.bias`: that is what load_pretrained reads and save_pretrained writes (and what
SpeechT5HifiGan.from_pretrained loads). A state_dict in another spelling goes through `import_state_dict`:
weight norm in either form (torch.nn.utils.weight_norm `weight_g`/`weight_v`; parametrizations
`parametrizations.weight.original0`/`original1`, what apply_weight_norm makes on torch >= 2.1) is folded
into plain kernels (w = g * v / ||v||, norm over every axis but 0, as torch's dim=0), the original HiFi-GAN /
AudioLDM naming `ups.{i}` is read as `upsampler.{i}`, and absent mean/scale buffers (the original generator
has none) default to 0 / 1 when normalize_before is False. A .pt file: shared.weights.io.read_state_dict
 (torch.load(weights_only=True), unwraps {"generator": ...}).

config.json keys from_config does not read are carried in HifiGanConfig.hf_extra and written back.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from shared.errors import CheckpointError
from shared.models.hifigan import HifiGan, HifiGanConfig, init_params
from shared.weights import io, table
from shared.weights.table import IDENTITY, Row, carry_extra, transpose, with_extra

CONV = transpose((2, 1, 0), "conv1d")             # torch [out, in, k] <-> ours [k, in, out]
CONV_T = transpose((2, 0, 1), "conv_transpose1d")  # torch [in, out, k] <-> ours [k, in, out]

# transformers' SpeechT5HifiGanConfig defaults, used for keys a config.json lacks
HF_DEFAULTS = dict(model_in_dim=80, sampling_rate=16000, upsample_initial_channel=512, upsample_rates=[4, 4, 4, 4],
                   upsample_kernel_sizes=[8, 8, 8, 8], resblock_kernel_sizes=[3, 7, 11],
                   resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], initializer_range=0.01,
                   leaky_relu_slope=0.1, normalize_before=True)
_READ = ("architectures", "model_type", *HF_DEFAULTS)


def config_from_dict(cfg: dict, **overrides) -> HifiGanConfig:
  """transformers' config.json (SpeechT5HifiGanConfig) -> HifiGanConfig; absent keys take transformers' defaults."""
  h = {**HF_DEFAULTS, **{k: v for k, v in cfg.items() if k in HF_DEFAULTS and v is not None}}
  c = HifiGanConfig(
      model_in_dim=int(h["model_in_dim"]), sampling_rate=int(h["sampling_rate"]),
      upsample_initial_channel=int(h["upsample_initial_channel"]),
      upsample_rates=tuple(int(x) for x in h["upsample_rates"]),
      upsample_kernel_sizes=tuple(int(x) for x in h["upsample_kernel_sizes"]),
      resblock_kernel_sizes=tuple(int(x) for x in h["resblock_kernel_sizes"]),
      resblock_dilation_sizes=tuple(tuple(int(x) for x in d) for d in h["resblock_dilation_sizes"]),
      initializer_range=float(h["initializer_range"]), leaky_relu_slope=float(h["leaky_relu_slope"]),
      normalize_before=bool(h["normalize_before"]), hf_extra=carry_extra(cfg, _READ))
  return c.replace(**overrides) if overrides else c


def from_config(cfg: dict, *, compute_dtype=None, **overrides) -> HifiGan:
  if compute_dtype is not None:
    overrides["dtype"] = str(jnp.dtype(compute_dtype))
  return HifiGan(config_from_dict(cfg, **overrides))


def to_config(module: HifiGan) -> dict:
  """config.json SpeechT5HifiGan.from_pretrained reads: imported extra keys < the fields we model."""
  c = module.config
  modelled = {
      "architectures": ["SpeechT5HifiGan"], "model_type": "speecht5_hifigan", "dtype": "float32",
      "model_in_dim": c.model_in_dim, "sampling_rate": c.sampling_rate,
      "upsample_initial_channel": c.upsample_initial_channel, "upsample_rates": list(c.upsample_rates),
      "upsample_kernel_sizes": list(c.upsample_kernel_sizes), "resblock_kernel_sizes": list(c.resblock_kernel_sizes),
      "resblock_dilation_sizes": [list(d) for d in c.resblock_dilation_sizes],
      "initializer_range": c.initializer_range, "leaky_relu_slope": c.leaky_relu_slope,
      "normalize_before": c.normalize_before}
  return with_extra({}, c.hf_extra, modelled)


def _conv_rows(ours: str, theirs: str, transform) -> list[Row]:
  return [Row(f"{ours}/kernel", f"{theirs}.weight", transform), Row(f"{ours}/bias", f"{theirs}.bias", IDENTITY)]


def rows(module: HifiGan) -> list[Row]:
  c = module.config
  out = [Row("mean", "mean"), Row("scale", "scale")] + _conv_rows("conv_pre", "conv_pre", CONV)
  for i in range(len(c.upsample_rates)):
    out += _conv_rows(f"upsampler_{i}", f"upsampler.{i}", CONV_T)
  nk = len(c.resblock_kernel_sizes)
  for i in range(len(c.upsample_rates)):
    for j, dil in enumerate(c.resblock_dilation_sizes):
      b = i * nk + j
      for m in range(len(dil)):
        for conv in ("convs1", "convs2"):
          out += _conv_rows(f"resblocks_{b}/{conv}_{m}", f"resblocks.{b}.{conv}.{m}", CONV)
  return out + _conv_rows("conv_post", "conv_post", CONV)


def example_inputs(module: HifiGan) -> tuple:
  return (jnp.zeros((1, 4, module.config.model_in_dim), jnp.float32),)


@functools.lru_cache(maxsize=16)
def param_shapes(config: HifiGanConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(lambda: init_params(HifiGan(config), jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


_WN = re.compile(r"^(.*)\.(?:weight_g|weight_v|parametrizations\.weight\.original[01])$")


def _fold_weight_norm(sd: dict[str, Any]) -> dict[str, Any]:
  """{..weight_g, ..weight_v} or {..parametrizations.weight.original0/1} -> ..weight = g * v / ||v||."""
  out, pairs = {}, {}
  for k, v in sd.items():
    m = _WN.match(k)
    if m is None:
      out[k] = v
      continue
    part = "g" if k.endswith(("weight_g", "original0")) else "v"
    pairs.setdefault(m.group(1), {})[part] = k
  for stem, got in pairs.items():
    if set(got) != {"g", "v"}:
      missing = stem + (".weight_v / .parametrizations.weight.original1" if "v" not in got
                        else ".weight_g / .parametrizations.weight.original0")
      raise CheckpointError(f"HiFi-GAN state_dict: weight-normed {stem} lacks {missing}")
    g = io.to_numpy(sd[got["g"]]).astype(np.float64)
    v = io.to_numpy(sd[got["v"]]).astype(np.float64)
    norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
    out[stem + ".weight"] = (v * (g.reshape((-1,) + (1,) * (v.ndim - 1)) / norm)).astype(np.float32)
  return out


def import_state_dict(state_dict: dict[str, Any], config: HifiGanConfig, *, prefix: str = "",
                      dtype=jnp.float32) -> dict:
  """A PyTorch HiFi-GAN state_dict (SpeechT5HifiGan plain or weight-normed, or the original HiFi-GAN /
  AudioLDM naming) -> our params, strict on names and shapes (CheckpointError naming the keys).
  prefix: only keys under it are read, with it stripped (e.g. "first_stage_model.vocoder." in an AudioLDM
  checkpoint)."""
  sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
  sd = _fold_weight_norm(sd)
  sd = {re.sub(r"^ups\.(\d+)\.", r"upsampler.\1.", k): v for k, v in sd.items()}
  if not config.normalize_before:
    n = config.model_in_dim
    sd.setdefault("mean", np.zeros(n, np.float32))
    sd.setdefault("scale", np.ones(n, np.float32))
  return table.import_params(rows(HifiGan(config)), io.StateDictReader(sd), param_shapes(config), dtype,
                             "HiFi-GAN state_dict")


from shared.weights import Family  # noqa: E402  (after the functions: avoids a cycle at import time)

FAMILY = Family(name="hifigan", model_types=("speecht5_hifigan", "SpeechT5HifiGan"), module_class=HifiGan,
                from_config=from_config, to_config=to_config, rows=rows, example_inputs=example_inputs,
                peft_task_type="FEATURE_EXTRACTION")
