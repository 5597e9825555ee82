"""AV-HuBERT video path (shared.models.avhubert + shared.weights.avhubert_family) against the faithful PyTorch
definition in tests/models/avhubert_torch.py (fp32, max abs error / max |reference| <= 1e-5):
torch -> ours (plain and encoder.w2v_model. keys, pretraining-only keys ignored), ours -> torch (strict load),
save/load_pretrained, the padding mask, the fairseq .pt converter (--trust-pickle) and the Large preset's size.
Tiny config: 2 layers, dim 64, ffn 128, 4 heads, conv_pos 8 (even: SamePad drops one frame), 4 groups,
ResNet-18 of width 4 (512 -> 32 features), 88 x 88 frames."""
from __future__ import annotations

import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.numpy import load_file

from shared import weights
from shared.errors import CheckpointError
from shared.models.avhubert import AVHubertConfig, AVHubertVideo, avhubert_large
from shared.nn.resnet import ResNetConfig
from shared.weights import avhubert_family as af

sys.path.insert(0, os.path.dirname(__file__))
from avhubert_torch import AVHubertVideoTorch  # noqa: E402

TOL = 1e-5
B, T, HW = 2, 8, 88
CFG = AVHubertConfig(layers=2, dim=64, ffn=128, heads=4, conv_pos=8, conv_pos_groups=4,
                     resnet=ResNetConfig(act="prelu", width=4), audio_feat_dim=12)
TORCH_KW = dict(layers=2, dim=64, ffn=128, heads=4, conv_pos=8, conv_pos_groups=4, width=4, audio_feat_dim=12)
EXTRA = {"mask_emb": (12,), "label_embs_concat": (10, 16), "final_proj.weight": (16, 64), "final_proj.bias": (16,)}


def rel_err(ours, ref) -> float:
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def randomise(model: torch.nn.Module, seed: int):
  """Every parameter and BatchNorm statistic off its init, so no row can be silently wrong."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("weight_g"):
        p.copy_(p * (1 + 0.3 * torch.rand(p.shape, generator=g)))
      elif p.ndim == 1 and ("norm" in name or ".bn" in name or "frontend3D.1" in name or "downsample.1" in name
                            or "layer_norm" in name) and name.endswith("weight"):
        p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
      elif "relu" in name or "frontend3D.2" in name:
        p.copy_(0.1 + 0.3 * torch.rand(p.shape, generator=g))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.1 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))


def frames(seed=0, b=B, t=T):
  return np.random.default_rng(seed).standard_normal((b, t, HW, HW, 1)).astype(np.float32)


def run_torch(model, x, pad=None, audio=None):
  with torch.no_grad():
    v = torch.from_numpy(np.ascontiguousarray(x[..., 0]))[:, None]          # [B, 1, T, H, W]
    a = None if audio is None else torch.from_numpy(audio).transpose(1, 2)   # [B, A, T]
    p = None if pad is None else torch.from_numpy(pad)
    return model(v, p, a).numpy()


@jax.jit
def apply(variables, x, pad):
  return AVHubertVideo(CFG).apply(variables, x, pad)


@jax.jit
def apply_unmasked(variables, x, audio=None):
  return AVHubertVideo(CFG).apply(variables, x, audio=audio)


def random_variables(module, seed):
  """Random variables in our layout (shapes from eval_shape; module.init is slow to compile on CPU)."""
  rng = np.random.default_rng(seed)
  out = {}
  for path, shape in weights.abstract_params(module).items():
    v = 0.1 * rng.standard_normal(shape)
    if path[0] == "batch_stats" and path[-1] == "var":
      v = 0.5 + rng.random(shape)
    elif path[-1] in ("scale", "weight_g"):
      v = 1 + v
    out[path] = jnp.asarray(v, jnp.float32)
  return traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def twin():
  torch.manual_seed(0)
  model = AVHubertVideoTorch(**TORCH_KW).eval()
  randomise(model, 1)
  return model


def state_numpy(model, prefix=""):
  return {prefix + k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_torch_to_ours_both_key_forms(twin):
  x, nopad = frames(), np.zeros((B, T), bool)
  ref = run_torch(twin, x)
  sd = state_numpy(twin)
  rng = np.random.default_rng(2)
  plain = {**sd, **{k: rng.standard_normal(s).astype(np.float32) for k, s in EXTRA.items()}}
  v_plain = af.from_torch_state_dict(plain, CFG)
  e = rel_err(apply(v_plain, x, nopad), ref)
  print(f"torch -> ours: rel err {e:.2e}")
  assert e <= TOL
  # fine-tuned seq2seq layout: encoder.w2v_model. prefix, a decoder beside it (ignored)
  tuned = {"encoder.w2v_model." + k: v for k, v in plain.items()}
  tuned.update({"decoder.embed_tokens.weight": np.zeros((5, 8), np.float32), "decoder.layers.0.fc1.weight": 0})
  v_tuned = af.from_torch_state_dict(tuned, CFG)
  for a, b in zip(jax.tree_util.tree_leaves(v_plain), jax.tree_util.tree_leaves(v_tuned)):
    np.testing.assert_array_equal(a, b)
  # torch's new weight-norm parametrization names read as weight_g / weight_v
  renamed = {k.replace("pos_conv.0.weight_g", "pos_conv.0.parametrizations.weight.original0")
             .replace("pos_conv.0.weight_v", "pos_conv.0.parametrizations.weight.original1"): v for k, v in sd.items()}
  np.testing.assert_array_equal(af.from_torch_state_dict(renamed, CFG)["params"]["encoder"]["pos_conv"]["weight_v"],
                                v_plain["params"]["encoder"]["pos_conv"]["weight_v"])
  # audio + video (extract_finetune with both): the audio projection is read and used
  audio = rng.standard_normal((B, T, CFG.audio_feat_dim)).astype(np.float32)
  ours = apply_unmasked(v_plain, x, audio)
  assert rel_err(ours, run_torch(twin, x, audio=audio)) <= TOL
  # strictness: an unknown key and a missing one are named
  with pytest.raises(CheckpointError, match="unexpected keys.*feature_extractor_video.extra"):
    af.from_torch_state_dict({**sd, "feature_extractor_video.extra": np.zeros(1)}, CFG)
  with pytest.raises(CheckpointError, match=r"missing keys.*encoder\.layers\.1\.fc2\.bias"):
    af.from_torch_state_dict({k: v for k, v in sd.items() if k != "encoder.layers.1.fc2.bias"}, CFG)


def test_ours_to_torch_strict_and_pretrained_dir(twin, tmp_path):
  module = AVHubertVideo(CFG)
  x, nopad = frames(3), np.zeros((B, T), bool)
  variables = random_variables(module, 1)
  ours = apply(variables, x, nopad)
  sd = af.to_torch_state_dict(variables, CFG)
  model = AVHubertVideoTorch(**TORCH_KW).eval()
  model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  e = rel_err(ours, run_torch(model, x))
  print(f"ours -> torch: rel err {e:.2e}")
  assert e <= TOL
  assert set(sd) == set(model.state_dict())
  # prefixed export (fine-tuned layout) imports back to the same variables
  back = af.from_torch_state_dict(af.to_torch_state_dict(variables, CFG, prefix="encoder.w2v_model."), CFG)
  for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)
  weights.save_pretrained(module, variables, str(tmp_path))
  assert set(load_file(str(tmp_path / "model.safetensors"))) == set(model.state_dict())
  loaded, v2 = weights.load_pretrained(str(tmp_path))
  assert loaded.config == CFG
  np.testing.assert_array_equal(apply(v2, x, nopad), ours)
  # a system's config entry: the directory into {"params": {"lip": ...}, "batch_stats": {"lip": ...}}
  from shared.weights import init as winit
  target = {c: {"lip": jax.tree_util.tree_map(jnp.zeros_like, variables[c])} for c in ("params", "batch_stats")}
  got, _ = winit.load_into(target, str(tmp_path), prefix="lip")
  for a, b in zip(jax.tree_util.tree_leaves(variables),
                  jax.tree_util.tree_leaves({c: got[c]["lip"] for c in ("params", "batch_stats")})):
    np.testing.assert_array_equal(a, b)


def test_padding_mask(twin):
  """Padding at the end: real frames' outputs equal the unpadded run (the pos_conv's reach into the padding
  sees zeros both ways), whatever the padded frames hold; and equal fairseq's given zero padded frames, on
  every frame (padded ones included)."""
  variables = af.from_torch_state_dict(state_numpy(twin), CFG)
  x = frames(4)
  pad = np.zeros((B, T), bool)
  pad[1, 5:] = True
  garbage = x.copy()
  garbage[1, 5:] = 10 * np.random.default_rng(5).standard_normal(garbage[1, 5:].shape)
  out = np.asarray(apply(variables, garbage, pad))
  alone = np.asarray(apply_unmasked(variables, x[1:2, :5]))
  e_alone = rel_err(out[1, :5], alone[0])
  np.testing.assert_array_equal(out, apply(variables, x, pad))     # padded content never matters
  zeroed = x.copy()
  zeroed[1, 5:] = 0
  e_torch = rel_err(out, run_torch(twin, zeroed, pad))
  print(f"padding: vs unpadded {e_alone:.2e}, vs fairseq (zero padded) {e_torch:.2e}")
  assert e_alone <= TOL and e_torch <= TOL
  assert rel_err(out[0], apply(variables, x, np.zeros((B, T), bool))[0]) <= TOL   # the unpadded row as before


def test_fairseq_stack_equals_transformers_stable_layer_norm(twin):
  """SPECS' oracle idea, checked: transformers' Wav2Vec2EncoderStableLayerNorm with renamed keys equals the
  fairseq TransformerEncoder (layer_norm_first) of the torch twin, padding mask included."""
  from transformers import Wav2Vec2Config   # (tests/conftest.py imports a CUDA-built torchvision safely first)
  from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2EncoderStableLayerNorm
  hf_cfg = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, hidden_act="gelu",
                          feat_extract_activation="gelu", do_stable_layer_norm=True, layer_norm_eps=1e-5,
                          hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
  hf_cfg._attn_implementation = "eager"   # standalone (not from_pretrained): None would drop the mask
  hf = Wav2Vec2EncoderStableLayerNorm(hf_cfg).eval()
  ren = [("pos_conv.0.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0"),
         ("pos_conv.0.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1"),
         ("pos_conv.0.bias", "pos_conv_embed.conv.bias"), ("self_attn.", "attention."),
         ("self_attn_layer_norm", "layer_norm"), ("fc1", "feed_forward.intermediate_dense"),
         ("fc2", "feed_forward.output_dense")]
  sd = {}
  for k, v in twin.encoder.state_dict().items():
    for a, b in ren:
      k = k.replace(a, b)
    sd[k] = v
  hf.load_state_dict(sd, strict=True)
  h = torch.randn(B, T, 64, generator=torch.Generator().manual_seed(6))
  pad = torch.zeros(B, T, dtype=torch.bool)
  pad[1, 5:] = True
  with torch.no_grad():
    ref = twin.encoder(h.clone(), pad).numpy()
    got = hf(h.clone(), attention_mask=~pad).last_hidden_state.numpy()
  e = rel_err(got, ref)
  print(f"fairseq stack vs transformers Wav2Vec2EncoderStableLayerNorm: rel err {e:.2e}")
  assert e <= TOL


def _checkpoint(twin, cfg_model, prefix="", extra=None):
  sd = {prefix + k: v.clone() for k, v in twin.state_dict().items()}
  sd.update({prefix + k: torch.zeros(s) for k, s in EXTRA.items()})
  sd.update(extra or {})
  return {"cfg": {"model": cfg_model, "task": {"input_modality": "video"}}, "model": sd, "optimizer_history": []}


FAIRSEQ_CFG = {"_name": "av_hubert", "encoder_layers": 2, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
               "encoder_attention_heads": 4, "conv_pos": 8, "conv_pos_groups": 4, "audio_feat_dim": 12,
               "activation_fn": "gelu", "layer_norm_first": True, "modality_fuse": "concat",
               "resnet_relu_type": "prelu", "resnet_weights": None, "sub_encoder_layers": 0, "dropout": 0.1}


def test_converter(twin, tmp_path):
  from shared.weights.__main__ import main
  x = frames(7)
  ref = run_torch(twin, x)
  pt = str(tmp_path / "pretrained.pt")
  torch.save(_checkpoint(twin, FAIRSEQ_CFG), pt)
  with pytest.raises(CheckpointError, match="pickle.*--trust-pickle"):
    af.convert(pt, str(tmp_path / "refused"))
  assert main(["convert-avhubert", pt, str(tmp_path / "refused")]) == 2
  assert not os.path.exists(tmp_path / "refused")
  assert main(["convert-avhubert", "--trust-pickle", pt, str(tmp_path / "out")]) == 0
  module, variables = weights.load_pretrained(str(tmp_path / "out"))
  assert module.config == CFG
  assert rel_err(apply(variables, x, np.zeros((B, T), bool)), ref) <= TOL
  # fine-tuned seq2seq: cfg.model holds w2v_args.model; keys under encoder.w2v_model.; decoder ignored; the
  # cfg leaves out resnet / pos-conv fields (taken from the shapes)
  lean = {k: v for k, v in FAIRSEQ_CFG.items() if k not in ("conv_pos", "conv_pos_groups", "audio_feat_dim")}
  tuned = _checkpoint(twin, {"_name": "av_hubert_seq2seq", "w2v_args": {"model": lean}, "decoder_layers": 1},
                      "encoder.w2v_model.", {"decoder.embed_tokens.weight": torch.zeros(5, 8)})
  torch.save(tuned, str(tmp_path / "tuned.pt"))
  module2, variables2 = af.convert(str(tmp_path / "tuned.pt"), str(tmp_path / "out2"), trust_pickle=True)
  assert module2.config == CFG
  assert rel_err(apply(variables2, x, np.zeros((B, T), bool)), ref) <= TOL
  # an older checkpoint: argparse Namespace "args" instead of "cfg"
  import argparse
  old = _checkpoint(twin, {})
  del old["cfg"]
  old["args"] = argparse.Namespace(**FAIRSEQ_CFG)
  torch.save(old, str(tmp_path / "old.pt"))
  assert af.convert(str(tmp_path / "old.pt"), str(tmp_path / "out_old"), trust_pickle=True)[0].config == CFG
  # a cfg the video path cannot model is refused by name
  torch.save(_checkpoint(twin, {**FAIRSEQ_CFG, "layer_norm_first": False}), str(tmp_path / "postln.pt"))
  with pytest.raises(CheckpointError, match="layer_norm_first=False"):
    af.convert(str(tmp_path / "postln.pt"), str(tmp_path / "out3"), trust_pickle=True)


def test_converter_omegaconf_cfg(twin, tmp_path):
  """fairseq pickles cfg as an omegaconf DictConfig: without omegaconf installed the error names the fix;
  with it (if importable here) the DictConfig is read."""
  pt = str(tmp_path / "dictconfig.pt")
  try:
    from omegaconf import OmegaConf
  except ImportError:
    OmegaConf = None
  if OmegaConf is not None:
    ckpt = _checkpoint(twin, {})
    ckpt["cfg"] = OmegaConf.create({"model": FAIRSEQ_CFG, "task": {"input_modality": "video"}})
    torch.save(ckpt, pt)
    module, _ = af.convert(pt, str(tmp_path / "out"), trust_pickle=True)
    assert module.config == CFG
    return
  fake = types.ModuleType("omegaconf")   # a stand-in class pickled under module omegaconf, then made unimportable

  class DictConfig(dict):
    pass
  DictConfig.__module__, DictConfig.__qualname__ = "omegaconf", "DictConfig"
  fake.DictConfig = DictConfig
  sys.modules["omegaconf"] = fake
  try:
    ckpt = _checkpoint(twin, {})
    ckpt["cfg"] = DictConfig(model=FAIRSEQ_CFG)
    torch.save(ckpt, pt)
  finally:
    del sys.modules["omegaconf"]
  with pytest.raises(CheckpointError, match="pip install omegaconf"):
    af.convert(pt, str(tmp_path / "out"), trust_pickle=True)


def test_large_param_count():
  """Large preset (eval_shape) = the public AV-HuBERT Large video-path tensors (the torch definition at Large
  size on the meta device: the checkpoint's key shapes, less mask_emb / final_proj / label_embs_concat)."""
  module = AVHubertVideo(avhubert_large())
  shapes = weights.abstract_params(module)     # {("params" | "batch_stats", ...): shape}
  ours_params = sum(int(np.prod(s)) for k, s in shapes.items() if k[0] == "params")
  ours_stats = sum(int(np.prod(s)) for k, s in shapes.items() if k[0] == "batch_stats")
  with torch.device("meta"):
    large = AVHubertVideoTorch()
  theirs_params = sum(p.numel() for p in large.parameters())
  theirs_stats = sum(b.numel() for n, b in large.named_buffers() if not n.endswith("num_batches_tracked"))
  print(f"AV-HuBERT Large video path: {ours_params:,} parameters + {ours_stats:,} BatchNorm statistics")
  assert (ours_params, ours_stats) == (theirs_params, theirs_stats)
  # by hand: ResNet-18 trunk 11,166,976 + stem 15,680 + BN / PReLU 128 + 64 + trunk PReLUs 3,840; video proj
  # 525,312; audio proj 107,520; layer_norm 4,096; post_extract_proj 2,098,176; pos_conv 1024*64*128 + 128 + 1024;
  # 24 layers x 12,596,224; encoder.layer_norm 2,048
  assert ours_params == 11_186_688 + 525_312 + 107_520 + 4_096 + 2_098_176 + 8_389_760 + 24 * 12_596_224 + 2_048
  assert ours_stats == 2 * (64 + 2 * 2 * (64 + 128 + 256 + 512) + 128 + 256 + 512)
  # key by key: our table's export shapes are the checkpoint's
  rows, expected, _ = weights.family_table(module)
  theirs_shapes = {k: tuple(v.shape) for k, v in large.state_dict().items()}
  for r in rows:
    per = expected[r.path][1:] if r.stacked else expected[r.path]
    theirs = tuple(jax.eval_shape(r.transform.to_theirs, jax.ShapeDtypeStruct(per, jnp.float32)).shape)
    for key in r.their_keys():
      assert theirs_shapes[key] == theirs, key


def test_remat_and_bf16_trace():
  """remat_policy and a bfloat16 compute dtype trace through a gradient (eval_shape: no compile)."""
  for c in (CFG.replace(remat_policy="full"), CFG.replace(dtype="bfloat16")):
    module = AVHubertVideo(c)
    shapes = weights.abstract_params(module)
    variables = traverse_util.unflatten_dict({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()})
    x = jax.ShapeDtypeStruct((B, T, HW, HW, 1), jnp.float32)
    fwd = lambda p, s, x: module.apply({"params": p, "batch_stats": s}, x)
    loss = lambda p, s, x: jnp.sum(fwd(p, s, x).astype(jnp.float32))
    out = jax.eval_shape(lambda p, s, x: (fwd(p, s, x), jax.grad(loss)(p, s, x)), variables["params"],
                         variables["batch_stats"], x)
    assert out[0].shape == (B, T, c.dim) and out[0].dtype == jnp.dtype(c.dtype)
    assert jax.tree_util.tree_structure(out[1]) == jax.tree_util.tree_structure(variables["params"])
