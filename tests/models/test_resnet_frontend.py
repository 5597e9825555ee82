"""Conv3dResNet (shared/nn/resnet.py) against a PyTorch twin written here in auto_avsr's layout (its state-dict
keys are the CNVSRC 2025 / auto_avsr / AV-HuBERT ones), both directions, eval and train mode, through
shared/weights/resnet_family.py. Tiny widths and 32x32 frames; fp32."""
from __future__ import annotations

import copy
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.torch import load_file

from shared import weights
from shared.errors import CheckpointError
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.weights import resnet_family as rf

RTOL = 1e-5
PREFIX = "encoder.frontend."
CONFIGS = {
    "basic_swish": ResNetConfig(block="basic", layers=(2, 2, 2, 2), act="swish", width=8),      # CNVSRC baseline
    "basic_prelu": ResNetConfig(block="basic", layers=(2, 1, 1, 2), act="prelu", width=8),      # AV-HuBERT
    "bottleneck_relu": ResNetConfig(block="bottleneck", layers=(3, 4, 6, 3), act="relu", width=4),  # ResNet-50
}


# ---- theirs: auto_avsr's Conv3dResNet (+ a v1.5 Bottleneck in the same naming), width as a parameter ----

def _act(kind, channels):
  return {"relu": lambda: torch.nn.ReLU(), "swish": lambda: torch.nn.SiLU(),
          "prelu": lambda: torch.nn.PReLU(num_parameters=channels)}[kind]()


def _conv(cin, cout, k, stride=1):
  return torch.nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class TorchBasicBlock(torch.nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, act="swish"):
    super().__init__()
    self.conv1, self.bn1, self.relu1 = _conv(inplanes, planes, 3, stride), torch.nn.BatchNorm2d(planes), \
        _act(act, planes)
    self.conv2, self.bn2, self.relu2 = _conv(planes, planes, 3), torch.nn.BatchNorm2d(planes), _act(act, planes)
    self.downsample = downsample

  def forward(self, x):
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu2(out + residual)


class TorchBottleneck(torch.nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, act="swish"):
    super().__init__()
    self.conv1, self.bn1, self.relu1 = _conv(inplanes, planes, 1), torch.nn.BatchNorm2d(planes), _act(act, planes)
    self.conv2, self.bn2, self.relu2 = _conv(planes, planes, 3, stride), torch.nn.BatchNorm2d(planes), \
        _act(act, planes)
    self.conv3, self.bn3 = _conv(planes, planes * 4, 1), torch.nn.BatchNorm2d(planes * 4)
    self.relu3 = _act(act, planes * 4)
    self.downsample = downsample

  def forward(self, x):
    out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu3(out + residual)


class TorchResNet(torch.nn.Module):
  def __init__(self, block, layers, act, width):
    super().__init__()
    self.inplanes, self.act = width, act
    self.layer1 = self._make_layer(block, width, layers[0])
    self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
    self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
    self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
    self.avgpool = torch.nn.AdaptiveAvgPool2d(1)

  def _make_layer(self, block, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = torch.nn.Sequential(
          torch.nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
          torch.nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, act=self.act)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, act=self.act) for _ in range(1, blocks)]
    return torch.nn.Sequential(*layers)

  def forward(self, x):
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.avgpool(x).flatten(1)


class TorchConv3dResNet(torch.nn.Module):
  def __init__(self, c: ResNetConfig):
    super().__init__()
    block = {"basic": TorchBasicBlock, "bottleneck": TorchBottleneck}[c.block]
    self.trunk = TorchResNet(block, c.layers, c.act, c.width)
    self.frontend3D = torch.nn.Sequential(
        torch.nn.Conv3d(1, c.width, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
        torch.nn.BatchNorm3d(c.width), _act(c.act, c.width),
        torch.nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))

  def forward(self, xs):   # [B, T, 1, H, W] (auto_avsr) -> [B, T, C]
    xs = xs.transpose(1, 2)
    b = xs.shape[0]
    xs = self.frontend3D(xs)
    t = xs.shape[2]
    xs = xs.transpose(1, 2).reshape(b * t, xs.shape[1], xs.shape[3], xs.shape[4])
    return self.trunk(xs).view(b, t, -1)


class System(torch.nn.Module):
  """A system checkpoint around the front end: keys encoder.frontend.* plus keys that are not ours."""

  def __init__(self, c, frontend=None):
    super().__init__()
    self.encoder = torch.nn.Module()
    self.encoder.frontend = frontend if frontend is not None else TorchConv3dResNet(c)
    self.encoder.embed = torch.nn.Linear(c.out_features, 6)


# ---- helpers ----

def twin(c: ResNetConfig, seed=0) -> TorchConv3dResNet:
  """A torch model with random affine BN params, running statistics and PReLU slopes (eval mode)."""
  torch.manual_seed(seed)
  model = TorchConv3dResNet(c)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        m.weight.uniform_(0.6, 1.4)
        m.bias.uniform_(-0.3, 0.3)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
        m.num_batches_tracked.fill_(7)
      elif isinstance(m, torch.nn.PReLU):
        m.weight.uniform_(0.05, 0.5)
  return model.eval()


def frames(b=2, t=6, hw=32, seed=1):
  return np.random.default_rng(seed).normal(size=(b, t, hw, hw)).astype(np.float32)


def run_torch(model, x, train=False):
  model.train(train)
  with torch.no_grad():
    return model(torch.from_numpy(x)[:, :, None]).numpy()


def assert_close(ours, theirs, rtol=RTOL):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * float(np.abs(theirs).max()))


def state_numpy(model):
  return {k: v.numpy() for k, v in model.state_dict().items()}


_APPLY = {}


def apply(c, variables, x, train=False, mask=None):
  """Jitted module.apply per config and mode: -> y (eval) or (y, new batch_stats) (train)."""
  key = (c, train, mask is not None)
  if key not in _APPLY:
    m = Conv3dResNet(c)
    if train:
      _APPLY[key] = jax.jit(lambda v, x, mask: m.apply(v, x, True, mask, mutable=["batch_stats"]))
    else:
      _APPLY[key] = jax.jit(lambda v, x, mask: m.apply(v, x, False, mask))
  out = _APPLY[key](variables, jnp.asarray(x), None if mask is None else jnp.asarray(mask))
  return (np.asarray(out[0]), out[1]["batch_stats"]) if train else np.asarray(out)


# ---- parity ----

@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_torch_eval_and_train(name):
  """Their random weights -> ours: eval outputs equal; one train-mode forward updates running_mean /
  running_var identically (torch: unbiased running variance) and torch's num_batches_tracked goes 7 -> 8."""
  c = CONFIGS[name]
  model = twin(c)
  enc = System(c, model)
  variables = rf.from_torch_state_dict(enc.state_dict(), Conv3dResNet(c), prefix=PREFIX)   # not encoder.embed
  assert set(variables) == {"params", "batch_stats"}
  np.testing.assert_array_equal(variables["batch_stats"]["trunk"]["layer1_0"]["bn1"]["var"],
                                model.trunk.layer1[0].bn1.running_var.numpy())
  x = frames()
  y = apply(c, variables, x)
  assert y.shape == (2, 6, c.out_features) and y.dtype == np.float32
  assert_close(y, run_torch(model, x))

  xt = frames(seed=3) * 1.5 + 0.3
  y_train, stats = apply(c, variables, xt, train=True)
  # Batch statistics over few values per channel (layer4 sees 1x1 maps: 12 per channel here) are badly
  # conditioned: torch's own fp32 result then differs from its fp64 one by up to ~1e-4 (the 16-block
  # bottleneck). Ours must match torch fp32 to 1e-5 or to 3x torch's own fp32 error, whichever is larger.
  ref64 = run_torch(copy.deepcopy(model).double(), xt.astype(np.float64), train=True)
  y_torch = run_torch(model, xt, train=True)
  own_error = float(np.abs(y_torch - ref64).max() / np.abs(ref64).max())
  assert_close(y_train, y_torch, rtol=max(RTOL, 3 * own_error))
  assert int(model.frontend3D[1].num_batches_tracked) == 8
  theirs = state_numpy(model)
  ours = rf.to_torch_state_dict({"params": variables["params"], "batch_stats": stats}, num_batches_tracked=8)
  assert set(ours) == set(theirs)
  for k in theirs:
    if k.endswith("num_batches_tracked"):
      assert ours[k].dtype == np.int64 and int(ours[k]) == int(theirs[k]) == 8, k
    else:
      assert_close(ours[k], theirs[k])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_strict_in_torch(name):
  c = CONFIGS[name]
  module = Conv3dResNet(c)
  x = frames(seed=4)
  # our variables tree (module.init's structure; random values from numpy: compiling a jitted init's threefry
  # for ~60 kernels takes ~12 s of CPU), then statistics from a train step on shifted data
  shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(jax.random.key(1), jnp.asarray(x), False)))
  rng = np.random.default_rng(2)
  params = jax.tree.map(lambda s: (rng.normal(size=s.shape) / math.sqrt(math.prod(s.shape[:-1])) if len(s.shape) > 1
                                   else rng.uniform(0.1, 1.2, s.shape)).astype(np.float32), shapes["params"])
  stats = jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"])
  _, stats = apply(c, {"params": params, "batch_stats": stats}, x * 2.0 + 0.5, train=True)
  variables = {"params": params, "batch_stats": stats}
  sd = rf.to_torch_state_dict(variables, prefix=PREFIX)
  enc = System(c)
  missing, unexpected = enc.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
  assert unexpected == [] and sorted(missing) == ["encoder.embed.bias", "encoder.embed.weight"]
  back = TorchConv3dResNet(c)
  back.load_state_dict({k[len(PREFIX):]: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  assert_close(run_torch(back, x), apply(c, variables, x))


def test_save_and_load_pretrained(tmp_path):
  """The registered family: load_pretrained reads a directory the torch twin's state dict was saved to;
  save_pretrained writes one torch loads strictly."""
  c = CONFIGS["basic_prelu"]
  model = twin(c, seed=5)
  module = Conv3dResNet(c)
  variables = rf.from_torch_state_dict(model.state_dict(), module)
  weights.save_pretrained(module, variables, str(tmp_path / "out"))
  back = TorchConv3dResNet(c)
  back.load_state_dict(load_file(str(tmp_path / "out" / "model.safetensors")), strict=True)
  x = frames(seed=6)
  assert_close(run_torch(back, x), run_torch(model, x))
  module2, variables2 = weights.load_pretrained(str(tmp_path / "out"))
  assert module2.config == c
  assert_close(apply(c, variables2, x), run_torch(model, x))


# ---- errors ----

def test_errors_name_the_keys():
  c = CONFIGS["basic_swish"]
  module = Conv3dResNet(c)
  sd = TorchConv3dResNet(c).state_dict()
  bad = dict(sd)
  del bad["trunk.layer2.0.downsample.1.running_var"]
  with pytest.raises(CheckpointError, match=r"missing keys \['trunk\.layer2\.0\.downsample\.1\.running_var'\]"):
    rf.from_torch_state_dict(bad, module)
  bad = {**sd, "trunk.layer1.0.relu1.weight": torch.zeros(8)}   # a prelu checkpoint into a swish model
  with pytest.raises(CheckpointError, match=r"unexpected keys \['trunk\.layer1\.0\.relu1\.weight'\]"):
    rf.from_torch_state_dict(bad, module)
  bad = {**sd, "frontend3D.0.weight": torch.zeros(8, 1, 3, 7, 7)}
  with pytest.raises(CheckpointError, match=r"frontend3D\.0\.weight: \(8, 1, 3, 7, 7\)"):
    rf.from_torch_state_dict(bad, module)
  with pytest.raises(CheckpointError, match="prefix 'encoder.frontend.'"):
    rf.from_torch_state_dict(sd, module, prefix=PREFIX)
  # num_batches_tracked may be absent (never read)
  rf.from_torch_state_dict({k: v for k, v in sd.items() if "num_batches" not in k}, module)
  with pytest.raises(CheckpointError, match="batch_stats"):
    rf.to_torch_state_dict({"params": {}})


# ---- structure ----

def test_layout_and_annotations():
  c = CONFIGS["bottleneck_relu"]
  theirs = TorchConv3dResNet(c).state_dict()
  assert {r.theirs for r in rf.rows(c)} == set(theirs)   # the table covers the twin's keys exactly
  c18 = ResNetConfig()   # the CNVSRC baseline: 64 wide, 88x88 mouths
  assert {r.theirs for r in rf.rows(c18)} == set(TorchConv3dResNet(c18).state_dict())
  module = Conv3dResNet(c18)
  boxed = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 5, 88, 88)), False))
  k = boxed["params"]["conv3d"]["kernel"]
  assert k.names == ("conv_kernel", None, None, "conv_in", "conv_out") and k.value.shape == (5, 7, 7, 1, 64)
  assert boxed["params"]["trunk"]["layer1_0"]["bn1"]["scale"].names == ("norm",)
  out = jax.eval_shape(lambda v: module.apply(v, jnp.zeros((2, 3, 88, 88, 1)), False), boxed)
  assert out.shape == (2, 3, 512)
  bf16 = Conv3dResNet(c18.replace(dtype=jnp.bfloat16))   # bf16 compute: params, statistics, output float32
  out = jax.eval_shape(lambda v: bf16.apply(v, jnp.zeros((2, 3, 88, 88)), True, mutable=["batch_stats"]), boxed)
  assert out[0].dtype == jnp.float32 and out[1]["batch_stats"]["bn3d"]["var"].dtype == jnp.float32
  assert rf.config_from_variables(boxed) == c18
  n_params = sum(math.prod(v.value.shape) for v in jax.tree.leaves(
      boxed["params"], is_leaf=lambda v: hasattr(v, "names")))
  assert n_params == sum(p.numel() for p in TorchConv3dResNet(c18).parameters())


# ---- padded batches ----

def test_mask_padded_frames():
  c = CONFIGS["basic_prelu"]
  model = twin(c, seed=7)
  variables = rf.from_torch_state_dict(model.state_dict(), c)
  x = frames(b=2, t=6, seed=8)
  lengths = np.array([6, 4])
  mask = np.arange(6)[None] < lengths[:, None]
  garbage = np.where(mask[:, :, None, None], x, 50.0).astype(np.float32)
  # eval: each real frame as if its sequence were alone, whatever the padding holds; padded rows 0
  y = apply(c, variables, garbage, mask=mask)
  for i, n in enumerate(lengths):
    assert_close(y[i, :n], run_torch(model, x[i:i + 1, :n])[0])
  assert not y[1, 4:].any()
  assert_close(apply(c, variables, x, mask=np.ones((2, 6), bool)), apply(c, variables, x))
  # mask=None is auto_avsr: zero padding gives real frames their unpadded values too
  zero_padded = np.where(mask[:, :, None, None], x, 0.0).astype(np.float32)
  assert_close(apply(c, variables, zero_padded)[1, :4], run_torch(model, x[1:2, :4])[0])
  # train: padded frames are left out of the statistics (n - 1 of the unbiased variance counts real frames)
  y_pad, stats_pad = apply(c, variables, garbage[1:], train=True, mask=mask[1:])
  y_cut, stats_cut = apply(c, variables, x[1:, :4], train=True)
  assert_close(y_pad[:, :4], y_cut)
  for a, b in zip(jax.tree.leaves(stats_pad), jax.tree.leaves(stats_cut)):
    assert_close(a, b)
  run_torch(model, x[1:, :4], train=True)
  theirs = state_numpy(model)
  flat_stats = traverse_util.flatten_dict(stats_pad)
  for path, key in (("bn3d/var", "frontend3D.1.running_var"),
                    ("trunk/layer4_1/bn2/var", "trunk.layer4.1.bn2.running_var")):
    assert_close(flat_stats[tuple(path.split("/"))], theirs[key])


def test_taps_stem_equals_conv3d():
  """stem="taps" (time taps stacked as channels of one 2-D conv, fast on XLA:CPU) = the Conv3d: same variables,
  same outputs, statistics and gradients."""
  x = jnp.asarray(np.random.default_rng(0).random((1, 4, 8, 8), np.float32))   # tiny: XLA:CPU's Conv3d grad is slow
  a = Conv3dResNet(ResNetConfig(width=2, layers=(1, 1, 1, 1)))
  b = Conv3dResNet(ResNetConfig(width=2, layers=(1, 1, 1, 1), stem="taps"))
  shapes = nn.meta.unbox(jax.eval_shape(a.init, jax.random.key(0), x))   # numpy values: jit init compiles slowly
  assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(jnp.shape, nn.meta.unbox(jax.eval_shape(b.init,
                                                                                       jax.random.key(0), x)))
  rng = np.random.default_rng(1)
  v = {"params": jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, jnp.float32), shapes["params"]),
       "batch_stats": jax.tree.map(lambda s: jnp.asarray(rng.random(s.shape) + 0.5, jnp.float32),
                                   shapes["batch_stats"])}

  @jax.jit
  def both(v):
    outs = []
    for m in (a, b):
      y, st = m.apply(v, x, train=True, mutable=["batch_stats"])
      g = jax.grad(lambda v, m=m: jnp.sum(m.apply(v, x) ** 2))(v)
      outs.append((y, st, g))
    return outs

  (ya, sa, ga), (yb, sb, gb) = both(v)
  np.testing.assert_allclose(yb, ya, rtol=1e-4, atol=1e-4)   # BN over 4 values per channel in layer4
  for p, q in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-6)
  for p, q in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(q, p, rtol=1e-4, atol=1e-5 * float(np.abs(p).max() + 1))
