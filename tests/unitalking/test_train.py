"""UniTalking through shared.train: the tiny task trains (loss falls), stage 1 freezes every non-audio param,
generation writes samples; SynthCue codecs and the sync score on real clips."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.unitalking.tiny import get_config
from shared import train as train_lib
from shared.errors import DataError
from unitalking_jax import data as data_lib
from unitalking_jax.samples import make_sample_fn
from unitalking_jax.task import make_task


def shrink_model(cfg):
  cfg.model.video.update(dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, ffn_dim=64, freq_dim=32,
                              text_dim=16))
  cfg.model.audio_ffn_dim = 64


def small_config(**stage):
  cfg = get_config()
  cfg.trainer.total_steps = 30
  cfg.trainer.batch_size = 8
  cfg.trainer.log_every = 5
  cfg.trainer.sample_every = 0
  cfg.trainer.checkpoint.every_steps = 0
  cfg.trainer.checkpoint.async_save = False
  cfg.trainer.schedule.warmup_steps = 5
  cfg.trainer.optimizer.learning_rate = 3e-3
  shrink_model(cfg)
  cfg.data.frames = 8
  cfg.data.pca_fit_samples = 48
  cfg.sampling.steps = 3
  cfg.sampling.num = 2
  cfg.sampling.score_clips = 3
  cfg.stage.update(stage)
  return cfg


def test_tiny_trains_loss_falls(tmp_path):
  cfg = small_config()
  task = make_task(cfg)
  # one device: sharding is test_fsdp_8_devices_same_loss_as_1's subject; on a 2-core box 8 simulated devices
  # only add collectives to every program this end-to-end test compiles (train, 3 generation modes, evaluate)
  from shared import mesh as mesh_lib
  mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:1])
  result = train_lib.train(cfg, task, str(tmp_path), mesh=mesh)
  assert result.step == 30
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert len(losses) == 6 and all(np.isfinite(losses))
  assert losses[-1] < 0.8 * losses[0], losses
  # generation (T2AV and TV2A) writes wav / mp4 / png and a sync line, shapes as the data
  make_sample_fn(cfg, task)(result.state.variables, 30, str(tmp_path / "samples" / "30"))
  files = set(os.listdir(tmp_path / "samples" / "30"))
  for t in ("t2av", "tv2a"):
    assert {f"{t}_0.wav", f"{t}_0.mp4", f"{t}_0_frames.png", f"{t}_0_mel.png"} <= files
  sync = open(tmp_path / "samples" / "30" / "sync.txt").read().splitlines()
  assert sync[0] == "3 held-out clips" and "t2av_2.wav" not in files   # scored over 3, media for 2
  from PIL import Image as _Image
  plot = _Image.open(tmp_path / "samples" / "30" / "sync.png")   # rows: real 2, t2av 2 (= num), tv2a 2
  assert plot.size[1] == 16 + 6 * 56 and plot.size[0] > 150 + 8 * cfg.data.frames
  assert [l.split(":")[0] for l in sync[1:]] == ["real", "t2av", "tv2a"] and all("ser " in l for l in sync[1:]), sync
  batch = {k: v[:2] for k, v in data_lib.collate(
      [data_lib.prepare(data_lib.source(cfg, "test")[i], cfg) for i in range(2)]).items()}
  v, a = task.generate(result.state.params, batch, "tv2a")
  np.testing.assert_allclose(np.asarray(v), batch["video"], atol=1e-6)  # TV2A keeps the given video
  assert a.shape == batch["audio"].shape and np.isfinite(np.asarray(a)).all()

  # sample.py / export.py / evaluate.py path: restore() without a trainer gives the trained params (bitwise) and
  # the same samples as the trainer's state; TI2AV from an image keeps it as the first frame
  from PIL import Image
  from shared.checkpoint import restore
  from unitalking_jax.export import export
  from unitalking_jax.model import model_from_config
  from unitalking_jax.sample import build_inputs
  r = restore(str(tmp_path), model_fn=model_from_config)
  cfg2, params = r.config, r.params
  task2 = make_task(cfg2, r.model)
  assert r.step == 30 and r.model.config == task.model.config
  flat_a, flat_b = train_lib.flat(jax.device_get(params)), train_lib.flat(jax.device_get(result.state.params))
  assert flat_a.keys() == flat_b.keys() and all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_b)
  v2, a2 = task2.generate(params, batch, "tv2a")
  np.testing.assert_array_equal(np.asarray(a2), np.asarray(a))
  frame = data_lib.clip_video(data_lib.source(cfg, "test")[3], cfg)[0]  # a face crop, as users give
  Image.fromarray(frame).save(tmp_path / "face.png")
  inputs = build_inputs(cfg2, "ma ba luo", image=str(tmp_path / "face.png"))
  assert inputs["text"][0, :3].tolist() == data_lib.VOCAB.encode(["ma", "ba", "luo"]).tolist()
  v, a = task2.generate(params, inputs, "ti2av")
  np.testing.assert_allclose(np.asarray(v)[0, 0], inputs["video"][0, 0], atol=1e-6)
  assert not np.allclose(np.asarray(v)[0, 1:], inputs["video"][0, 1:])
  export(task2.model, params, str(tmp_path / "export"))
  assert {"video_stream", "unitalking_rest.safetensors"} <= set(os.listdir(tmp_path / "export"))
  # evaluate: one JSON line of metrics, also in DIR/eval/<step>.json
  from shared import cli
  from unitalking_jax.evaluate import evaluate
  step, metrics = evaluate(str(tmp_path), n=3)
  path = cli.write_eval(str(tmp_path), step, metrics, split="test", n=3)
  assert path == str(tmp_path / "eval" / "30.json")
  record = json.loads(open(path).read())
  assert record["step"] == 30 and record["n"] == 3
  for t in ("real", "t2av", "ti2av", "tv2a"):   # (8-frame clips hold no whole syllable: no SER here)
    assert np.isfinite(record[f"{t}/sync_margin"]) and np.isfinite(record[f"{t}/sync_shuffled"]), t
  # a saved config missing a model field fails naming it (no silent default)
  from shared.errors import ConfigError
  saved = json.load(open(tmp_path / "config.json"))
  del saved["model"]["mask_text"]
  import ml_collections
  with pytest.raises(ConfigError, match=r"model\.mask_text is missing"):
    model_from_config(ml_collections.ConfigDict(saved))


def test_stage1_trainable_mask_is_the_audio_stream():
  """Stage 1 (configs/unitalking/audio_pretrain.py) trains exactly the audio stream; shared.train keeps the rest
  bit-identical (tests/shared/test_train.py), and the audio-only forward gives the video params no gradient
  (tests/unitalking/test_model.py::test_audio_only_stage1_path)."""
  from configs.unitalking import audio_pretrain
  cfg = audio_pretrain.get_config()
  cfg.data.update(dict(frames=8, pca_fit_samples=48))
  shrink_model(cfg)
  task = make_task(cfg)
  batch = data_lib.collate([data_lib.prepare(data_lib.source(cfg, "test")[0], cfg)])
  keys = list(train_lib.flat(jax.eval_shape(lambda r: task.init_params(r, batch), jax.random.key(0))))
  trains = {k for k in keys if task.trainable(k)}
  assert trains == {k for k in keys if k.startswith(("blocks/audio/", "audio_"))}
  assert any(k.startswith("blocks/video/") for k in keys) and "text_embed" in keys
  assert any("add_k_proj" in k for k in trains) and all(not k.startswith("video_") for k in trains)
  # the stage-1 loss runs the audio stream alone: finite, and no gradient reaches the video stream
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
  (loss, aux), grads = jax.jit(jax.value_and_grad(task.loss_fn, has_aux=True))(params, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and set(aux) == {"loss_audio", "weight"} and float(aux["weight"]) == 1.0
  g = train_lib.flat(grads)
  assert all(float(np.abs(g[k]).max()) == 0.0 for k in g if k.startswith(("blocks/video/", "video_")))
  assert float(np.abs(g["blocks/audio/attn1/to_q/kernel"]).max()) > 0.0


def test_stage2_starts_from_the_stage1_workdir(tmp_path):
  """The paper's hand-off: stage 2 reads the stage-1 run's whole param tree (init.stage1 = the workdir, shared
  init "workdir"): the trained audio stream and the frozen rest equal the stage-1 checkpoint; with copy_video (which
  would overwrite the trained audio stream) the config is refused."""
  from configs.unitalking import audio_pretrain
  from shared import mesh as mesh_lib
  from shared.checkpoint import restore
  from shared.errors import ConfigError
  from shared.weights.init import apply_init_entries
  s1 = small_config()
  audio_pretrain.audio_stage(s1)
  s1.trainer.total_steps = 2
  s1.trainer.checkpoint.every_steps = 2
  mesh = mesh_lib.make_mesh(s1.trainer.mesh, devices=jax.devices()[:1])
  train_lib.train(s1, make_task(s1), str(tmp_path / "s1"), mesh=mesh)
  want = train_lib.flat(restore(str(tmp_path / "s1")).params)
  s2 = small_config()
  s2.init.stage1.path = str(tmp_path / "s1")
  task = make_task(s2)
  batch = data_lib.collate([data_lib.prepare(data_lib.source(s2, "test")[0], s2)])
  fresh = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(5), batch))
  got = train_lib.flat(apply_init_entries(s2.init, {"params": fresh}, variables=True)[0]["params"])
  assert got.keys() == want.keys()
  for k in got:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)
  assert any(float(np.abs(np.asarray(fresh_v) - want[k]).max()) > 0 for k, fresh_v in train_lib.flat(fresh).items()
             if k.startswith("blocks/audio/"))                           # (a fresh init differs: the read did it)
  s2.init_audio = "copy_video"
  s2.init.video.path = str(tmp_path / "s1")
  with pytest.raises(ConfigError, match="init.stage1"):
    make_task(s2)


def test_codecs_and_sync_score_on_real_clips():
  cfg = get_config()
  cfg.data.pca_fit_samples = 64
  src = data_lib.source(cfg, "test")
  samples = [src[i] for i in range(16)]
  prepared = [data_lib.prepare(s, cfg) for s in samples]
  c = data_lib.codecs(cfg)
  t = cfg.data.frames
  for s, p in zip(samples[:4], prepared[:4]):
    n = min(t, s["video"].shape[0])
    face = data_lib.clip_video(s, cfg)[:n]
    assert face.shape[1:] == (cfg.data.face_crop, cfg.data.face_crop, 3)
    np.testing.assert_array_equal(c.pix.decode(c.pix.encode(face)), face)  # lossless
    # the PCA codec keeps held-out face crops within ~12 grey levels on average (64 fitting clips)
    err = np.abs(c.decode_video(p["video"])[:n].astype(np.float32) - face)
    assert err.mean() < 15.0, err.mean()
    assert p["video"].shape == (t, 4, 4, cfg.data.video_pca) and p["audio"].shape == (4 * t, cfg.data.audio_pca)
    lm = c.mel.to_log_mel(c.mel.encode(s["audio"][:t * 640], frames=4 * t))
    assert np.abs(c.log_mel(p["audio"]) - lm).mean() < 0.3
  frames = [c.decode_video(p["video"]) for p in prepared]
  mels = [c.log_mel(p["audio"]) for p in prepared]
  score = data_lib.sync_score(frames, mels)
  # SynthCue's audio energy follows the mouth: real pairs sync clearly better than shuffled pairs
  assert score["sync"] > 0.4 and score["sync_margin"] > 0.12, score  # 16 clips, 64-clip codec: ~0.49 vs ~0.29
  opening = np.mean([data_lib.corr(data_lib.mouth_opening(f), p["mouth_open"]) for f, p in zip(frames, prepared)])
  assert opening > 0.5
  with pytest.raises(DataError, match="face crop"):
    data_lib.face_crop(samples[0]["video"], samples[0]["pose"], 79)


def test_fsdp_8_devices_same_loss_as_1():
  """One train step on 8 simulated devices with FSDP gives the single-device loss and gradient norm."""
  from shared import mesh as mesh_lib
  out = {}
  for fsdp in (1, 8):
    cfg = small_config()
    cfg.trainer.mesh.update(dict(data=1, fsdp=fsdp))
    task = make_task(cfg)
    batch = next(task.make_train_iter())
    mesh = mesh_lib.make_mesh(cfg.trainer.mesh, devices=jax.devices()[:fsdp])
    setup = train_lib.build(cfg, task, mesh=mesh, example_batch=batch)
    assert dict(setup.mesh.shape)["fsdp"] == fsdp
    state = setup.init_fn()
    _, m = setup.step_fn(state, mesh_lib.global_batch(batch, setup.mesh, setup.rules))
    out[fsdp] = {k: float(m[k]) for k in ("loss", "grad_norm", "loss_audio", "loss_video")}
  for k in out[1]:
    np.testing.assert_allclose(out[8][k], out[1][k], rtol=2e-5, err_msg=k)


def test_pca_whiten_per_component_scales():
  """Whitened PCA: every component has unit variance on the fitting data; the subspace (hence the reconstruction)
  is the global-scale codec's; export arrays carry the per-component scales."""
  from unitalking_jax.codecs import PCA
  r = np.random.default_rng(0)
  x = r.normal(size=(500, 12)) * np.geomspace(10.0, 0.1, 12) @ np.linalg.qr(r.normal(size=(12, 12)))[0]
  glob, white = PCA.fit(x, 5), PCA.fit(x, 5, whiten=True)
  zw, zg = white.encode(x), glob.encode(x)
  np.testing.assert_allclose(zw.std(0), 1.0, rtol=1e-3)
  assert zg.std(0).max() / zg.std(0).min() > 4      # one global scale keeps the spectrum
  np.testing.assert_allclose(white.decode(zw), glob.decode(zg), rtol=1e-4, atol=1e-4)
  cfg = get_config()
  cfg.data.pca_fit_samples, cfg.data.video_whiten = 16, True
  arrays = data_lib.codecs(cfg).arrays()
  assert arrays["pca_video.scale"].shape == (cfg.data.video_pca,) and arrays["pca_audio.scale"].shape == (1,)


def test_draw_sigmas_shared_independent_and_clean():
  """One σ per example for both streams; p_independent_sigma = 1 decouples the video σ; clean frames are 0."""
  import ml_collections
  from unitalking_jax.task import draw_sigmas
  clean = np.zeros((256, 4), bool)
  clean[:, 0] = True
  o = ml_collections.ConfigDict(dict(sampling="uniform", timestep_shift=3.0, p_independent_sigma=0.0))
  sa, sv = (np.asarray(x) for x in draw_sigmas(jax.random.key(0), clean, o))
  assert (sv[:, 0] == 0).all() and (sv[:, 1:] == sa[:, None]).all()
  o.p_independent_sigma = 1.0
  sa1, sv1 = (np.asarray(x) for x in draw_sigmas(jax.random.key(0), clean, o))
  np.testing.assert_array_equal(sa1, sa)                       # the audio σ does not move
  assert (sv1[:, 0] == 0).all() and (sv1[:, 1:] == sv1[:, 1:2]).all() and (sv1[:, 1] != sa).all()
  assert abs(np.corrcoef(sv1[:, 1], sa)[0, 1]) < 0.2         # drawn apart
  o.p_independent_sigma = 0.5
  _, svh = (np.asarray(x) for x in draw_sigmas(jax.random.key(0), clean, o))
  assert 0.3 < np.mean(svh[:, 1] != sa) < 0.7
