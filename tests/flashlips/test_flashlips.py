"""FlashLips (flashlips_jax) at micro size through shared.train: config words and checks, SynthCue examples (face
crops, mouth box from the mouth keypoints, mouth crops, speech features), the editor's pieces, one module-scoped
chain of workdirs (vae -> editor -> [mask-free pseudo ground truth] -> pose) each trained a few steps, and the paper
config built abstractly."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.flashlips.tiny import get_config
from shared import train as train_lib
from shared.errors import ConfigError
from flashlips_jax import data as data_lib
from flashlips_jax.model import LIPS_DIM, FlashLips, box_mask, to_unit
from flashlips_jax.task import lips_probe, make_task, maskfree_pairs


def micro(arg: str = ""):
  """tiny.py shrunk: 16 px face crops (from 64 px SynthCue frames), 8 px mouth crops, a 2-level 8-channel VAE
  (stride 2: 8 x 8 x 4 latents), an 8/16-channel editor UNet without mid block, a 16-d 1-layer pose Transformer over
  16 frames."""
  cfg = get_config(arg)
  t = cfg.trainer
  t.total_steps, t.batch_size, t.log_every = 8, 8, 2
  t.eval_every = t.sample_every = 0
  t.checkpoint.every_steps, t.checkpoint.async_save = 8, False
  t.schedule.warmup_steps = 1
  t.optimizer.learning_rate = 3e-3
  cfg.data.update(dict(image_size=16, mouth_size=8, pairs_per_clip=1, frames=16, eval_samples=4, eval_batch_size=4))
  m = cfg.model
  m.vae.update(dict(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, mid_block_add_attention=False,
                    sample_size=16))
  m.lips.update(dict(widths=(8,), groups=4))
  m.reference.update(dict(channels=8, blocks=1, groups=4))
  m.unet.update(dict(in_channels=4 + 8 + LIPS_DIM, block_out_channels=(8, 16), norm_num_groups=4, mid_block_type=None,
                     attention_head_dim=2, cross_attention_dim=16, sample_size=8))
  m.pose.update(dict(dim=16, layers=1, heads=2, mlp_ratio=2, max_frames=16))
  cfg.sampling.update(dict(steps=2, score_clips=4))
  return cfg


def _losses(wd, key="loss"):
  return [json.loads(l)[key] for l in open(os.path.join(wd, "metrics.jsonl")) if f'"{key}"' in l]


# ----------------------------------------------------------------------------------------------- config and data

def test_config_words_and_checks():
  assert [get_config(s).model.stage for s in ("", "vae", "maskfree", "pose")] == ["editor", "vae", "maskfree", "pose"]
  c = get_config("maskfree,editor=/r")
  assert not c.model.masked and c.init.editor.path == c.init.teacher.path == "/r/editor.safetensors"
  assert c.init.vae.path == "/r/vae" and not c.init.teacher.strict
  assert get_config("editor,vae=/v").init.vae.path == "/v/vae"
  for bad in ("bogus", "vae,editor", "editor,editor=/r", "vae,vae=/v", "pose,foo=/x"):
    with pytest.raises(ValueError):
      get_config(bad)
  with pytest.raises(ConfigError, match="init.vae.path"):
    make_task(micro("editor"))
  cfg = micro("pose")
  cfg.objective.require_vae_init = False
  with pytest.raises(ConfigError, match="init.editor.path"):
    make_task(cfg)
  cfg = micro("editor")
  cfg.objective.require_vae_init = False
  cfg.model.unet.in_channels = 20
  with pytest.raises(ConfigError, match="in/out_channels"):
    make_task(cfg)
  cfg = micro("pose")
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  cfg.model.pose.audio_dim = 80
  with pytest.raises(ConfigError, match="audio_dim"):
    make_task(cfg)
  cfg.model.pose.audio_dim = 256
  cfg.objective.sigma_sampling = "cosine"
  with pytest.raises(ConfigError, match="sigma_sampling"):
    make_task(cfg)
  cfg = micro("maskfree")
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  cfg.model.masked = True
  with pytest.raises(ConfigError, match="model.masked"):
    make_task(cfg)


def test_pose_stage_renders_with_its_editors_masking(tmp_path):
  """A pose model trained on a mask-free editor release renders unmasked: the config word reads REL/release.json,
  and a contradicting model.masked is a ConfigError naming it."""
  from shared.weights.init import save_params
  from flashlips_jax.task import check_config
  rel = tmp_path / "mf_rel"
  rel.mkdir()
  save_params(str(rel / "editor.safetensors"), {"lips": {"w": np.zeros(1, np.float32)}},
              metadata={"format": "flashlips_editor", "masked": False})
  (rel / "release.json").write_text(json.dumps({"stage": "maskfree", "masked": False}))
  cfg = get_config(f"pose,editor={rel}")
  assert cfg.model.masked is False and get_config("pose").model.masked and not get_config("maskfree").model.masked
  check_config(cfg)
  cfg.model.masked = True
  with pytest.raises(ConfigError, match="model.masked=True but the editor .* is mask-free"):
    check_config(cfg)
  cfg.objective.require_editor_init = False                  # evaluate / infer: the weights come from the checkpoint
  check_config(cfg)


def test_examples_crops_box_and_speech():
  cfg = micro()
  d = cfg.data
  src = data_lib.source(d, "train")
  s = src[0]
  ex = data_lib.prepare_pairs(s, np.random.default_rng(0), data=d, stride=2)
  assert ex["target"].shape == ex["reference"].shape == (1, 16, 16, 3) and ex["target"].dtype == np.uint8
  assert ex["mouth"].shape == (1, 8, 8, 3) and ex["lip_params"].shape == (1, 3)
  y0, y1, x0, x1 = ex["box"]
  assert 0 <= y0 < y1 <= 16 and 0 <= x0 < x1 <= 16 and y0 % 2 == 0 and x1 % 2 == 0    # snapped to the stride
  assert y0 >= 8 and (y1 - y0) * (x1 - x0) < 0.4 * 256                 # lower face, a small part of the crop
  # the box holds every mouth keypoint of the clip
  g = data_lib.Geometry(s["pose"], *s["video"].shape[1:3], d, 2)
  fx, fy, side = g.face
  kp = s["pose"][:, 4:8, :2] * s["video"].shape[1]
  px = (kp - [fx, fy]) * 16 / side
  assert (px[..., 0] >= x0).all() and (px[..., 0] <= x1).all() and (px[..., 1] >= y0).all() and (px[..., 1] <= y1).all()
  # the lips are drawn inside the box (darker than the skin around them)
  lum = ex["target"][0].astype(float).mean(-1)
  assert lum[y0:y1, x0:x1].min() < lum[y0:y1, x0:x1].max() - 15
  clip = data_lib.prepare_clip(s, data=d, stride=2, video=True)
  t = min(len(s["video"]), 16)
  assert clip["audio"].shape == (16, data_lib.audio_dim(d)) == (16, 256) and clip["mouth"].shape == (16, 8, 8, 3)
  assert clip["frame_mask"].sum() == t and clip["frames"].shape == (16, 16, 16, 3)
  np.testing.assert_allclose(clip["lip_params"][:t], s["lip_params"][:t])
  assert np.isfinite(clip["audio"]).all() and clip["audio"].std() > 0.1


def landmarks68_of(pose, height, width, rng, wide=False):
  """68-point landmarks (pixels) consistent with SynthCue keypoints: 6 points around each eye centre (mean = the
  keypoint), the 20 lip points spread over the mouth keypoints' extent; wide: a 640 x 360 frame holding the face
  at twice the size (the crop must follow the face, not the frame)."""
  t = len(pose)
  lm = np.zeros((t, 68, 2), np.float32)
  sc = np.array([width, height], np.float32)
  ring = rng.normal(size=(6, 2)).astype(np.float32)
  ring -= ring.mean(0)
  for k, sl in ((0, slice(36, 42)), (1, slice(42, 48))):
    lm[:, sl] = pose[:, k:k + 1, :2] * sc + ring
  mouth = pose[:, 4:8, :2] * sc
  w = rng.uniform(size=(16, 4)).astype(np.float32)
  lm[:, 48:52] = mouth
  lm[:, 52:68] = np.einsum("tkc,jk->tjc", mouth, w / w.sum(1, keepdims=True))   # inside the extent
  return lm


def test_real_video_landmarks_give_the_synthcue_geometry():
  """A real video's 68-point landmarks -> the same face crop and mouth box as SynthCue's own keypoints when they
  describe the same face; scaled / moved in a larger frame, the crop follows the face."""
  cfg = micro()
  d = cfg.data
  s = data_lib.source(d, "train")[0]
  h, w = s["video"].shape[1:3]
  g = data_lib.Geometry(s["pose"], h, w, d, 2)
  lm = landmarks68_of(s["pose"], h, w, np.random.default_rng(0))
  kp, unit = data_lib.pose_from_landmarks68(lm, h, w)
  assert kp.shape == (len(lm), 20, 3) and unit == pytest.approx(data_lib.FACE_UNIT * w, rel=1e-3)
  g2 = data_lib.Geometry(kp, h, w, d, 2, unit=unit)
  np.testing.assert_allclose(g2.face, g.face, atol=0.05)
  np.testing.assert_array_equal(g2.box, g.box)
  # the same face twice as large, moved, in a 640 x 360 frame: the same box in crop pixels
  big = lm * 2 + np.array([100.0, 20.0], np.float32)
  kp3, unit3 = data_lib.pose_from_landmarks68(big, 360, 640)
  g3 = data_lib.Geometry(kp3, 360, 640, d, 2, unit=unit3)
  assert unit3 == pytest.approx(2 * unit, rel=1e-4)
  np.testing.assert_allclose(g3.face, (2 * g2.face[0] + 100, 2 * g2.face[1] + 20, 2 * g2.face[2]), atol=0.1)
  np.testing.assert_array_equal(g3.box, g2.box)
  from shared.errors import DataError
  with pytest.raises(DataError, match=r"\[T, 68, 2\]"):
    data_lib.pose_from_landmarks68(lm[:, :60], h, w)
  bad = lm.copy()
  bad[3, 50] = np.nan
  with pytest.raises(DataError, match="NaN"):
    data_lib.pose_from_landmarks68(bad, h, w)


def test_folder_source_reads_real_style_videos(tmp_path):
  """data.source='folder': mp4s with audio + 68-point landmarks -> the same examples as the SynthCue clips they were
  written from (video through the mp4 codec: close, not equal); bad files are named."""
  from shared.data.media import write_mp4
  from shared.errors import DataError
  cfg = micro()
  d = cfg.data
  src = data_lib.source(d, "train")
  for split, idx in (("train", (0, 1)), ("test", (2,))):
    (tmp_path / split).mkdir()
    for i in idx:
      s = src[i]
      write_mp4(str(tmp_path / split / f"c{i}.mp4"), s["video"], fps=25, audio=s["audio"], sample_rate=16000, crf=0,
                pix_fmt="yuv444p")
      np.save(str(tmp_path / split / f"c{i}_landmarks.npy"),
              landmarks68_of(s["pose"], *s["video"].shape[1:3], np.random.default_rng(i)))
  (tmp_path / "train" / "nolm.mp4").write_bytes(b"")                   # no landmarks beside it: not listed
  cfg.data.update(dict(source="folder", root=str(tmp_path)))
  fs = data_lib.source(cfg.data, "train")
  assert len(fs) == 2 and len(data_lib.source(cfg.data, "test")) == 1
  got = data_lib.prepare_clip(fs[1], data=cfg.data, stride=2, video=True)
  want = data_lib.prepare_clip(src[1], data=d, stride=2, video=True)
  np.testing.assert_array_equal(got["box"], want["box"])
  assert np.abs(got["frames"].astype(int) - want["frames"]).mean() < 3                # the codec's loss only
  assert np.abs(got["audio"] - want["audio"]).mean() < 0.05                           # AAC: close in log-mel
  ex = data_lib.prepare_pairs(fs[0], np.random.default_rng(0), data=cfg.data, stride=2)
  assert ex["target"].shape == (1, 16, 16, 3) and ex["lip_params"].shape == (1, 3)
  np.save(str(tmp_path / "train" / "c0_landmarks.npy"), np.zeros((3, 68, 2), np.float32))
  with pytest.raises(DataError, match="3 landmark frames .*c0_landmarks.npy"):
    fs[0]
  cfg.data.root = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="no train/ folder"):
    data_lib.source(cfg.data, "train")


def test_box_mask_and_lips_probe():
  m = np.asarray(box_mask(jnp.asarray([[2, 5, 1, 3]]), 6))[0, ..., 0]
  want = np.zeros((6, 6))
  want[2:5, 1:3] = 1
  np.testing.assert_array_equal(m, want)
  rng = np.random.default_rng(0)
  lips = rng.normal(size=(64, 12))
  gt = lips[:, 8:11] @ rng.normal(size=(3, 3)) + 0.5
  assert lips_probe(lips, gt) > 0.999
  assert lips_probe(rng.normal(size=(64, 12)), gt) < 0.4
  assert np.isnan(lips_probe(lips, np.zeros((64, 3))))          # no truth (real videos): not measured, not 1.0


def test_editor_shapes_abstractly():
  """The editor composition at tiny size under jax.eval_shape: residual prediction on the target latent, decoded
  frame, 12-D lips vector; the pose Transformer's velocity per frame."""
  cfg = get_config("pose")
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  task = make_task(cfg)
  model = task.model
  b = 2
  x = jnp.zeros((b, 32, 32, 3))
  mouth = jnp.zeros((b, 16, 16, 3), jnp.uint8)
  mask = jnp.zeros((b, 32, 32, 1))
  audio, fmask = jnp.zeros((b, 48, 256)), jnp.ones((b, 48), bool)
  out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, x, mouth, mask, audio, fmask,
                                                                 method=FlashLips.init_all))
  z, x_hat, lips, vel = out
  assert z.shape == (b, 8, 8, 4) and x_hat.shape == (b, 32, 32, 3) and lips.shape == (b, LIPS_DIM)
  assert vel.shape == (b, 48, LIPS_DIM)
  p = variables["params"]
  assert set(p) == {"vae", "lips", "reference", "unet", "pose"}
  assert nn.meta.unbox(p)["unet"]["conv_in"]["kernel"].shape == (3, 3, 4 + 32 + 12, 64)


# ----------------------------------------------------------------------------------------------- the chain

@pytest.fixture(scope="module")
def vae(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("fl_vae"))
  cfg = micro("vae")
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 4
  result = train_lib.train(cfg, make_task(cfg), wd)
  from flashlips_jax.export import export
  return cfg, result, wd, export(wd, str(tmp_path_factory.mktemp("fl_vae_rel")))


@pytest.fixture(scope="module")
def editor(vae, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("fl_editor"))
  cfg = micro(f"editor,vae={vae[3]}")
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 16
  cfg.objective.lips_gt_weight = 0.1          # the optional supervision of the mouth code by the viseme truth
  cfg.trainer.log_every = 4
  task = make_task(cfg)
  result = train_lib.train(cfg, task, wd)
  from flashlips_jax.export import export
  return cfg, task, result, wd, export(wd, str(tmp_path_factory.mktemp("fl_editor_rel")))


def test_vae_stage_trains_and_exports_diffusers_layout(vae):
  cfg, result, wd, rel = vae
  assert result.step == 4 and np.all(np.isfinite(_losses(wd)))
  assert os.path.isfile(os.path.join(rel, "vae", "diffusion_pytorch_model.safetensors"))
  from shared.weights import load_pretrained
  module, params = load_pretrained(os.path.join(rel, "vae"))
  np.testing.assert_array_equal(np.asarray(params["decoder"]["conv_out"]["kernel"]),
                                np.asarray(result.state.params["decoder"]["conv_out"]["kernel"]))


def test_editor_trains_on_the_frozen_vae(vae, editor, tmp_path):
  cfg, task, result, wd, rel = editor
  losses = _losses(wd)
  assert len(losses) == 4 and np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
  assert np.all(np.isfinite(_losses(wd, "lips_gt")))
  p = result.state.params
  report = json.load(open(os.path.join(wd, "init_report.json")))
  assert report["vae"]["missing"] == [] and report["vae"]["unexpected"] == []
  for a, b in zip(jax.tree.leaves(p["vae"]), jax.tree.leaves(vae[1].state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))            # frozen: the vae stage's weights
  info = json.load(open(os.path.join(rel, "release.json")))
  assert info["stage"] == "editor" and info["masked"] and set(info["files"]) == {"vae", "editor", "unet"}
  from flashlips_jax.evaluate import evaluate
  from flashlips_jax.samples import editor_samples
  step, m = evaluate(wd, n=4)
  assert step == 16 and m["masked"] and m["n"] == 4
  assert all(np.isfinite(m[k]) for k in ("psnr", "psnr_mouth", "psnr_outside", "edit_psnr_outside",
                                         "edit_mouth_change", "lips_probe_r2"))
  assert os.path.isfile(editor_samples(task, result.state.variables, cfg, str(tmp_path / "samples"), n=4))


def test_maskfree_pseudo_ground_truth(editor, tmp_path):
  """The mask-free stage reads the editor release into the student and the frozen teacher; the teacher's mouth-
  altered pseudo ground truth equals the target outside the mouth box, differs inside it, and the training pairs
  run both ways (x -> x' with the other lips vector, x' -> x with the frame's own)."""
  from shared.weights.init import apply_init_entries
  rel = editor[4]
  cfg = micro(f"maskfree,editor={rel}")
  task = make_task(cfg)
  batch = next(data_lib.eval_pairs(cfg, "test", 4, 4))[0]
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.key(0), batch))
  params, reports = apply_init_entries(cfg.init, params, workdir=str(tmp_path))
  ep = editor[2].state.params
  for a, b in ((params["teacher_unet"], ep["unet"]), (params["unet"], ep["unet"]), (params["lips"], ep["lips"]),
               (params["teacher_reference"], ep["reference"])):
    for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(w))
  model = task.model
  x, xr = to_unit(jnp.asarray(batch["target"][:, 0])), to_unit(jnp.asarray(batch["reference"][:, 0]))
  m = box_mask(jnp.asarray(batch["box"]), 16)
  mouth = jnp.asarray(batch["mouth"][:, 0])
  (ins, refs, lips, outs), (loss, aux) = jax.jit(lambda p: (maskfree_pairs(model, {"params": p}, x, xr, mouth, m),
                                                             task.loss_fn(p, batch, jax.random.key(1))))(params)
  n = x.shape[0]
  assert ins.shape == outs.shape == (2 * n, 16, 16, 3) and lips.shape == (2 * n, LIPS_DIM) and refs.shape == ins.shape
  alt = np.asarray(outs[:n])                                                # x' (pseudo ground truth)
  np.testing.assert_allclose(np.asarray(ins[:n]), np.asarray(x))            # x -> x'
  np.testing.assert_allclose(np.asarray(ins[n:]), alt)                      # x' -> x
  np.testing.assert_allclose(np.asarray(outs[n:]), np.asarray(x))
  mm = np.asarray(m)
  np.testing.assert_allclose(alt * (1 - mm), np.asarray(x) * (1 - mm), atol=1e-6)   # unchanged outside the mouth
  assert np.abs((alt - np.asarray(x)) * mm).sum() > 0                                # altered inside it
  lv = np.asarray(lips)
  np.testing.assert_allclose(lv[:n], np.roll(lv[n:], 1, axis=0), atol=1e-6)         # x -> x' uses the other lips
  assert np.isfinite(float(loss)) and float(aux["weight"]) == 2 * n and float(aux["pseudo_change"]) > 0


@pytest.fixture(scope="module")
def pose(editor, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("fl_pose"))
  cfg = micro(f"pose,editor={editor[4]}")
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 12
  cfg.trainer.log_every = 4
  cfg.trainer.optimizer.learning_rate = 1e-2
  return cfg, train_lib.train(cfg, make_task(cfg), wd), wd


def test_pose_stage_flow_matching_trains(editor, pose, tmp_path):
  cfg, result, wd = pose
  losses = _losses(wd)
  assert len(losses) == 3 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  p = result.state.params
  for a, b in zip(jax.tree.leaves(p["lips"]), jax.tree.leaves(editor[2].state.params["lips"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))            # the editor came along, frozen
  from flashlips_jax.evaluate import evaluate
  step, m = evaluate(wd, n=4)
  assert step == 12 and m["n"] == 4
  assert {"sync_new", "sync_orig", "sync_real", "sync_input_new", "psnr_outside"} <= set(m)
  assert all(np.isfinite(v) for v in m.values() if isinstance(v, float))
  from flashlips_jax.samples import pose_samples
  paths = pose_samples(make_task(cfg), result.state.variables, cfg, str(tmp_path / "samples"), n=4)
  assert len(paths) == 4 and all(os.path.isfile(p) for p in paths)
  assert len(open(tmp_path / "samples" / "sync.txt").read().splitlines()) == 4
  # infer: a held-out face video + another clip's speech -> an mp4 as long as the speech, unchanged away from the mouth
  from shared.data.media import read_mp4, write_mp4, write_wav
  from flashlips_jax.infer import infer
  src = data_lib.source(cfg.data, "test")
  a, b = src[0], src[1]
  clip, wav, out = str(tmp_path / "face.mp4"), str(tmp_path / "speech.wav"), str(tmp_path / "synced.mp4")
  write_mp4(clip, a["video"], fps=25)
  np.save(str(tmp_path / "face_pose.npy"), a["pose"])
  write_wav(wav, b["audio"], 16000)
  row = infer(wd, clip, wav, out, batch=8)
  n = int(np.ceil(len(b["audio"]) * 25 / 16000))
  assert row["frames"] == n and row["masked"] and row["editor_fps"] > 0
  got = read_mp4(out, with_audio=True)
  assert got.frames.shape == (n,) + a["video"].shape[1:] and got.audio is not None
  top = min(n, len(a["video"]))
  diff = np.abs(got.frames[:top, :20].astype(int) - a["video"][:top, :20]).mean()   # the upper face: untouched
  assert diff < 6, diff
  # the same clip as a "real" video: 68-point landmarks beside it instead of SynthCue keypoints -> the same output
  os.remove(tmp_path / "face_pose.npy")
  np.save(str(tmp_path / "face_landmarks.npy"), landmarks68_of(a["pose"], *a["video"].shape[1:3],
                                                             np.random.default_rng(1)))
  row2 = infer(wd, clip, wav, str(tmp_path / "synced_lm.mp4"), batch=8)
  got2 = read_mp4(str(tmp_path / "synced_lm.mp4"), with_audio=False)
  assert row2["frames"] == n and np.abs(got2.frames.astype(int) - got.frames).mean() < 1.0


def test_evaluate_swaps_editor_and_oracle_lips(editor, pose, tmp_path):
  """evaluate --editor REL renders a pose workdir with another editor release that shares its lips encoder (the
  masked / mask-free comparison under one pose model); --lips oracle drives it with the new clip's own lips."""
  from shared.errors import CheckpointError
  from shared.weights.init import save_params
  from flashlips_jax.evaluate import evaluate
  cfg, result, wd = pose
  _, base = evaluate(wd, n=4)
  assert base["psnr_outside"] > 100 > base["psnr_outside_raw"]          # masked: pasted back, exact outside the box
  _, same = evaluate(wd, n=4, editor=editor[4])                          # the editor it was trained on: same figures
  for k in ("sync_new", "sync_orig", "psnr_outside", "psnr_outside_raw"):
    assert same[k] == pytest.approx(base[k], abs=1e-9), k
  p = result.state.params
  rel = tmp_path / "mf"
  rel.mkdir()
  other = {"lips": p["lips"], "reference": jax.tree.map(lambda a: np.asarray(a) * 0.5, p["reference"]),
           "unet": p["unet"]}
  save_params(str(rel / "editor.safetensors"), other, metadata={"format": "flashlips_editor", "masked": False})
  _, mf = evaluate(wd, n=4, editor=str(rel))
  assert not mf["masked"] and mf["psnr_outside"] == mf["psnr_outside_raw"] and mf["editor"] == str(rel)
  assert mf["sync_new"] != base["sync_new"]
  other["lips"] = jax.tree.map(lambda a: np.asarray(a) + 1.0, p["lips"])
  save_params(str(rel / "editor.safetensors"), other, metadata={"format": "flashlips_editor", "masked": True})
  with pytest.raises(CheckpointError, match="lips encoder differs"):
    evaluate(wd, n=4, editor=str(rel))
  with pytest.raises(CheckpointError, match="no editor release"):
    evaluate(wd, n=4, editor=str(tmp_path / "nowhere"))
  # --syncnet: LSE-C / LSE-D with SyncNet weights from a local file (random ones here, in syncnet_python's names)
  from safetensors.numpy import save_file
  from shared.metrics import sync
  sn = sync.SyncNet(embed_dim=16)
  sv = sn.init(jax.random.key(0), np.zeros((1, 13, 20), np.float32), np.zeros((1, 5, 224, 224, 3), np.float32))
  save_file(sync.to_torch_state_dict(jax.tree.map(np.asarray, nn.meta.unbox(dict(sv)))),
            str(tmp_path / "syncnet.safetensors"))
  _, ls = evaluate(wd, n=2, syncnet=str(tmp_path / "syncnet.safetensors"))
  assert all(np.isfinite(ls[f"lse_{m}_{k}"]) for m in "cd" for k in ("new", "orig", "real")) and ls["lse_d_new"] > 0
  _, orc = evaluate(wd, n=4, lips_source="oracle")
  assert orc["lips"] == "oracle" and np.isfinite(orc["sync_new"]) and orc["sync_new"] != base["sync_new"]
  assert orc["sync_real"] == base["sync_real"]                            # the same clips


# ----------------------------------------------------------------------------------------------- paper size

def test_paper_config_builds_abstractly():
  """configs/flashlips/paper.py under jax.eval_shape: SDXL's VAE (83.65M), 256 px frames -> 32 x 32 x 4 latents, the
  editor UNet, the lips encoder and the pose Transformer; the SDXL VAE enters through init.vae."""
  from configs.flashlips.paper import get_config as paper

  def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  cfg = paper("pose")
  cfg.objective.require_vae_init = cfg.objective.require_editor_init = False
  task = make_task(cfg)
  b, f = 1, int(cfg.data.frames)
  s, ms = int(cfg.data.image_size), int(cfg.data.mouth_size)
  batch = {"mouth": np.zeros((b, f, ms, ms, 3), np.uint8), "audio": np.zeros((b, f, 256), np.float32),
           "frame_mask": np.ones((b, f), bool)}
  p = nn.meta.unbox(jax.eval_shape(task.init_params, jax.random.key(0), batch))
  assert s == 256 and 83.6e6 < count(p["vae"]) < 83.7e6, count(p["vae"])
  assert p["unet"]["conv_in"]["kernel"].shape[2] == 4 + cfg.model.reference.channels + LIPS_DIM
  assert count(p["unet"]) > 10e6 and count(p["pose"]) > 5e6
  assert get_config("editor,vae=/sdxl").init.vae.prefix == "vae"
  assert paper("editor,vae=/sdxl").init.vae.path == "/sdxl/vae"


def test_torch_export_reproduces_editor_and_pose(editor, pose, tmp_path):
  """The release rebuilt in PyTorch (diffusers AutoencoderKL + UNet2DConditionModel, torch lips encoder / reference
  backbone / pose Transformer from the safetensors) gives our editor's latent and frame and our pose velocity."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("diffusers")
  from flashlips_jax.export import export
  from flashlips_jax.torch_model import FlashLipsEditorTorch, PoseTransformerTorch
  cfg, result, wd = pose
  rel = export(wd, str(tmp_path / "rel"))
  task = make_task(cfg)
  v = result.state.variables
  model = task.model
  batch = next(data_lib.eval_pairs(cfg, "test", 2, 2))[0]
  x, xr = to_unit(jnp.asarray(batch["target"][:, 0])), to_unit(jnp.asarray(batch["reference"][:, 0]))
  m, mouth = box_mask(jnp.asarray(batch["box"]), 16), jnp.asarray(batch["mouth"][:, 0])
  z, x_hat, lips = jax.jit(lambda v: model.apply(v, x, xr, mouth, m))(v)
  ed = FlashLipsEditorTorch.from_export(rel)
  t = lambda a: torch.from_numpy(np.asarray(a).transpose(0, 3, 1, 2).copy())  # noqa: E731
  with torch.no_grad():
    tz, tx = ed.edit(t(x), t(xr), torch.from_numpy(np.array(mouth)), t(m))
    tl = ed.lips(torch.from_numpy(np.array(mouth)))
  np.testing.assert_allclose(tl.numpy(), np.asarray(lips), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tz.numpy().transpose(0, 2, 3, 1), np.asarray(z), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tx.numpy().transpose(0, 2, 3, 1), np.asarray(x_hat), rtol=1e-4, atol=1e-4)
  rng = np.random.default_rng(0)
  xs = rng.normal(size=(2, 16, LIPS_DIM)).astype(np.float32)
  ts = np.array([300.0, 870.0], np.float32)
  au = rng.normal(size=(2, 16, 256)).astype(np.float32)
  ref = rng.normal(size=(2, LIPS_DIM)).astype(np.float32)
  fm = np.arange(16)[None] < np.array([[16], [11]])
  vel = jax.jit(lambda v: model.apply(v, xs, ts, au, ref, jnp.zeros((2,), jnp.int32), fm, method=FlashLips.velocity))(v)
  pt = PoseTransformerTorch.from_export(rel)
  with torch.no_grad():
    tv = pt(*(torch.from_numpy(a) for a in (xs, ts, au, ref)), torch.zeros(2, dtype=torch.long), torch.from_numpy(fm))
  np.testing.assert_allclose(tv.numpy()[fm], np.asarray(vel)[fm], rtol=1e-4, atol=1e-4)
