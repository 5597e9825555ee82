"""The paper-size code path at smoke size (configs/unitalking/wan22_5b.py:smoke) end to end on a CPU: UMT5 text
features, Wan2.2-structured video VAE latents and MMAudio-structured mel VAE latents (all tiny, random weights
written here in their released layouts: transformers UMT5, diffusers AutoencoderKLWan, codec.json +
mel_vae.safetensors), prepare -> train 2 steps from the latents -> sample (decode) -> export -> generate in
PyTorch alone (no JAX import): the same latents as JAX for the same noise (fp32, relative 1e-4) and the same media
within codec tolerance. Also: the PyTorch mel VAE (unitalking_jax/torch_mel_vae.py) against ours, both ways of
the codec switch's checks, and tiny.py:vae_codecs' layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.unitalking import tiny, wan22_5b
from shared.errors import ConfigError
from shared.models import av_codec, mmaudio_vae, wan_vae
from unitalking_jax import data as data_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
D = 32   # the smoke text_dim (tiny UMT5 d_model)


def random_params(abstract, seed: int = 0):
  """Random params of the abstract init's shapes (no init compile): kernels N(0, 1 / fan_in), 1-d leaves ones
  (norm gains) or small noise (biases)."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    name = str(path[-1])
    if len(x.shape) >= 2:
      return jnp.asarray(rng.normal(0, 1 / np.sqrt(np.prod(x.shape[:-1])), x.shape), jnp.float32)
    if "gamma" in name or "scale" in name:
      return jnp.ones(x.shape, jnp.float32)
    return jnp.asarray(rng.normal(0, 0.02, x.shape), jnp.float32)
  return jax.tree_util.tree_map_with_path(leaf, nn.meta.unbox(abstract)["params"])


def write_codecs(root) -> tuple[str, str]:
  """A tiny Wan2.2-structured VAE (residual, 2x2 patchify, 4 levels: stride 4x16x16, z 48) in diffusers layout
  and a tiny MMAudio-16k-structured mel VAE codec dir, random weights and latent statistics."""
  from shared.weights.wan_vae_family import save_wan_vae
  rng = np.random.default_rng(0)
  wcfg = wan_vae.WanVAEConfig(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                              temporal_downsample=(False, True, True), is_residual=True, in_channels=12,
                              out_channels=12, patch_size=2, scale_factor_spatial=16,
                              latents_mean=tuple(rng.normal(0, 0.1, 48).tolist()),
                              latents_std=tuple(rng.uniform(0.5, 1.5, 48).tolist()))
  wan = wan_vae.AutoencoderKLWan(wcfg)
  params = random_params(jax.eval_shape(wan.init, jax.random.key(0), jnp.zeros((1, 5, 32, 32, 12), jnp.float32)))
  vdir = os.path.join(root, "wan", "video_vae")
  save_wan_vae(wan, jax.device_get(params), vdir)
  mcfg = mmaudio_vae.MMAudioVAEConfig(data_dim=80, embed_dim=20, hidden_dim=16)   # MMAudio 16k's layout, tiny width
  vae = mmaudio_vae.MMAudioVAE(mcfg)
  mp = random_params(jax.eval_shape(vae.init, jax.random.key(1), jnp.zeros((1, 8, 80), jnp.float32)), seed=1)
  mp["encoder"]["learnable_gain"] = jnp.float32(0.3)
  mp["decoder"]["learnable_gain"] = jnp.float32(-0.2)
  stats = av_codec.LatentStats(rng.normal(0, 0.1, 20), rng.uniform(0.5, 1.5, 20))
  adir = os.path.join(root, "mel", "codec")
  av_codec.save_mel_vae_audio_codec(adir, av_codec.MelVAEAudioCodec(vae, mp, stats=stats))
  return os.path.dirname(vdir), os.path.dirname(adir)    # workdir-style paths (the loaders find the subdirs)


def write_umt5(root, chars) -> tuple[str, str]:
  """A character-level tokenizer.json and a tiny random transformers UMT5EncoderModel (d_model 32)."""
  import torch
  from shared.torch_compat import import_torchvision
  import_torchvision()   # before transformers: a CUDA-built torchvision on a CPU torch breaks its imports
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
  from transformers import UMT5Config, UMT5EncoderModel
  vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + list(dict.fromkeys(chars)))}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), "isolated")
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  tpath, epath = os.path.join(root, "tokenizer.json"), os.path.join(root, "text_encoder")
  tok.save(tpath)
  torch.manual_seed(0)
  UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=D, d_kv=8, num_heads=4, d_ff=48, num_layers=1,
                              dropout_rate=0.0)).save_pretrained(epath)
  return tpath, epath


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("smoke"))
  c = wan22_5b.get_config("smoke")
  vpath, apath = write_codecs(root)
  tok, enc = write_umt5(root, list(data_lib.source(c, "train").world.chars) + list("abcdefghijklmnopqrstuvwxyz "))
  c.data.update(dict(video_codec_path=vpath, audio_codec_path=apath, text_tokenizer=tok, text_encoder=enc))
  return root, c


def _run_torch(script: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": REPO}
  p = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def test_smoke_prepare_train_sample_export_generate_in_torch(smoke):
  """prepare -> train 2 steps from the latents -> sample -> export -> PyTorch generate, at smoke size."""
  from shared import mesh as mesh_lib
  from shared import train as train_lib
  from shared.checkpoint import restore
  from unitalking_jax import latents as lat
  from unitalking_jax import prepare, release
  from unitalking_jax.export import write_release
  from unitalking_jax.model import model_from_config
  from unitalking_jax.sample import build_inputs
  from unitalking_jax.samples import sync_of, write_samples
  from unitalking_jax.task import make_task
  root, c = smoke
  c = c.copy_and_resolve_references()
  # --- prepare: the codecs' identity (kinds, files' sha256) is recorded; latents == the on-the-fly examples
  out = os.path.join(root, "latents")
  idx = prepare.prepare(c, "synthcue", "", out, limit=4, clips_per_shard=2, progress=lambda s: None)["index"]
  assert idx["records"] == 4 and idx["codec_config"]["video_codec"] == "wan_vae"
  ident = idx["codec"]
  assert ident["video"]["codec"] == "wan_vae" and ident["audio"]["codec"] == "mel_vae"
  assert set(ident["video"]["files"]) == {"config.json", "diffusion_pytorch_model.safetensors"}
  assert set(ident["audio"]["files"]) == {"codec.json", "mel_vae.safetensors"}
  assert idx["shapes"]["video"]["shape"] == [3, 2, 2, 48] and idx["shapes"]["audio"]["shape"] == [12, 20]
  assert idx["shapes"]["text"]["shape"] == [16, D] and idx["shapes"]["ref"]["shape"] == [12, 20]
  c.data.latents = out
  src, lsrc = data_lib.source(c, "train"), lat.LatentSource(out, c)
  for i in (0, 3):
    want = data_lib.prepare(src[i], c, int(c.trainer.seed))
    got = lsrc[i]
    for k in data_lib.KEYS:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6, err_msg=k)
  # --- train 2 steps from the latents (no codec in the loop)
  c.trainer.update(dict(log_every=1, sample_every=0))
  c.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  c.validation.clips = 2
  task = make_task(c)
  work = os.path.join(root, "work")
  result = train_lib.train(c, task, work, mesh=mesh_lib.make_mesh(c.trainer.mesh, devices=jax.devices()[:1]))
  assert result.step == 2
  losses = [json.loads(l)["loss"] for l in open(os.path.join(work, "metrics.jsonl")) if '"loss"' in l]
  assert len(losses) == 2 and all(np.isfinite(losses))
  # --- sample (the restored checkpoint, as sample.py / export.py read it): decode through the VAEs
  r = restore(work, model_fn=model_from_config)
  cfg = r.config
  inputs = build_inputs(cfg, "ni hao")
  assert inputs["video"].shape == (1, 3, 2, 2, 48) and inputs["ref"].shape == (1, 12, 20)
  v, a = make_task(cfg, r.model).generate(r.params, inputs, "t2av", seed=0)
  paths = write_samples(os.path.join(root, "samples"), cfg, np.asarray(v), np.asarray(a), ["t2av_0"])
  assert os.path.getsize(paths[0]) > 0
  from shared.data.media import read_wav
  wav, _ = read_wav(os.path.join(root, "samples", "t2av_0.wav"), sample_rate=16000)
  assert wav.shape[0] == 9 * 640
  score = sync_of(cfg, np.asarray(v), np.asarray(a))
  assert set(score) == {"sync", "sync_shuffled", "sync_margin"}
  # --- export: vae/ (diffusers AutoencoderKLWan), audio_vae/ (mel VAE), vocoder/, text path, scheduler
  rdir = os.path.join(root, "R")
  write_release(r.model, r.params, cfg, rdir)
  index = json.load(open(os.path.join(rdir, "model_index.json")))
  assert index["vae"] == ["diffusers", "AutoencoderKLWan"] and index["_unitalking"]["codec"] == "vae"
  assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
  rel = release.jax_codecs(release.Release.load(rdir))
  face = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  np.save(os.path.join(root, "noise.npy"), release.jax_noise(rel, 0))
  np.save(os.path.join(root, "face.npy"), face)
  enc = release.jax_text_encoder(rel)
  results = {}
  for task_name, kw in (("t2av", {}), ("ti2av", {"image": face})):
    t_, b = release.inputs(rel, "ni hao", text_encoder=enc, **kw)
    results[task_name] = (b, *release.jax_generate(rel, b, t_, seed=0))
  script = f"""
import json, sys
import numpy as np
from unitalking_jax.torch_pipeline import UniTalkingPipeline
pipe = UniTalkingPipeline.from_pretrained({rdir!r})
noise = np.load({os.path.join(root, "noise.npy")!r})
o = pipe("ni hao", noise=noise)
o.save({os.path.join(root, "torch.mp4")!r})
i = pipe("ni hao", image=np.load({os.path.join(root, "face.npy")!r}), noise=noise, griffin_lim=False)
c = pipe.release.codecs
np.savez({os.path.join(root, "torch.npz")!r}, v=o.video_latents, a=o.audio_latents, frames=o.frames, audio=o.audio,
         iv=i.video_latents, ia=i.audio_latents, mel=c.vae_mel(o.audio_latents[0]))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax"))))
"""
  p = _run_torch(script)
  assert json.loads(p.stdout.strip().splitlines()[-1]) == []     # PyTorch alone
  got = np.load(os.path.join(root, "torch.npz"))
  for name, (vk, ak) in (("t2av", ("v", "a")), ("ti2av", ("iv", "ia"))):
    b, jv, ja = results[name]
    for ours, theirs in ((jv, got[vk]), (ja, got[ak])):
      rel_err = np.abs(ours - theirs).max() / np.abs(ours).max()
      assert rel_err < 1e-4, (name, rel_err)
  b, _, _ = results["ti2av"]
  np.testing.assert_allclose(got["iv"][:, 0], b["video"][:, 0], atol=1e-5)   # the first latent frame kept
  # media: PyTorch's decoders (diffusers AutoencoderKLWan, torch mel VAE) vs ours on the same latents
  frames, audio = rel.decode(results["t2av"][1][0], results["t2av"][2][0])
  assert frames.shape == got["frames"].shape == (9, 32, 32, 3) and audio.shape == got["audio"].shape == (9 * 640,)
  assert np.abs(frames.astype(int) - got["frames"].astype(int)).max() <= 2
  mel = rel.codecs.vae_mel(results["t2av"][2][0])
  np.testing.assert_allclose(got["mel"], mel, rtol=1e-3, atol=1e-3)
  assert os.path.getsize(os.path.join(root, "torch.mp4")) > 0


def test_torch_mel_vae_matches_ours_both_ways(smoke):
  """unitalking_jax.torch_mel_vae.MelVAE (PyTorch, MMAudio's layout) on the codec dir == shared.models.av_codec's
  mel VAE codec: encode (audio -> normalised latents) and decode (latents -> log-mel)."""
  from unitalking_jax.torch_mel_vae import MelVAE
  root, c = smoke
  _, adir = data_lib.vae_codec_dirs(c)
  ours = av_codec.load_mel_vae_audio_codec(adir)
  theirs = MelVAE.from_pretrained(adir)
  assert theirs.latent_rate == ours.latent_rate == 31.25 and theirs.latent_channels == 20
  audio = np.random.default_rng(0).normal(0, 0.2, 9 * 640).astype(np.float32)
  z_ours, z_theirs = ours.encode_audio(audio, 12), theirs.encode_audio(audio, 12)
  assert z_ours.shape == z_theirs.shape == (12, 20)
  assert np.abs(z_ours - z_theirs).max() / np.abs(z_ours).max() < 1e-4
  mel_ours, mel_theirs = ours.log_mel(z_ours), theirs.log_mel(z_ours)
  assert mel_ours.shape == (24, 80)
  assert np.abs(mel_ours - mel_theirs).max() / np.abs(mel_ours).max() < 1e-4


def test_codec_switch_checks_and_layouts(smoke):
  """The VAEs are the truth for channels / stride (ConfigError naming the key), mixed or unknown codecs and
  clip lengths the Wan VAE cannot encode are refused; tiny.py:vae_codecs' layout; wan22_5b vs :smoke differ only
  in sizes."""
  _, c = smoke
  bad = c.copy_and_resolve_references()
  bad.data.video_pca = 24
  with pytest.raises(ConfigError, match=r"data.video_pca = 24: the Wan VAE.s z_dim .* is 48"):
    data_lib.codecs(bad)
  bad = c.copy_and_resolve_references()
  bad.data.pixel_factor = 8
  with pytest.raises(ConfigError, match=r"data.pixel_factor = 8: the Wan VAE.s spatial stride .* is 16"):
    data_lib.codecs(bad)
  bad = c.copy_and_resolve_references()
  bad.data.audio_codec = "pca"
  with pytest.raises(ConfigError, match="mixing"):
    data_lib.codec_kind(bad)
  bad.data.audio_codec = "bigvgan"
  with pytest.raises(ConfigError, match="data.audio_codec"):
    data_lib.codec_kind(bad)
  bad = c.copy_and_resolve_references()
  bad.data.frames = 8
  with pytest.raises(ConfigError, match="data.frames = 8"):
    data_lib.latent_layout(bad)
  bad = c.copy_and_resolve_references()
  bad.data.video_codec_path = "/nonexistent"
  with pytest.raises(ConfigError, match="data.video_codec_path"):
    data_lib.codecs(bad)
  # tiny.py:vae_codecs: the trained tiny codecs' layout; the model follows data.video_pca / audio_pca
  t = tiny.get_config("vae_codecs")
  lay = data_lib.latent_layout(t)
  assert lay["video"] == (9, 4, 4, 8) and lay["audio"] == (42, 20) and lay["ref"] == (42, 20)
  assert t.model.video.in_channels == t.model.video.out_channels == 8 and t.model.ref_dim == 20
  assert t.model.audio_time_scale == pytest.approx(lay["audio_time_scale"]) == pytest.approx(0.2)
  t.data.audio_pca = 12
  assert t.model.audio_channels == 12 and t.model.ref_dim == 12
  assert data_lib.latent_layout(tiny.get_config())["ref"] == (32, 64)     # the PCA default as before
  with pytest.raises(ConfigError, match="vae_codecs"):
    tiny.get_config("vae")
  # the full config differs from :smoke in sizes and paths only
  from flax import traverse_util
  full, sm = (traverse_util.flatten_dict(wan22_5b.get_config(a).to_dict()) for a in ("", "smoke"))
  assert full.keys() == sm.keys()
  differ = {k for k in full if full[k] != sm[k]}
  sizes = {("model", "video", k) for k in ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim",
                                          "freq_dim", "text_dim", "dtype", "remat_policy")}
  sizes |= {("model", "audio_ffn_dim"), ("trainer", "batch_size"), ("trainer", "total_steps"), ("trainer", "remat"),
            ("trainer", "precision", "compute_dtype"), ("sampling", "steps")}
  sizes |= {("data", k) for k in ("frames", "frame_size", "text_len", "text_encoder_dtype", "video_codec_chunk")}
  assert differ <= sizes, differ - sizes
  assert data_lib.latent_layout(wan22_5b.get_config())["video"] == (31, 44, 44, 48)
