"""A faithful small PyTorch AV-HuBERT video path (the oracle of tests/models/test_avhubert.py).

Written from facebookresearch/av_hubert avhubert/resnet.py (ResEncoder, BasicBlock, ResNet), avhubert/hubert.py
(SubModel, AVHubertModel.__init__ / extract_finetune) and fairseq @ afc77bd (av_hubert's pinned submodule)
fairseq/models/wav2vec/wav2vec2.py (TransformerEncoder, TransformerSentenceEncoderLayer, SamePad) with
fairseq.modules.MultiheadAttention's eval math (q scaled after its projection, key_padding_mask -> -inf).
Module names follow theirs so state_dict keys are the public checkpoint's: feature_extractor_video.resnet.*,
feature_extractor_{video,audio}.proj, layer_norm, post_extract_proj, encoder.pos_conv.0.{weight_g, weight_v,
bias}, encoder.layers.N.*, encoder.layer_norm. The pretraining-only parameters (mask_emb, final_proj,
label_embs_concat) are left out (the video path never reads them). The ResNet width is a parameter (64 in
av_hubert) so tests stay small. Dropout-free (eval); layer_norm_first=True only (every released AV-HuBERT).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin, cout, stride=1):
  return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, relu_type="prelu"):
    super().__init__()
    self.conv1 = conv3x3(inplanes, planes, stride)
    self.bn1 = nn.BatchNorm2d(planes)
    act = (lambda: nn.PReLU(num_parameters=planes)) if relu_type == "prelu" else (lambda: nn.ReLU())
    self.relu1, self.relu2 = act(), act()
    self.conv2 = conv3x3(planes, planes)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    residual = x if self.downsample is None else self.downsample(x)
    out = self.relu1(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu2(out + residual)


class ResNet(nn.Module):
  def __init__(self, layers=(2, 2, 2, 2), width=64, relu_type="prelu"):
    super().__init__()
    self.inplanes, self.relu_type = width, relu_type
    for i, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2)), start=1):
      setattr(self, f"layer{i}", self._make_layer(width * 2 ** (i - 1), n, stride))
    self.avgpool = nn.AdaptiveAvgPool2d(1)

  def _make_layer(self, planes, blocks, stride=1):
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes))
    layers = [BasicBlock(self.inplanes, planes, stride, downsample, self.relu_type)]
    self.inplanes = planes
    layers += [BasicBlock(planes, planes, relu_type=self.relu_type) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.avgpool(x).flatten(1)


class ResEncoder(nn.Module):
  """x [B, 1, T, H, W] -> [B, 8 width, T]."""

  def __init__(self, width=64, relu_type="prelu", layers=(2, 2, 2, 2)):
    super().__init__()
    self.backend_out = 8 * width
    act = nn.PReLU(num_parameters=width) if relu_type == "prelu" else nn.ReLU()
    self.frontend3D = nn.Sequential(
        nn.Conv3d(1, width, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
        nn.BatchNorm3d(width), act, nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
    self.trunk = ResNet(layers, width, relu_type)

  def forward(self, x):
    b = x.shape[0]
    x = self.frontend3D(x)
    t = x.shape[2]
    x = x.transpose(1, 2).reshape(b * t, x.shape[1], x.shape[3], x.shape[4])
    return self.trunk(x).view(b, t, -1).transpose(1, 2).contiguous()


class SubModel(nn.Module):
  """av_hubert SubModel with sub_encoder_layers = 0: x -> proj(resnet(x)^T)^T, [B, D, T]."""

  def __init__(self, resnet, input_dim, dim):
    super().__init__()
    self.resnet = resnet
    self.proj = nn.Linear(input_dim, dim)

  def forward(self, x):
    if self.resnet is not None:
      x = self.resnet(x)
    return self.proj(x.transpose(1, 2)).transpose(1, 2)


class SamePad(nn.Module):
  def __init__(self, kernel_size):
    super().__init__()
    self.remove = 1 if kernel_size % 2 == 0 else 0

  def forward(self, x):
    return x[:, :, :-self.remove] if self.remove > 0 else x


class MultiheadAttention(nn.Module):
  """fairseq MultiheadAttention (self-attention, eval): x [T, B, D], key_padding_mask [B, T] True = pad."""

  def __init__(self, dim, heads):
    super().__init__()
    self.heads, self.head_dim = heads, dim // heads
    self.scaling = self.head_dim ** -0.5
    self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

  def forward(self, x, key_padding_mask=None):
    t, b, d = x.shape
    q = self.q_proj(x) * self.scaling
    k, v = self.k_proj(x), self.v_proj(x)
    split = lambda y: y.contiguous().view(t, b * self.heads, self.head_dim).transpose(0, 1)   # [B H, T, Dh]
    q, k, v = split(q), split(k), split(v)
    w = torch.bmm(q, k.transpose(1, 2))
    if key_padding_mask is not None:
      w = w.view(b, self.heads, t, t).masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
      w = w.view(b * self.heads, t, t)
    p = F.softmax(w.float(), dim=-1).type_as(w)
    a = torch.bmm(p, v).transpose(0, 1).contiguous().view(t, b, d)
    return self.out_proj(a)


class TransformerSentenceEncoderLayer(nn.Module):
  def __init__(self, dim, ffn, heads):
    super().__init__()
    self.self_attn = MultiheadAttention(dim, heads)
    self.self_attn_layer_norm = nn.LayerNorm(dim)
    self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
    self.final_layer_norm = nn.LayerNorm(dim)

  def forward(self, x, self_attn_padding_mask=None):   # layer_norm_first=True
    residual = x
    x = residual + self.self_attn(self.self_attn_layer_norm(x), key_padding_mask=self_attn_padding_mask)
    residual = x
    return residual + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)).float()).type_as(x))


class TransformerEncoder(nn.Module):
  def __init__(self, layers, dim, ffn, heads, conv_pos, conv_pos_groups):
    super().__init__()
    conv = nn.Conv1d(dim, dim, kernel_size=conv_pos, padding=conv_pos // 2, groups=conv_pos_groups)
    nn.init.normal_(conv.weight, mean=0, std=math.sqrt(4 / (conv_pos * dim)))
    nn.init.constant_(conv.bias, 0)
    conv = nn.utils.weight_norm(conv, name="weight", dim=2)     # keys pos_conv.0.weight_g / weight_v
    self.pos_conv = nn.Sequential(conv, SamePad(conv_pos), nn.GELU())
    self.layers = nn.ModuleList([TransformerSentenceEncoderLayer(dim, ffn, heads) for _ in range(layers)])
    self.layer_norm = nn.LayerNorm(dim)

  def forward(self, x, padding_mask=None):
    if padding_mask is not None:
      x = x.masked_fill(padding_mask[..., None].bool(), 0)    # index_put(x, padding_mask, 0)
    x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
    x = x.transpose(0, 1)
    for layer in self.layers:
      x = layer(x, self_attn_padding_mask=padding_mask)
    return self.layer_norm(x.transpose(0, 1))


class AVHubertVideoTorch(nn.Module):
  """extract_finetune(source={"audio": audio, "video": video}, padding_mask) in eval.

  video [B, 1, T, H, W] (torch layout of av_hubert), audio [B, A, T] or None -> [B, T, D]."""

  def __init__(self, layers=24, dim=1024, ffn=4096, heads=16, conv_pos=128, conv_pos_groups=16, width=64,
               audio_feat_dim=104, relu_type="prelu"):
    super().__init__()
    self.dim = dim
    resnet = ResEncoder(width, relu_type)
    self.feature_extractor_audio = SubModel(None, audio_feat_dim, dim)
    self.feature_extractor_video = SubModel(resnet, resnet.backend_out, dim)
    self.post_extract_proj = nn.Linear(2 * dim, dim)
    self.encoder = TransformerEncoder(layers, dim, ffn, heads, conv_pos, conv_pos_groups)
    self.layer_norm = nn.LayerNorm(2 * dim)

  def forward(self, video, padding_mask=None, audio=None):
    fv = self.feature_extractor_video(video)                              # [B, D, T]
    fa = fv.new_zeros(fv.size(0), self.dim, fv.size(-1)) if audio is None else self.feature_extractor_audio(audio)
    x = self.layer_norm(torch.cat([fa, fv], dim=1).transpose(1, 2))
    x = self.post_extract_proj(x)
    return self.encoder(x, padding_mask=padding_mask)
