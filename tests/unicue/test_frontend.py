"""The per-frame 2-D stem of shared.nn.resnet.Conv3dResNet (stem "conv2d", UniCUE's visual processor) against a
PyTorch twin written here in torchvision's ResNet layout (keys conv1, bn1, layer{L}.{i}.conv1/bn1/conv2/bn2/
downsample.{0,1}; torchvision is not installed here), both directions, through shared/weights/resnet_family.py."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import weights
from shared.nn.resnet import Conv3dResNet, ResNetConfig
from shared.weights import resnet_family as rf

torch = pytest.importorskip("torch")
CFG = ResNetConfig(block="basic", layers=(1, 2, 1, 1), act="relu", width=8, stem="conv2d", in_channels=3)


class Block(torch.nn.Module):
  def __init__(self, cin, planes, stride=1):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(planes)
    self.relu = torch.nn.ReLU()
    self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or cin != planes:
      self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(planes))

  def forward(self, x):
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(torch.nn.Module):
  """torchvision.models.resnet.ResNet(BasicBlock) without fc, width as a parameter."""

  def __init__(self, layers, width, cin=3):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(cin, width, 7, 2, 3, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(width)
    self.relu = torch.nn.ReLU()
    self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
    c = width
    for li, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2)), start=1):
      planes = width * 2 ** (li - 1)
      blocks = []
      for i in range(n):
        blocks.append(Block(c, planes, stride if i == 0 else 1))
        c = planes
      setattr(self, f"layer{li}", torch.nn.Sequential(*blocks))

  def forward(self, x):   # [N, 3, H, W] -> [N, C]
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return x.mean((2, 3))


def _twin(seed=0):
  torch.manual_seed(seed)
  m = TorchvisionResNet(CFG.layers, CFG.width)
  with torch.no_grad():
    for mod in m.modules():
      if isinstance(mod, torch.nn.BatchNorm2d):
        mod.weight.uniform_(0.6, 1.4)
        mod.bias.uniform_(-0.3, 0.3)
        mod.running_mean.normal_(0.0, 0.2)
        mod.running_var.uniform_(0.5, 2.0)
  return m.eval()


def test_conv2d_stem_matches_torchvision_layout_both_ways(tmp_path):
  twin = _twin()
  x = np.random.default_rng(0).normal(size=(2, 3, 32, 32, 3)).astype(np.float32)   # [B, T, H, W, C]
  with torch.no_grad():
    theirs = twin(torch.from_numpy(x.reshape(6, 32, 32, 3)).permute(0, 3, 1, 2)).numpy().reshape(2, 3, -1)
  sd = {k: v.numpy() for k, v in twin.state_dict().items()}
  variables = rf.from_torch_state_dict(sd, CFG)
  assert set(variables["params"]) == {"conv1", "bn1", "trunk"}
  ours = np.asarray(jax.jit(lambda v, x: Conv3dResNet(CFG).apply(v, x, False))(variables, jnp.asarray(x)))
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  # export: the directory reloads (config.json says stem conv2d) and the twin loads its state dict strictly
  out = str(tmp_path / "frontend")
  weights.save_pretrained(Conv3dResNet(CFG), variables, out)
  cfg = json.load(open(os.path.join(out, "config.json")))
  assert cfg["stem"] == "conv2d" and cfg["in_channels"] == 3
  module, back = weights.load_pretrained(out)
  assert module.config.stem == "conv2d" and module.config.in_channels == 3
  from safetensors.torch import load_file
  fresh = TorchvisionResNet(CFG.layers, CFG.width)
  fresh.load_state_dict(load_file(os.path.join(out, "model.safetensors")), strict=True)
  fresh.eval()
  with torch.no_grad():
    again = fresh(torch.from_numpy(x.reshape(6, 32, 32, 3)).permute(0, 3, 1, 2)).numpy().reshape(2, 3, -1)
  np.testing.assert_allclose(again, theirs, rtol=1e-5, atol=1e-5)
  assert rf.config_from_variables(back, act="relu") == CFG   # (relu and swish share one variable set)
