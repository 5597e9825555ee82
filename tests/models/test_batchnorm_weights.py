"""BatchNorm statistics through the name tables: a test-only ResNet-style family (Conv + BatchNorm stem, a
scanned stack of basic blocks, an affine-free BatchNorm1d head) against its PyTorch twin, both directions."""
from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from shared import weights
from shared.errors import CheckpointError
from shared.weights import io, load_pretrained, save_pretrained, table
from shared.weights.table import Row, batchnorm_rows

MODEL_TYPE = "test_resnet_bn"
CONV2D = table.transpose((2, 3, 1, 0), "conv2d")   # torch [out, in, kh, kw] -> flax [kh, kw, in, out]
RTOL, ATOL = 1e-4, 1e-5


# ---- ours ----

@dataclasses.dataclass(frozen=True)
class NetConfig:
  in_channels: int = 3
  channels: int = 8
  num_blocks: int = 2


def _bn(train: bool, name: str, affine: bool = True):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_scale=affine,
                      use_bias=affine, name=name)


class Block(nn.Module):
  """ResNet basic block: conv-bn-relu-conv-bn + identity, relu (scanned: carry x)."""
  channels: int
  train: bool

  @nn.compact
  def __call__(self, x, _):
    y = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False, name="conv1")(x)
    y = nn.relu(_bn(self.train, "bn1")(y))
    y = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False, name="conv2")(y)
    y = _bn(self.train, "bn2")(y)
    return nn.relu(x + y), None


class Net(nn.Module):
  config: NetConfig

  @nn.compact
  def __call__(self, x, train: bool = False):   # x [B, H, W, C] -> (feature map [B, H, W, C'], pooled [B, C'])
    c = self.config
    x = nn.Conv(c.channels, (3, 3), padding=1, use_bias=False, name="conv1")(x)
    x = nn.relu(_bn(train, "bn1")(x))
    stack = nn.scan(Block, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True},
                    length=c.num_blocks)
    x, _ = stack(c.channels, train, name="layer1")(x, None)
    return x, _bn(train, "norm", affine=False)(x.mean(axis=(1, 2)))


def _rows(module: Net) -> list[Row]:
  n = module.config.num_blocks
  rows = [Row("conv1/kernel", "conv1.weight", CONV2D), *batchnorm_rows("bn1", "bn1")]
  for k in (1, 2):
    rows += [Row(f"layer1/conv{k}/kernel", f"layer1.{{i}}.conv{k}.weight", CONV2D, n),
             *batchnorm_rows(f"layer1/bn{k}", f"layer1.{{i}}.bn{k}", n)]
  return rows + batchnorm_rows("norm", "norm", affine=False)


FAMILY = weights.Family(
    name=MODEL_TYPE, model_types=(MODEL_TYPE,), module_class=Net,
    from_config=lambda cfg, **kw: Net(NetConfig(cfg["in_channels"], cfg["channels"], cfg["num_blocks"])),
    to_config=lambda m: {"model_type": MODEL_TYPE, "architectures": ["TorchNet"],
                         **dataclasses.asdict(m.config)},
    rows=_rows, example_inputs=lambda m: (jnp.zeros((1, 8, 8, m.config.in_channels)),),
    collections=("params", "batch_stats"))


# ---- theirs ----

class TorchBlock(torch.nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(c)
    self.conv2 = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(c)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(x + self.bn2(self.conv2(y)))


class TorchNet(torch.nn.Module):
  def __init__(self, cfg: NetConfig):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(cfg.in_channels, cfg.channels, 3, padding=1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(cfg.channels)
    self.layer1 = torch.nn.Sequential(*[TorchBlock(cfg.channels) for _ in range(cfg.num_blocks)])
    self.norm = torch.nn.BatchNorm1d(cfg.channels, affine=False)

  def forward(self, x):   # x [B, C, H, W]
    x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
    return x, self.norm(x.mean(dim=(2, 3)))


# ---- fixtures and helpers ----

@pytest.fixture(scope="module", autouse=True)
def _registered():
  weights.families()   # discovery first, so the test family is only added on top
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(weights._REGISTRY, MODEL_TYPE, FAMILY)
    yield


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
  """A torch model with non-trivial affine params and running statistics, saved as a checkpoint dir."""
  torch.manual_seed(0)
  cfg = NetConfig()
  model = TorchNet(cfg)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)
  model.train()
  with torch.no_grad():
    for _ in range(3):
      model(torch.randn(4, cfg.in_channels, 8, 8) * 2 + 0.5)
  model.eval()
  assert int(model.bn1.num_batches_tracked) == 3
  d = str(tmp_path_factory.mktemp("twin"))
  _write(d, cfg, model.state_dict())
  return model, cfg, d


def _write(d, cfg, state_dict):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump({"model_type": MODEL_TYPE, **dataclasses.asdict(cfg)}, f)
  save_file({k: v.contiguous() for k, v in state_dict.items()}, os.path.join(d, io.SINGLE))


def _x(cfg, seed=1):
  return np.random.default_rng(seed).normal(size=(2, cfg.in_channels, 8, 8)).astype(np.float32)


def _theirs(model, x):
  with torch.no_grad():
    fmap, pooled = model(torch.from_numpy(x))
  return fmap.numpy().transpose(0, 2, 3, 1), pooled.numpy()


def _ours(module, variables, x):
  return jax.tree.map(np.asarray, module.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False))


def _assert_close(a, b):
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=RTOL, atol=ATOL)


# ---- tests ----

def test_batchnorm_rows_name_torch_keys():
  rows = batchnorm_rows("layer1/bn1", "trunk.layer1.{i}.bn1", 2)
  got = {(r.collection, r.ours, r.theirs) for r in rows if r.constant is None}
  assert got == {("params", "layer1/bn1/scale", "trunk.layer1.{i}.bn1.weight"),
                 ("params", "layer1/bn1/bias", "trunk.layer1.{i}.bn1.bias"),
                 ("batch_stats", "layer1/bn1/mean", "trunk.layer1.{i}.bn1.running_mean"),
                 ("batch_stats", "layer1/bn1/var", "trunk.layer1.{i}.bn1.running_var")}
  assert [key for key, *_ in table.constant_specs(rows)] == [
      "trunk.layer1.0.bn1.num_batches_tracked", "trunk.layer1.1.bn1.num_batches_tracked"]
  key, shape, dt, produce = table.constant_specs(batchnorm_rows("bn", "frontend3D.1", num_batches_tracked=7))[0]
  assert (key, shape, dt, int(produce())) == ("frontend3D.1.num_batches_tracked", (), np.dtype(np.int64), 7)
  assert [r.path for r in table.leaf_rows(batchnorm_rows("bn", "bn"), variables=True)] == [
      ("params", "bn", "scale"), ("params", "bn", "bias"), ("batch_stats", "bn", "mean"), ("batch_stats", "bn", "var")]
  with pytest.raises(ValueError):
    batchnorm_rows("bn", "bn", 2)


def test_import_torch_running_stats_matches_eval(twin):
  model, cfg, d = twin
  module, variables = load_pretrained(d)
  assert set(variables) == {"params", "batch_stats"}
  np.testing.assert_array_equal(variables["batch_stats"]["layer1"]["bn2"]["var"][1],
                                model.layer1[1].bn2.running_var.numpy())
  assert variables["batch_stats"]["layer1"]["bn1"]["mean"].shape == (cfg.num_blocks, cfg.channels)
  assert "norm" not in variables["params"]   # affine=False: statistics only
  x = _x(cfg)
  _assert_close(_ours(module, variables, x), _theirs(model, x))


def test_export_loads_strict_in_torch(twin, tmp_path):
  model, cfg, d = twin
  module, variables = load_pretrained(d)
  # move our statistics away from the imported ones (train-mode forward), so export is checked on its own
  x_train = jnp.asarray(np.random.default_rng(5).normal(size=(4, 8, 8, cfg.in_channels)).astype(np.float32))
  _, updated = module.apply(variables, x_train, train=True, mutable=["batch_stats"])
  variables = {"params": variables["params"], **updated}
  assert not np.allclose(variables["batch_stats"]["bn1"]["var"], model.bn1.running_var.numpy())
  save_pretrained(module, variables, str(tmp_path))
  sd = load_file(str(tmp_path / io.SINGLE))
  nbt = sd["layer1.1.bn2.num_batches_tracked"]
  assert nbt.dtype == torch.int64 and nbt.shape == () and int(nbt) == 0
  assert set(sd) == set(model.state_dict())
  back = TorchNet(cfg)
  back.load_state_dict(sd, strict=True)
  back.eval()
  x = _x(cfg, seed=2)
  _assert_close(_theirs(back, x), _ours(module, variables, x))
  np.testing.assert_array_equal(back.norm.running_var.numpy(), np.asarray(variables["batch_stats"]["norm"]["var"]))
  with pytest.raises(CheckpointError, match="batch_stats"):   # params alone are not enough for this family
    save_pretrained(module, variables["params"], str(tmp_path / "params_only"))


def test_missing_running_var_raises_naming_key(twin, tmp_path):
  model, cfg, _ = twin
  sd = dict(model.state_dict())
  del sd["layer1.1.bn2.running_var"]
  _write(str(tmp_path / "no_var"), cfg, sd)
  with pytest.raises(CheckpointError, match=r"layer1\.1\.bn2\.running_var"):
    load_pretrained(str(tmp_path / "no_var"))
  # num_batches_tracked is optional (checkpoints from before torch 0.4.1 lack it), never read
  sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  _write(str(tmp_path / "no_nbt"), cfg, sd)
  module, variables = load_pretrained(str(tmp_path / "no_nbt"))
  x = _x(cfg)
  _assert_close(_ours(module, variables, x), _theirs(model, x))
