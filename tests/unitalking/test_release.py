"""The release generates: a micro UniTalking trained a few steps, exported by the CLI as a pipeline directory,
generates in PyTorch alone (a subprocess that never imports JAX) the same latents as JAX for the same initial
noise (fp32, relative 1e-4) and the same media within the codec's tolerance, for all four tasks;
`python -m unitalking_jax.sample --release R` generates the same clip in JAX; a UMT5-text release sampled with
UniPC matches too; bf16 releases; missing components and wrong task inputs are named."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tests.xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = "ma ba luo"
CASES = {"t2av": {}, "ti2av": {"image": "face.png"}, "tv2a": {"video": "clip.mp4"}, "tr2av": {"ref_audio": "voice.wav"}}
TIMES: dict = {}


def _run(*args, script: str | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
  cmd = [sys.executable, "-c", script] if script else [sys.executable, "-m", *args]
  p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert p.returncode == 0, p.stderr[-4000:]
  return p


@pytest.fixture(scope="module")
def rel_dir(tmp_path_factory):
  """A workdir trained 3 steps (the tiny config shrunk as tests/unitalking/test_train.py does), exported by the
  CLI; media inputs for the tasks; JAX's initial noise per task (seed i)."""
  from shared import mesh as mesh_lib
  from shared import train as train_lib
  from shared.data.media import write_mp4, write_wav
  from tests.unitalking.test_train import small_config
  from unitalking_jax import data as data_lib
  from unitalking_jax.task import make_task
  d = tmp_path_factory.mktemp("release")
  cfg = small_config()
  cfg.trainer.total_steps, cfg.trainer.log_every, cfg.sampling.steps = 3, 3, 3
  t0 = time.perf_counter()
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
  train_lib.train(cfg, make_task(cfg), str(d / "wd"), mesh=mesh)
  TIMES["train"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  _run("unitalking_jax.export", "--workdir", str(d / "wd"), "--out", str(d / "R"))
  TIMES["export"] = time.perf_counter() - t0
  clip = data_lib.source(cfg, "test")[3]
  frames = data_lib.clip_video(clip, cfg)      # face crops, as users give them
  from PIL import Image
  Image.fromarray(frames[0]).save(d / "face.png")
  write_mp4(d / "clip.mp4", frames, fps=25)
  write_wav(d / "voice.wav", clip["audio"][:cfg.data.frames * 640])
  from unitalking_jax import release
  rel = release.Release.load(str(d / "R"))
  for i, task in enumerate(CASES):
    np.save(d / f"noise_{task}.npy", release.jax_noise(rel, i))
  return d


def test_layout_matches_the_training_codecs_and_diffusers_scheduler(rel_dir):
  from diffusers import FlowMatchEulerDiscreteScheduler
  from shared.diffusion.samplers import euler_plan
  from shared.text.pinyin import pinyin_vocab
  from unitalking_jax import data as data_lib
  from unitalking_jax import release
  from unitalking_jax.torch_model import UniTalkingTorch
  r = rel_dir / "R"
  index = json.loads((r / "model_index.json").read_text())
  assert index["_class_name"] == "UniTalkingPipeline" and index["scheduler"][1] == "FlowMatchEulerDiscreteScheduler"
  for comp in ("transformer", "vae", "audio_vae", "vocoder", "tokenizer", "scheduler"):
    assert (r / comp).is_dir(), comp
  rel = release.Release.load(str(r))
  cfg = json.loads((r / "transformer" / "unitalking_config.json").read_text())
  import ml_collections
  c = data_lib.codecs(ml_collections.ConfigDict(cfg))    # the codec the model was trained with (refitted)
  np.testing.assert_array_equal(rel.pca_video.components, c.pca_video.components)
  np.testing.assert_array_equal(rel.pca_video.scale, c.pca_video.scale)
  np.testing.assert_array_equal(rel.pca_audio.mean, c.pca_audio.mean)
  assert rel.pca_audio.scale == pytest.approx(float(c.pca_audio.scale)) and rel.mel == c.mel
  assert rel.vocab == pinyin_vocab().tokens and rel.latent_shapes() == ((1, 8, 4, 4, 24), (1, 32, 16))
  s = json.loads((r / "scheduler" / "scheduler_config.json").read_text())
  assert (s["_sampling"]["num_inference_steps"], s["_sampling"]["guidance_scale"], s["shift"]) == (3, 5.0, 3.0)
  sched = FlowMatchEulerDiscreteScheduler.from_pretrained(str(r / "scheduler"))
  sched.set_timesteps(3)
  np.testing.assert_allclose(sched.timesteps.numpy(), euler_plan(3, 3.0).timesteps, rtol=1e-6)
  UniTalkingTorch.from_export(str(r / "transformer"))   # the pre-release export layout still loads as it did


def test_fixed_reference_length_pca_release(rel_dir, tmp_path):
  """data.ref_len = N on the PCA codecs: the release records it ("ref_len", "ref_shape" [N, 4 Ca]) and a user's
  voice is read at its own length: a long one gives N tokens (its first N x 640 samples), a short one ceil(S / 640)
  tokens then zero rows (release.inputs, what both pipelines call); ref_len 0 keeps the clip's T frames."""
  import ml_collections
  from types import SimpleNamespace
  from unitalking_jax import data as data_lib
  from unitalking_jax import release
  r = tmp_path / "R"
  shutil.copytree(rel_dir / "R", r)
  cfg = ml_collections.ConfigDict(json.loads((r / "transformer" / "unitalking_config.json").read_text()))
  assert release.Release.load(str(r)).ref_len == 0
  cfg.data.ref_len = 6
  model_config = SimpleNamespace(video=SimpleNamespace(in_channels=24), audio_channels=16)
  release.write_components(str(r), cfg, data_lib.codecs(cfg), model_config)
  rel = release.Release.load(str(r))
  assert rel.ref_len == 6 and rel.ref_shape() == (6, 64)
  rng = np.random.default_rng(0)
  long, short = rng.normal(0, 0.2, 6 * 640 + 999).astype(np.float32), rng.normal(0, 0.2, 1000).astype(np.float32)
  pca = lambda x, n: rel.pca_audio.encode(rel.mel.encode(x, frames=n))  # noqa: E731
  np.testing.assert_allclose(rel.reference_tokens(long), pca(long[:6 * 640], 24).reshape(6, 64), rtol=1e-6)
  _, b = release.inputs(rel, TEXT, ref_audio=short)
  ref = b["ref"][0]
  assert ref.shape == (6, 64) and np.all(ref[2:] == 0)
  np.testing.assert_allclose(ref[:2], pca(np.pad(short, (0, 280)), 8).reshape(2, 64), rtol=1e-6)
  np.testing.assert_allclose(ref, data_lib.reference_tokens(data_lib.codecs(cfg), cfg, short), rtol=1e-6)


def test_torch_alone_equals_jax_and_the_sample_cli(rel_dir):
  from shared.data.media import read_mp4
  from unitalking_jax import release
  script = f"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
from unitalking_jax.torch_pipeline import UniTalkingPipeline
d = {str(rel_dir)!r}
pipe = UniTalkingPipeline.from_pretrained(d + "/R")
out = {{}}
for task, kw in {CASES!r}.items():
  o = pipe({TEXT!r}, noise=np.load(f"{{d}}/noise_{{task}}.npy"), **{{k: d + "/" + v for k, v in kw.items()}})
  assert o.task == task
  out.update({{f"{{task}}_v": o.video_latents, f"{{task}}_a": o.audio_latents, f"{{task}}_frames": o.frames,
              f"{{task}}_audio": o.audio}})
o.save(d + "/torch/clip.mp4")
np.savez(d + "/torch.npz", **out)
print(json.dumps({{"jax": sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax")),
                   "seconds": time.perf_counter() - t0}}))
"""
  p = _run(script=script)
  info = json.loads(p.stdout.strip().splitlines()[-1])
  assert info["jax"] == [], info["jax"][:10]               # PyTorch alone: no jax / jaxlib / flax module imported
  TIMES["torch_4_tasks"] = info["seconds"]
  got = np.load(rel_dir / "torch.npz")
  rel = release.Release.load(str(rel_dir / "R"))
  model_params = release.jax_model_and_params(rel)
  errs = {}
  for i, (task, kw) in enumerate(CASES.items()):
    t_task, batch = release.inputs(rel, TEXT, **{k: str(rel_dir / v) for k, v in kw.items()})
    assert t_task == task
    v, a = release.jax_generate(rel, batch, task, seed=i, model_params=model_params)
    for name, ours, theirs in (("video", v, got[f"{task}_v"]), ("audio", a, got[f"{task}_a"])):
      scale = float(np.abs(ours).max())
      err = float(np.abs(ours - theirs).max())
      errs[f"{task}_{name}"] = (err, err / scale)
      assert scale > 0.1 and err / scale < 1e-4, (task, name, err, scale)
    frames, audio = rel.decode(v[0], a[0])
    df = int(np.abs(frames.astype(int) - got[f"{task}_frames"].astype(int)).max())
    da = float(np.linalg.norm(audio - got[f"{task}_audio"]) / max(np.linalg.norm(audio), 1e-9))
    errs[f"{task}_media"] = (df, da)
    assert df <= 2 and da < 1e-2, (task, df, da)    # uint8 frames within 2 levels; Griffin-Lim audio within 1 %
    if task in ("tv2a", "ti2av"):                   # the given frames are kept
      n = 1 if task == "ti2av" else batch["video"].shape[1]
      np.testing.assert_allclose(got[f"{task}_v"][:, :n], batch["video"][:, :n], atol=1e-6)
    if task == "ti2av":
      jax_ti2av_audio = audio
  print("latent / media errors:", errs, "times:", TIMES)
  # python -m unitalking_jax.sample --release: the same clip in JAX (seed 1 = the ti2av noise above)
  _run("unitalking_jax.sample", "--release", str(rel_dir / "R"), "--task", "ti2av", "--image",
       str(rel_dir / "face.png"), "--text", TEXT, "--seed", "1", "--out", str(rel_dir / "cli" / "clip.mp4"))
  from shared.data.media import read_wav
  wav, sr = read_wav(str(rel_dir / "cli" / "clip.wav"))
  assert sr == 16000 and wav.shape == jax_ti2av_audio.shape and read_mp4(str(rel_dir / "cli" / "clip.mp4")).audio.size
  assert np.abs(wav - jax_ti2av_audio).max() < 1e-3      # 16-bit wav of the same Griffin-Lim audio
  m = read_mp4(str(rel_dir / "torch" / "clip.mp4"))
  assert m.frames.shape == got["tr2av_frames"].shape and m.audio is not None and m.audio.size > 0
  assert os.path.exists(rel_dir / "torch" / "clip.wav")


def test_bf16_release_and_clear_errors(rel_dir, tmp_path):
  from shared.checkpoint import restore
  from shared.errors import CheckpointError, ConfigError
  from unitalking_jax.export import write_release
  from unitalking_jax.model import model_from_config
  from unitalking_jax.torch_pipeline import UniTalkingPipeline
  import ml_dtypes
  r = restore(str(rel_dir / "wd"), model_fn=model_from_config)
  write_release(r.model, r.params, r.config, str(tmp_path / "bf16"), ml_dtypes.bfloat16)
  for f in ("video_stream/diffusion_pytorch_model.safetensors", "audio_stream/diffusion_pytorch_model.safetensors",
            "unitalking_rest.safetensors"):
    raw = open(tmp_path / "bf16" / "transformer" / f, "rb").read()
    head = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert {v["dtype"] for k, v in head.items() if k != "__metadata__"} == {"BF16"}, f
  noise = np.load(rel_dir / "noise_t2av.npy")
  o16 = UniTalkingPipeline.from_pretrained(str(tmp_path / "bf16"))(TEXT, noise=noise, griffin_lim=False)
  pipe = UniTalkingPipeline.from_pretrained(str(rel_dir / "R"))
  o32 = pipe(TEXT, noise=noise, griffin_lim=False).video_latents
  rel_err = np.abs(o16.video_latents - o32).max() / np.abs(o32).max()
  assert 0 < rel_err < 0.1, rel_err                      # bf16 weights: close, not equal
  for kw, names in (({"task": "ti2av"}, ["ti2av", "image", "--image"]),
                    ({"task": "t2av", "image": str(rel_dir / "face.png")}, ["t2av", "does not use image"]),
                    ({"image": str(rel_dir / "face.png"), "video": str(rel_dir / "clip.mp4")}, ["image", "video"]),
                    ({"noise": noise[:, :5]}, ["noise", "[1, "])):
    with pytest.raises(ConfigError) as e:
      pipe(TEXT, **kw)
    assert all(n in str(e.value) for n in names), (names, str(e.value))
  with pytest.raises(ConfigError, match="xyzzy"):
    pipe("ma xyzzy")
  for missing in ("vae/pca.safetensors", "scheduler/scheduler_config.json", "transformer/audio_stream/config.json"):
    broken = tmp_path / ("broken_" + missing.replace("/", "_"))
    shutil.copytree(rel_dir / "R", broken)
    os.remove(broken / missing)
    with pytest.raises(CheckpointError, match=str(broken / missing)):
      UniTalkingPipeline.from_pretrained(str(broken))


def test_umt5_unipc_release_torch_alone_equals_jax(tmp_path):
  """data.text = "umt5" and sampler "unipc": the release carries the UMT5 encoder + tokenizer (copied,
  transformers layout) and diffusers' UniPCMultistepScheduler config; PyTorch encodes the prompt with
  transformers' UMT5EncoderModel and samples with diffusers' UniPC, JAX with ours: same latents for the same noise
  (TI2AV: the given first frame held through UniPC's corrector). A random-weight model, perturbed so that every
  layer matters: no training needed for the comparison."""
  import flax.linen as nn
  import torch
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
  from transformers import UMT5Config, UMT5EncoderModel
  from configs.unitalking.tiny import get_config
  from unitalking_jax import release
  from unitalking_jax.export import write_release
  from unitalking_jax.task import batch_spec, make_task
  d, dim = 32, tmp_path
  c = get_config()
  c.model.video.update(dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, ffn_dim=64, freq_dim=32,
                            text_dim=d))
  c.model.update(dict(audio_ffn_dim=64, text_vocab=0, text_positions=0))
  c.data.update(dict(text="umt5", frames=8, pca_fit_samples=48, text_tokenizer=str(dim / "tokenizer.json"),
                     text_encoder=str(dim / "text_encoder")))
  c.trainer.batch_size = 1
  c.sampling.update(dict(steps=4, sampler="unipc"))
  vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + list("abcdefghijklmnopqrstuvwxyz"))}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\S"), "isolated")   # one token per character
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  tok.save(c.data.text_tokenizer)
  torch.manual_seed(0)
  UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=d, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                              dropout_rate=0.0)).save_pretrained(c.data.text_encoder)
  task = make_task(c)
  batch = {k: np.zeros(s.shape, s.dtype) for k, s in batch_spec(c).items()}
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape, np.float32), params)
  write_release(task.model, params, c, str(dim / "R"))
  assert json.loads((dim / "R" / "model_index.json").read_text())["text_encoder"] == ["transformers",
                                                                                    "UMT5EncoderModel"]
  rel = release.Release.load(str(dim / "R"))
  np.save(dim / "noise.npy", release.jax_noise(rel, 0))
  np.save(dim / "face.npy", np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
  assert json.loads((dim / "R" / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
      "UniPCMultistepScheduler"
  script = f"""
import json, sys
import numpy as np
from unitalking_jax.torch_pipeline import UniTalkingPipeline
pipe = UniTalkingPipeline.from_pretrained({str(dim / "R")!r})
o = pipe("hi yo", image=np.load({str(dim / "face.npy")!r}), noise=np.load({str(dim / "noise.npy")!r}), griffin_lim=False)
np.savez({str(dim / "torch.npz")!r}, v=o.video_latents, a=o.audio_latents, text=pipe.text_encoder("hi yo")[0])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax"))))
"""
  p = _run(script=script)
  assert json.loads(p.stdout.strip().splitlines()[-1]) == []
  got = np.load(dim / "torch.npz")
  enc = release.jax_text_encoder(rel)
  feats, mask = enc("hi yo")
  assert mask.sum() == 6 and np.abs(feats[:6]).min() > 0 and (feats[6:] == 0).all()   # 5 characters + </s>
  np.testing.assert_allclose(got["text"], feats, rtol=1e-4, atol=1e-5)
  task, b = release.inputs(rel, "hi yo", image=np.load(dim / "face.npy"), text_encoder=enc)
  v, a = release.jax_generate(rel, b, task, seed=0)
  assert task == "ti2av" and np.abs(got["v"][:, 0] - b["video"][:, 0]).max() < 1e-6
  for ours, theirs in ((v, got["v"]), (a, got["a"])):
    assert np.abs(ours - theirs).max() / np.abs(ours).max() < 1e-4, np.abs(ours - theirs).max()
