"""HiFi-GAN vocoder vs transformers SpeechT5HifiGan (fp32, 1e-5 relative): import, export, weight-normed and
original-naming state_dicts, the full-size AudioLDM vocoder's name table, bad checkpoints."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

torch = pytest.importorskip("torch")

from shared.errors import CheckpointError  # noqa: E402
from shared.models.hifigan import AUDIOLDM_VOCODER, HifiGanConfig  # noqa: E402
from shared.weights import abstract_params, family_for_config, load_pretrained, save_pretrained  # noqa: E402
from shared.weights import hifigan_family as fam  # noqa: E402

RTOL = 1e-5
CONFIGS = {
    # 2 stages, k - u even (output T * 6), two resblock kernels, AudioLDM's normalize_before False
    "plain": dict(model_in_dim=8, upsample_initial_channel=16, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 5],
                  resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]], normalize_before=False),
    # 3 stages, odd channels (24 -> 12 -> 6 -> 3), k - u odd in stage 2 (output not T * 12), unequal dilation
    # lists, another slope, normalize_before True with non-trivial mean / scale
    "normalized": dict(model_in_dim=8, upsample_initial_channel=24, upsample_rates=[3, 2, 2],
                       upsample_kernel_sizes=[7, 5, 4], resblock_kernel_sizes=[3, 7, 5],
                       resblock_dilation_sizes=[[1, 3, 5], [1, 2], [2]], leaky_relu_slope=0.2, normalize_before=True),
}


def rel_err(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return float(np.abs(a - b).max() / np.abs(b).max())


def build_hf(kw, seed=0):
  from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
  torch.manual_seed(seed)
  model = SpeechT5HifiGan(SpeechT5HifiGanConfig(**kw))
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():   # weights of about unit gain (the 0.01 init gives a near-silent output)
    for name, p in model.named_parameters():
      if p.ndim == 3:
        fan_in = p.shape[0] * p.shape[2] if name.startswith("upsampler") else p.shape[1] * p.shape[2]
        p.copy_(torch.randn(p.shape, generator=g) * (0.15 if name.startswith("conv_post") else 1.5) / fan_in ** 0.5)
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    if kw.get("normalize_before", True):
      model.mean.copy_(-4.0 + 0.5 * torch.randn(model.mean.shape, generator=g))   # about a log-mel's statistics
      model.scale.copy_(1.5 + torch.rand(model.scale.shape, generator=g))
  return model.eval()


def _mel(n_mels, frames=11, batch=2, seed=0):
  return np.random.default_rng(seed).normal(-4.0, 2.0, (batch, frames, n_mels)).astype(np.float32)


def _torch_forward(model, mel):
  with torch.no_grad():
    return model(torch.from_numpy(mel)).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """{name: (torch model, saved dir, module, params, jitted forward)}."""
  out = {}
  for name, kw in CONFIGS.items():
    model = build_hf(kw)
    d = tmp_path_factory.mktemp("hifigan_" + name)
    model.save_pretrained(d)
    module, params = load_pretrained(str(d))
    out[name] = (model, str(d), module, params, jax.jit(lambda p, x, module=module: module.apply({"params": p}, x)))
  return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_matches_transformers(name, models):
  model, _, module, params, fwd = models[name]
  assert module.config.normalize_before == CONFIGS[name]["normalize_before"]
  mel = _mel(8)
  ref = _torch_forward(model, mel)
  out = fwd(params, jnp.asarray(mel))
  assert out.dtype == jnp.float32 and out.shape == ref.shape == (2, module.config.num_samples(11))
  assert 0.05 < np.abs(ref).max() < 0.99, np.abs(ref).max()   # neither silent nor saturated
  assert rel_err(out, ref) < RTOL
  if name == "normalized":   # mean/scale matter; k - u odd: more than T * 12 samples, crop=True cuts to T * 12
    assert module.config.num_samples(11) == 11 * 12 + 2
    assert np.abs(np.asarray(params["mean"])).min() > 1.0
    cut = jax.jit(lambda p, x: module.apply({"params": p}, x, crop=True))(params, jnp.asarray(mel))
    assert cut.shape == (2, 11 * 12) and rel_err(cut, ref[:, :11 * 12]) < RTOL
  else:   # an unbatched mel gives an unbatched waveform (as torch)
    assert out.shape[1] == 11 * module.config.upsample_factor
    one = jax.jit(lambda p, x: module.apply({"params": p}, x))(params, jnp.asarray(mel[1]))
    assert one.shape == ref[1].shape and rel_err(one, ref[1]) < RTOL


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_transformers(name, models, tmp_path):
  from transformers import SpeechT5HifiGan
  model, src, module, params, fwd = models[name]
  save_pretrained(module, params, str(tmp_path))
  original = json.loads(open(f"{src}/config.json").read())
  written = json.loads((tmp_path / "config.json").read_text())
  assert {k: v for k, v in written.items() if k != "transformers_version"} == {
      k: v for k, v in original.items() if k != "transformers_version"}
  back = SpeechT5HifiGan.from_pretrained(str(tmp_path)).eval()
  theirs = model.state_dict()
  assert set(back.state_dict()) == set(theirs)
  for key, value in back.state_dict().items():
    np.testing.assert_array_equal(value.numpy(), theirs[key].numpy(), err_msg=key)
  mel = _mel(8, frames=9, seed=1)
  assert rel_err(fwd(params, jnp.asarray(mel)), _torch_forward(back, mel)) < RTOL


def test_weight_normed_and_original_naming_import(models):
  """apply_weight_norm()'s parametrizations, torch.nn.utils.weight_norm's weight_g / weight_v, the original
  HiFi-GAN `ups.*` naming under a prefix without mean / scale: all import to the plain model's params."""
  _, src, module, params, _ = models["plain"]
  cfg = module.config
  model = build_hf(CONFIGS["plain"])
  model.apply_weight_norm()
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  assert "conv_pre.parametrizations.weight.original0" in sd and "conv_pre.weight" not in sd
  legacy = {"first_stage_model.vocoder." + k.replace("upsampler.", "ups.").replace(
      ".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v"): v
      for k, v in sd.items() if k not in ("mean", "scale")}
  legacy["first_stage_model.other.weight"] = np.zeros(3, np.float32)   # outside the prefix: not read
  for got in (fam.import_state_dict(sd, cfg),
              fam.import_state_dict(legacy, cfg, prefix="first_stage_model.vocoder.")):
    got, want = traverse_util.flatten_dict(got), traverse_util.flatten_dict(params)
    assert set(got) == set(want)
    for path, leaf in want.items():
      np.testing.assert_allclose(np.asarray(got[path]), np.asarray(leaf), rtol=1e-6, atol=1e-7, err_msg=str(path))
  bad = {k: v for k, v in sd.items() if k != "upsampler.1.parametrizations.weight.original1"}
  with pytest.raises(CheckpointError, match="upsampler.1"):
    fam.import_state_dict(bad, cfg)


def test_audioldm_vocoder_table_vs_transformers():
  """Full-size AudioLDM vocoder: our name table and shapes == SpeechT5HifiGan's state_dict (meta device)."""
  from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig
  hf_cfg = SpeechT5HifiGanConfig(model_in_dim=64, upsample_rates=[5, 4, 2, 2, 2],
                                 upsample_kernel_sizes=[16, 16, 8, 4, 4], upsample_initial_channel=1024,
                                 normalize_before=False)
  with torch.device("meta"):
    ref = SpeechT5HifiGan(hf_cfg)
  theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  cfg_dict = json.loads(hf_cfg.to_json_string())
  family = family_for_config(cfg_dict)
  assert family.name == "hifigan"
  module = family.from_config(cfg_dict)
  assert module.config == AUDIOLDM_VOCODER and AUDIOLDM_VOCODER.upsample_factor == 160
  assert AUDIOLDM_VOCODER.num_samples(1024) == 1024 * 160 + 32   # 16 - 5 is odd: stage 1 gives 5 T + 1
  shapes = abstract_params(module)
  rows = family.rows(module)
  assert sorted(r.theirs for r in rows) == sorted(theirs)
  assert {r.path for r in rows} == set(shapes)
  for r in rows:
    got = jax.eval_shape(r.transform.to_theirs, jax.ShapeDtypeStruct(shapes[r.path], jnp.float32)).shape
    assert tuple(got) == theirs[r.theirs], r.theirs
  n_params = sum(int(np.prod(s)) for p, s in shapes.items() if p not in (("mean",), ("scale",)))
  n_torch = sum(p.numel() for p in ref.parameters())
  print(f"AudioLDM vocoder: {n_params / 1e6:.2f}M parameters (+{2 * 64} mean/scale buffer values)")
  assert n_params == n_torch and 55.2e6 < n_params < 55.35e6, n_params


def test_bad_checkpoint_names_the_key(models, tmp_path):
  from safetensors.numpy import load_file, save_file
  _, src, module, _, _ = models["plain"]
  tensors = load_file(f"{src}/model.safetensors")
  config = open(f"{src}/config.json").read()
  cases = {
      "missing": ({k: v for k, v in tensors.items() if k != "resblocks.1.convs2.0.weight"},
                  r"missing keys.*resblocks\.1\.convs2\.0\.weight"),
      "shape": ({**tensors, "upsampler.1.weight": np.zeros((8, 4, 6), np.float32)},
                r"shape mismatches.*upsampler\.1\.weight"),
      "unexpected": ({**tensors, "conv_mid.weight": np.zeros(3, np.float32)}, r"unexpected keys.*conv_mid\.weight"),
  }
  for case, (sd, pattern) in cases.items():
    d = tmp_path / case
    d.mkdir()
    (d / "config.json").write_text(config)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=pattern):
      load_pretrained(str(d))
  with pytest.raises(CheckpointError, match="conv_post.bias"):
    fam.import_state_dict({k: v for k, v in tensors.items() if k != "conv_post.bias"}, module.config)
  with pytest.raises(Exception, match="model_in_dim|expects"):
    module.apply({"params": models["plain"][3]}, jnp.zeros((1, 5, 7)))
  with pytest.raises(Exception, match="odd"):
    HifiGanConfig(resblock_kernel_sizes=(3, 4, 11))
