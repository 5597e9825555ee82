"""The paper-size code path at smoke size (configs/unitalking/wan22_5b.py:smoke) end to end on a CPU: UMT5 text
features, Wan2.2-structured video VAE latents and MMAudio-structured mel VAE latents (all tiny, random weights
written here in their released layouts: transformers UMT5, diffusers AutoencoderKLWan, codec.json +
mel_vae.safetensors), prepare -> train 2 steps from the latents -> sample (decode) -> export -> generate in
PyTorch alone (no JAX import): the same latents as JAX for the same noise (fp32, relative 1e-4) and the same media
within codec tolerance. The vocoder is a tiny random BigVGAN in NVIDIA's layout (data.vocoder_path; PyPI bigvgan
in PyTorch, shared.models.bigvgan in JAX: the same audio from the same latents) and the reference is fixed to
data.ref_len = 16 tokens (a tr2av generation from a short reference in both frameworks). Also: the PyTorch mel VAE
(unitalking_jax/torch_mel_vae.py) against ours, both ways of the codec switch's checks, the fixed reference
length rule, and tiny.py:vae_codecs' layout."""
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


VOCODER = dict(num_mels=80, upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8), upsample_initial_channel=16,
               resblock="1", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),), activation="snakebeta",
               snake_logscale=True, use_tanh_at_final=True, use_bias_at_final=True, sampling_rate=16000,
               hop_size=256, n_fft=1024, win_size=1024, fmin=0.0, fmax=8000.0, mel_log="ln")


def write_vocoder(root) -> str:
  """A tiny random BigVGAN (80 mels, x256 = the mel VAE's hop, natural-log mel as NVIDIA's: the codec's log10 mel
  is scaled by ln 10 on the way in) in NVIDIA's layout (config.json + bigvgan_generator.pt)."""
  from shared.models import bigvgan
  from shared.weights.bigvgan_family import save_bigvgan
  cfg = bigvgan.BigVGANConfig(**VOCODER)
  params = bigvgan.init_params(bigvgan.BigVGAN(cfg), jax.random.key(7))
  rng = np.random.default_rng(7)

  def leaf(path, x):   # weight norm gains ~ 1 / sqrt(fan-in) of the kernel; snake parameters off their init
    name, x = str(path[-1]), np.asarray(x)
    if "weight_g" in name:
      return (rng.uniform(0.5, 1.5, x.shape) * (0.03 if "conv_post" in str(path[0]) else 1.0)).astype(np.float32)
    if "alpha" in name or "beta" in name:
      return rng.normal(0, 0.3, x.shape).astype(np.float32)
    return x
  path = os.path.join(root, "bigvgan")
  save_bigvgan(jax.tree_util.tree_map_with_path(leaf, params), cfg, path)
  return path


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
  c.data.update(dict(video_codec_path=vpath, audio_codec_path=apath, text_tokenizer=tok, text_encoder=enc,
                     vocoder_path=write_vocoder(root)))
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
  assert idx["shapes"]["text"]["shape"] == [16, D] and idx["shapes"]["ref"]["shape"] == [16, 20]   # data.ref_len
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
  assert inputs["video"].shape == (1, 3, 2, 2, 48) and inputs["ref"].shape == (1, 16, 20)
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
  assert index["vocoder"] == ["bigvgan", "BigVGAN"] and index["_unitalking"]["ref_len"] == 16
  assert sorted(os.listdir(os.path.join(rdir, "vocoder"))) == ["bigvgan_generator.pt", "config.json"]
  rel = release.jax_codecs(release.Release.load(rdir))
  assert rel.codecs.audio.vocoder is not None
  ref_wav = np.random.default_rng(2).normal(0, 0.2, 3000).astype(np.float32)   # 6 tokens of 512 samples, 10 zero rows
  np.save(os.path.join(root, "ref.npy"), ref_wav)
  face = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  np.save(os.path.join(root, "noise.npy"), release.jax_noise(rel, 0))
  np.save(os.path.join(root, "face.npy"), face)
  enc = release.jax_text_encoder(rel)
  results = {}
  for task_name, kw in (("t2av", {}), ("ti2av", {"image": face}), ("tr2av", {"ref_audio": ref_wav})):
    t_, b = release.inputs(rel, "ni hao", text_encoder=enc, **kw)
    results[task_name] = (b, *release.jax_generate(rel, b, t_, seed=0))
  assert results["tr2av"][0]["ref"].shape == (1, 16, 20)
  assert np.all(results["tr2av"][0]["ref"][0, 6:] == 0) and np.all(np.abs(results["tr2av"][0]["ref"][0, :6]).max(1) > 0)
  np.save(os.path.join(root, "jax_audio_latents.npy"), results["t2av"][2][0])
  script = f"""
import json, sys
import numpy as np
from unitalking_jax.torch_pipeline import UniTalkingPipeline
pipe = UniTalkingPipeline.from_pretrained({rdir!r})
noise = np.load({os.path.join(root, "noise.npy")!r})
o = pipe("ni hao", noise=noise)
o.save({os.path.join(root, "torch.mp4")!r})
i = pipe("ni hao", image=np.load({os.path.join(root, "face.npy")!r}), noise=noise, griffin_lim=False)
r = pipe("ni hao", ref_audio=np.load({os.path.join(root, "ref.npy")!r}), noise=noise, griffin_lim=False)
from unitalking_jax import release
_, rb = release.inputs(pipe.release, "ni hao", ref_audio=np.load({os.path.join(root, "ref.npy")!r}),
                       text_encoder=pipe.text_encoder)
c = pipe.release.codecs
assert type(c.audio).__name__ == "TorchBigVGANAudio" and type(c.audio.vocoder).__module__ == "bigvgan.bigvgan"
np.savez({os.path.join(root, "torch.npz")!r}, v=o.video_latents, a=o.audio_latents, frames=o.frames, audio=o.audio,
         iv=i.video_latents, ia=i.audio_latents, rv=r.video_latents, ra=r.audio_latents, ref=rb["ref"],
         mel=c.vae_mel(o.audio_latents[0]),
         jax_lat_audio=c.decode_audio(np.load({os.path.join(root, "jax_audio_latents.npy")!r})))
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax"))))
"""
  p = _run_torch(script)
  assert json.loads(p.stdout.strip().splitlines()[-1]) == []     # PyTorch alone
  got = np.load(os.path.join(root, "torch.npz"))
  for name, (vk, ak) in (("t2av", ("v", "a")), ("ti2av", ("iv", "ia")), ("tr2av", ("rv", "ra"))):
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
  # the reference tokens: the same rule in both frameworks (their mel VAEs agree to ~1e-5), zero rows after 6
  ref_t, ref_j = got["ref"][0], results["tr2av"][0]["ref"][0]
  assert np.all(ref_t[6:] == 0) and np.abs(ref_t - ref_j).max() / np.abs(ref_j).max() < 1e-4
  # BigVGAN: NVIDIA's PyTorch package vs shared.models.bigvgan on the same (JAX) latents, through each side's
  # mel VAE decoder and the log10 -> ln scaling (measured: max abs ~1e-6 on audio of peak ~0.5)
  jax_audio = rel.codecs.decode_audio(results["t2av"][2][0])
  assert jax_audio.shape == got["jax_lat_audio"].shape == (24 * 256,)
  assert 0.01 < np.abs(jax_audio).max() < 0.99, np.abs(jax_audio).max()
  err = np.abs(jax_audio - got["jax_lat_audio"]).max()
  assert err < 1e-4 * np.abs(jax_audio).max(), err
  print(f"BigVGAN audio torch vs JAX: max abs {err:.2e}, peak {np.abs(jax_audio).max():.3f}")
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
  sizes |= {("data", k) for k in ("frames", "frame_size", "text_len", "text_encoder_dtype", "video_codec_chunk",
                                   "ref_len")}
  assert differ <= sizes, differ - sizes
  assert data_lib.latent_layout(wan22_5b.get_config())["video"] == (31, 44, 44, 48)
  assert data_lib.latent_layout(wan22_5b.get_config())["ref"] == (257, 20)   # the paper's fixed reference length
  # the paper's stage 1 (audio branch alone) of either size: only the stage keys differ
  for size in ("", "smoke"):
    st1 = wan22_5b.get_config(f"{size},stage1" if size else "stage1")
    assert st1.stage.number == 1 and tuple(st1.stage.trainable) == ("blocks/audio/", "audio_")
    assert st1.model.to_dict() == wan22_5b.get_config(size).model.to_dict()
  with pytest.raises(ConfigError, match="stage1"):
    wan22_5b.get_config("smoke,stage3")


def test_reference_length_rule_and_vocoder_checks(smoke, tmp_path):
  """data.ref_len = N: a long reference gives N tokens (its first N x 512 samples encoded), a short one its own
  ceil(S / 512) tokens then zero rows; training refs are the clip's permuted latents then zeros; ref_len 0 keeps
  the clip's own count. A vocoder whose mel differs from the codec's, or one with the PCA codecs, is refused."""
  from unitalking_jax.codecs import fixed_length
  _, c = smoke
  c = c.copy_and_resolve_references()
  codecs = data_lib.codecs(c)
  a = codecs.audio
  rng = np.random.default_rng(5)
  long, short = rng.normal(0, 0.2, 3 * 16000).astype(np.float32), rng.normal(0, 0.2, 3000).astype(np.float32)
  t_long, t_short = data_lib.reference_tokens(codecs, c, long), data_lib.reference_tokens(codecs, c, short)
  assert t_long.shape == t_short.shape == (16, 20)
  np.testing.assert_allclose(t_long, a.encode_audio(long[:16 * 512], 16), rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(t_long).max(1) > 0)
  np.testing.assert_allclose(t_short[:6], a.encode_audio(np.pad(short, (0, 72)), 6), rtol=1e-6, atol=1e-6)
  assert np.all(np.abs(t_short[:6]).max(1) > 0) and np.all(t_short[6:] == 0)
  np.testing.assert_array_equal(fixed_length(np.arange(6.0).reshape(3, 2), 2), [[0, 1], [2, 3]])
  src = data_lib.source(c, "train")
  ex = data_lib.prepare(src[0], c, 0)
  assert ex["ref"].shape == (16, 20) and np.all(ex["ref"][12:] == 0)
  np.testing.assert_allclose(np.sort(ex["ref"][:12], 0), np.sort(ex["audio"], 0))   # its own latents, permuted
  c0 = c.copy_and_resolve_references()
  c0.data.ref_len = 0
  assert data_lib.prepare(src[0], c0, 0)["ref"].shape == (12, 20) == data_lib.latent_layout(c0)["ref"]
  assert data_lib.reference_tokens(codecs, c0, short).shape == (12, 20)
  # the vocoder's mel must be the codec's; a vocoder needs the mel VAE
  bad_voc = str(tmp_path / "voc")
  import shutil
  shutil.copytree(c.data.vocoder_path, bad_voc)
  h = json.load(open(os.path.join(bad_voc, "config.json")))
  json.dump({**h, "sampling_rate": 22050, "fmax": None}, open(os.path.join(bad_voc, "config.json"), "w"))
  bad = c.copy_and_resolve_references()
  bad.data.vocoder_path = bad_voc
  with pytest.raises(ConfigError, match=r"sampling_rate 22050 vs sample_rate 16000.*fmax 11025.0 vs fmax 8000"):
    data_lib.codecs(bad)
  t = tiny.get_config()
  t.data.vocoder_path = bad_voc
  with pytest.raises(ConfigError, match="data.vocoder_path"):
    data_lib.codecs(t)


def test_torch_vocoder_rules_match_and_missing_package_is_named(smoke, monkeypatch):
  """The vocoder rules (shared.data.features, JAX-free: the PyTorch pipeline and av_codec both call them) refuse a
  mel mismatch naming both directories; without PyPI bigvgan, loading a BigVGAN release names the pip command."""
  from shared.data import features
  from unitalking_jax import torch_pipeline as tp
  _, c = smoke
  assert features.vocoder_mel_scale("ln", "ln") == features.vocoder_mel_scale(None, "log10") == 1.0
  h = json.load(open(os.path.join(c.data.vocoder_path, "config.json")))
  mel = features.MMAUDIO_16K
  features.check_vocoder_mel(h, mel, "VOC", "CODEC")
  with pytest.raises(ConfigError, match=r"VOC .* CODEC.*hop_size 512 vs hop 256"):
    features.check_vocoder_mel({**h, "hop_size": 512}, mel, "VOC", "CODEC")
  monkeypatch.setitem(sys.modules, "bigvgan", None)
  monkeypatch.setitem(sys.modules, "bigvgan.bigvgan", None)
  with pytest.raises(ConfigError, match=r"pip install --no-deps bigvgan==2\.4\.1"):
    tp.load_bigvgan(c.data.vocoder_path)
