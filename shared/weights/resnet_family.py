"""Conv3dResNet (shared/nn/resnet.py) <-> the auto_avsr / CNVSRC 2025 / AV-HuBERT front-end keys.

One name table, used both ways. Their keys, relative to a prefix (CNVSRC / auto_avsr checkpoints:
"encoder.frontend."; AV-HuBERT: "feature_extractor_video.resnet."; fine-tuned AV-HuBERT seq2seq:
"encoder.w2v_model.feature_extractor_video.resnet."):

  ours (variables path)                            theirs                                  transform
  params/conv3d/kernel [5,7,7,1,w]                 frontend3D.0.weight [w,1,5,7,7]         conv3d
  params/bn3d/{scale,bias}                         frontend3D.1.{weight,bias}
  batch_stats/bn3d/{mean,var}                      frontend3D.1.{running_mean,running_var}
  (constant)                                       frontend3D.1.num_batches_tracked        0-d int64
  params/prelu3d/negative_slope [w]                frontend3D.2.weight [w]                 (act "prelu")
  params/trunk/layer{L}_{i}/conv{1,2,3}/kernel     trunk.layer{L}.{i}.conv{1,2,3}.weight   conv2d (conv3: bottleneck)
  .../bn{1,2,3}                                    trunk.layer{L}.{i}.bn{1,2,3}.*          (BatchNorm: as frontend3D.1)
  .../downsample_conv/kernel                       trunk.layer{L}.{i}.downsample.0.weight  conv2d
  .../downsample_bn                                trunk.layer{L}.{i}.downsample.1.*       (BatchNorm)
  params/trunk/layer{L}_{i}/relu{1,2,3}/negative_slope   trunk.layer{L}.{i}.relu{1,2,3}.weight   (act "prelu")

Stem "conv2d" (a per-frame 2-D stem, UniCUE's visual processor): torchvision's ResNet keys, no "trunk." level:
  params/conv1/kernel [7,7,Cin,w]                  conv1.weight [w,Cin,7,7]                conv2d
  params/bn1, batch_stats/bn1                      bn1.*                                    (BatchNorm)
  params/act1/negative_slope [w]                   act1.weight                              (act "prelu"; not torchvision)
  params/trunk/layer{L}_{i}/...                    layer{L}.{i}.conv{k} / bn{k} / downsample.{0,1}.*   (as above)
so a relu model of width 64 is torchvision's resnet18 / 34 / 50 state dict without fc.* (load with strict=False).

(layer L = 1..4, i = 0..layers[L-1]-1; downsample on the first block of a layer when its stride is 2 or its
channels change; the trunk's avgpool and the stem's max pool have no weights). Swish and ReLU have no
weights, so a swish and a relu model share one key set: the activation is in config.json, not the keys.
BatchNorm rows come from shared.weights.table.batchnorm_rows: running_mean / running_var live in the
batch_stats collection; num_batches_tracked is accepted (or absent) on import and never read, and export
writes `num_batches_tracked` (default 0; torch reads it only for momentum=None, see batchnorm_rows).

  variables = from_torch_state_dict(state_dict, module, prefix="encoder.frontend.")  # {"params", "batch_stats"}
  sd = to_torch_state_dict(variables, prefix="encoder.frontend.")   # {their key: np.ndarray}
  module, variables = shared.weights.load_pretrained(dir)     # config.json model_type "conv3d_resnet"
  shared.weights.save_pretrained(module, variables, dir)      # + model.safetensors, keys without prefix

config.json (this family's own; auto_avsr / AV-HuBERT checkpoints carry none):
  {"model_type": "conv3d_resnet", "architectures": ["Conv3dResNet"], "block": "basic",
   "layers": [2, 2, 2, 2], "act": "swish", "width": 64}   (+ "stem": "conv2d", "in_channels": C for a 2-D stem)
Eval with module.apply(variables, x, train=False); train with mutable=["batch_stats"].
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
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.weights import Family, io, table
from shared.weights.table import Row, batchnorm_rows

MODEL_TYPE = "conv3d_resnet"
CONV3D = table.transpose((2, 3, 4, 1, 0), "conv3d")   # torch [out, in, kt, kh, kw] -> ours [kt, kh, kw, in, out]
CONV2D = table.transpose((2, 3, 1, 0), "conv2d")      # torch [out, in, kh, kw] -> ours [kh, kw, in, out]
CONFIG_KEYS = ("block", "layers", "act", "width", "stem", "in_channels")


def _layout(config: ResNetConfig) -> list[tuple[int, int, bool]]:
  """[(stage, block index, has downsample)] in auto_avsr's _make_layer order."""
  out, inplanes = [], config.width
  for stage, (n, stride) in enumerate(zip(config.layers, (1, 2, 2, 2)), start=1):
    planes = config.width * 2 ** (stage - 1)
    for i in range(n):
      out.append((stage, i, i == 0 and (stride != 1 or inplanes != planes * config.expansion)))
      inplanes = planes * config.expansion
  return out


def rows(config: ResNetConfig | Conv3dResNet, prefix: str = "", num_batches_tracked: int = 0) -> list[Row]:
  """The name table: our variables paths within their collection (Row.collection) <-> `prefix` + their key."""
  c = config.config if isinstance(config, Conv3dResNet) else config
  p, nbt = prefix, num_batches_tracked
  if c.stem == "conv2d":   # torchvision's names
    out = [Row("conv1/kernel", f"{p}conv1.weight", CONV2D),
           *batchnorm_rows("bn1", f"{p}bn1", num_batches_tracked=nbt)]
    if c.act == "prelu":
      out.append(Row("act1/negative_slope", f"{p}act1.weight"))
    trunk = p
  else:
    out = [Row("conv3d/kernel", f"{p}frontend3D.0.weight", CONV3D),
           *batchnorm_rows("bn3d", f"{p}frontend3D.1", num_batches_tracked=nbt)]
    if c.act == "prelu":
      out.append(Row("prelu3d/negative_slope", f"{p}frontend3D.2.weight"))
    trunk = f"{p}trunk."
  n_conv = 3 if c.block == "bottleneck" else 2
  for stage, i, down in _layout(c):
    ours, theirs = f"trunk/layer{stage}_{i}", f"{trunk}layer{stage}.{i}"
    for k in range(1, n_conv + 1):
      out += [Row(f"{ours}/conv{k}/kernel", f"{theirs}.conv{k}.weight", CONV2D),
              *batchnorm_rows(f"{ours}/bn{k}", f"{theirs}.bn{k}", num_batches_tracked=nbt)]
    if down:
      out += [Row(f"{ours}/downsample_conv/kernel", f"{theirs}.downsample.0.weight", CONV2D),
              *batchnorm_rows(f"{ours}/downsample_bn", f"{theirs}.downsample.1", num_batches_tracked=nbt)]
    if c.act == "prelu":
      out += [Row(f"{ours}/relu{k}/negative_slope", f"{theirs}.relu{k}.weight") for k in range(1, n_conv + 1)]
  return out


def example_inputs(module: Conv3dResNet) -> tuple:
  return (jnp.zeros((1, 5, 32, 32, module.config.in_channels), jnp.float32), False)


@functools.lru_cache(maxsize=32)
def _shapes(config: ResNetConfig) -> dict[tuple, tuple]:
  """{variables path: shape} (paths start with "params" / "batch_stats"), via eval_shape."""
  module = Conv3dResNet(config)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_inputs(module)))
  flat = traverse_util.flatten_dict(nn.meta.unbox({k: shapes[k] for k in ("params", "batch_stats")}))
  return {k: tuple(v.shape) for k, v in flat.items()}


def config_from_variables(variables, act: str = "swish") -> ResNetConfig:
  """The ResNetConfig a variables dict was built with (block, layers, width; act "prelu" when it has PReLU
  slopes, else `act`: swish and relu have the same variables)."""
  params = nn.meta.unbox(variables["params"])
  stem = "conv2d" if "conv1" in params else "conv3d"
  try:
    kernel = params["conv1" if stem == "conv2d" else "conv3d"]["kernel"]
    width, cin = int(kernel.shape[-1]), int(kernel.shape[-2])
    trunk = params["trunk"]
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"variables are not a Conv3dResNet's: no params/conv3d/kernel (or params/conv1/kernel) "
                          f"or params/trunk ({e})") from None
  counts = [0] * 4
  for name in trunk:
    m = re.fullmatch(r"layer([1-4])_(\d+)", name)
    if m:
      counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
  block = "bottleneck" if "conv3" in trunk.get("layer1_0", {}) else "basic"
  prelu = "prelu3d" in params or "act1" in params
  return ResNetConfig(block=block, layers=tuple(counts), act="prelu" if prelu else act, width=width, stem=stem,
                      in_channels=cin)


class _Prefixed:
  """The keys of a state dict that start with `prefix` (the rest of a system's checkpoint is not ours)."""

  def __init__(self, state_dict: Mapping, prefix: str):
    self._r = io.StateDictReader({k: v for k, v in state_dict.items() if k.startswith(prefix)})

  def keys(self):
    return self._r.keys()

  def shape(self, key):
    return self._r.shape(key)

  def get(self, key):
    return self._r.get(key)


def from_torch_state_dict(state_dict: Mapping, module: Conv3dResNet | ResNetConfig, prefix: str = "",
                          dtype=np.float32) -> dict:
  """A torch state dict (tensors or arrays; a whole model's is fine: only keys starting with `prefix` are
  looked at) -> variables {"params": ..., "batch_stats": ...} (jax arrays in `dtype`) for `module`.
  Raises CheckpointError naming missing, unexpected (under the prefix) and mis-shaped keys."""
  config = module.config if isinstance(module, Conv3dResNet) else module
  all_rows = rows(config, prefix)
  reader = _Prefixed(state_dict, prefix)
  if not reader.keys():
    some = sorted(state_dict)[:8]
    first = "conv1.weight" if config.stem == "conv2d" else "frontend3D.0.weight"
    raise CheckpointError(f"Conv3dResNet weights: no key starts with prefix {prefix!r} (keys begin {some}); "
                          f"expected e.g. {prefix}{first}")
  flat = table.import_tensors(table.leaf_rows(all_rows, variables=True), reader, _shapes(config), np.dtype(dtype),
                              table.constant_ignore(all_rows), source=f"state dict (prefix {prefix!r})")
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def to_torch_state_dict(variables, prefix: str = "", *, module: Conv3dResNet | ResNetConfig | None = None,
                        num_batches_tracked: int = 0, dtype=None) -> dict[str, np.ndarray]:
  """variables {"params": ..., "batch_stats": ...} -> {prefix + their key: np.ndarray} that the torch module
  loads with load_state_dict(strict=True) (num_batches_tracked: 0-d int64 holding `num_batches_tracked`).
  `module` (or its config) fixes the table; without it the table follows the variables' structure."""
  variables = nn.meta.unbox(variables)
  missing = [c for c in ("params", "batch_stats") if not hasattr(variables, "keys") or c not in variables]
  if missing:
    raise CheckpointError(f"to_torch_state_dict: pass the variables dict {{'params': ..., 'batch_stats': ...}} "
                          f"(missing {missing})")
  if module is None:
    config = config_from_variables(variables)
  else:
    config = module.config if isinstance(module, Conv3dResNet) else module
  all_rows = rows(config, prefix, num_batches_tracked)
  flat = traverse_util.flatten_dict({c: variables[c] for c in ("params", "batch_stats")})
  leaf_rows = table.leaf_rows(all_rows, variables=True)
  table.check_coverage(leaf_rows, {k: v.shape for k, v in flat.items()})
  specs = table.export_specs(leaf_rows, flat, dtype) + table.constant_specs(all_rows)
  return {key: np.array(produce()) for key, _, _, produce in specs}   # writable (torch.from_numpy)


def _from_config(cfg: dict, **overrides) -> Conv3dResNet:
  unknown = sorted(set(overrides) - {"dtype", "compute_dtype"})
  if unknown:
    raise CheckpointError(f"{MODEL_TYPE}: unknown overrides {unknown}; expected dtype / compute_dtype")
  try:
    kw = {k: (tuple(cfg[k]) if k == "layers" else cfg[k]) for k in CONFIG_KEYS if k in cfg}
  except TypeError:
    raise CheckpointError(f"{MODEL_TYPE} config.json: layers={cfg.get('layers')!r}; expected 4 block counts") \
        from None
  dtype = overrides.get("compute_dtype", overrides.get("dtype"))
  if dtype is not None:
    kw["dtype"] = jnp.dtype(dtype).name
  return Conv3dResNet(ResNetConfig(**kw))


def _to_config(module: Conv3dResNet) -> dict:
  c = module.config
  out = {"model_type": MODEL_TYPE, "architectures": ["Conv3dResNet"], "block": c.block, "layers": list(c.layers),
         "act": c.act, "width": c.width}
  if c.stem == "conv2d":   # the 3-D stems ("conv3d" / "taps") share one variable set: not written
    out.update(stem="conv2d", in_channels=c.in_channels)
  return out


FAMILY = Family(
    name=MODEL_TYPE, model_types=(MODEL_TYPE,), module_class=Conv3dResNet,
    from_config=_from_config, to_config=_to_config, rows=lambda module: rows(module),
    example_inputs=example_inputs, peft_task_type="FEATURE_EXTRACTION",
    collections=("params", "batch_stats"))
