"""trimodal_jax/real_data.py: How2Sign (SLT) + LRS3 (VSR / ASR / AVSR) written here from SynthCue samples
(shared.data.layouts.write_how2sign / write_lrs3, mouth-ROI dirs through shared.data.media) read back into the
sample dicts data.prepare expects: a collate()d batch (keys / shapes / dtypes = task.batch_spec), the pixels
against the written clips, the centre crop / mouth box / frame-rate helpers against hand-computed values, no
face-video decode for the speech source when a mouth-ROI dir is given, and DataErrors naming the file."""
import os
import threading

import numpy as np
import pytest

from configs.trimodal.tiny import get_config
from shared.data import layouts, media
from shared.data.synthcue import build_world, synthcue_source
from shared.errors import ConfigError, DataError
from trimodal_jax import data as data_lib
from trimodal_jax import real_data
from trimodal_jax import task as task_lib
from trimodal_jax.model import TASK_MODALITIES, TASKS

PAD = 16          # How2Sign clips written 64 x 96 (a red border either side): the centre square is the sign frame


def _speech_samples(cfg, n, split):
  src = synthcue_source(cfg.data, split, "speech")
  return [dict(src[i]) for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  base = tmp_path_factory.mktemp("real")
  cfg = get_config("stage2")
  cfg.data.update(dict(num_samples=8))
  h2s, h2s_lip = str(base / "how2sign"), str(base / "how2sign_lips")
  lrs3, lrs3_lip = str(base / "lrs3"), str(base / "lrs3_lips")
  sign = synthcue_source(cfg.data, "train", "sign", frame_size=64, render_audio=False)
  signs = []
  for i in range(3):
    s = dict(sign[i])
    border = np.zeros(s["video"].shape[:2] + (PAD, 3), np.uint8)
    border[..., 0] = 255
    s["video"] = np.concatenate([border, s["video"], border], axis=2)        # [T, 64, 96, 3]
    signs.append(s)
  paths = layouts.write_how2sign(h2s, "train", signs)
  for p, s in zip(paths, signs):
    media.write_mp4(os.path.join(h2s_lip, os.path.relpath(p, h2s)), s["lip"])
  speech = _speech_samples(cfg, 5, "train")
  speech[0]["text"] = "HELLO WORLD"
  speech[1]["words"] = []
  lpaths = layouts.write_lrs3(lrs3, "trainval", speech[:3]) + layouts.write_lrs3(lrs3, "pretrain", speech[3:])
  for p, s in zip(lpaths, speech):
    media.write_mp4(os.path.join(lrs3_lip, os.path.relpath(p, lrs3)), s["lip"])
  os.remove(lpaths[1][:-4] + ".wav")                                         # audio from the mp4's aac track
  chars = build_world(0, int(cfg.data.lexicon_size), int(cfg.data.max_homophones), int(cfg.data.n_speakers),
                      float(cfg.data.shared_sign_fraction)).chars
  tok_dir = str(base / "tok")
  data_lib.sentence_tokenizer(list(chars) + ["hello", "world"]).save_pretrained(tok_dir)
  return dict(h2s=h2s, h2s_lip=h2s_lip, lrs3=lrs3, lrs3_lip=lrs3_lip, signs=signs, speech=speech, paths=paths,
              lpaths=lpaths, tok=tok_dir, base=base)


def _index(src, path):
  return next(i for i, e in enumerate(src.entries) if e["mp4"] == path)


def real_cfg(w, stage="stage2", **lrs3):
  cfg = get_config(stage)
  d = cfg.data
  for k in ("seed", "num_samples", "lexicon_size", "max_homophones", "n_speakers", "n_test_speakers", "clauses",
            "shared_sign_fraction"):
    del d[k]                                           # a real data section has no SynthCue world
  d.source = "how2sign+lrs3"
  # babble_p 0: data.babble_pool mixes SynthCue validation clips, which a real data section does not describe
  # (the paper's NOISEX babble, data.babble_path, is not read yet)
  d.update(dict(frame_buckets=(64,), label_buckets=(8,), eval_samples=0, babble_p=0.0))
  d.how2sign = real_data.how2sign_section(root=w["h2s"], lip_root=w["h2s_lip"])
  d.lrs3 = real_data.lrs3_section(root=w["lrs3"], lip_root=w["lrs3_lip"],
                                  splits={"train": "pretrain+trainval", "validation": "", "test": "test"}, **lrs3)
  cfg.tokenizer.path = w["tok"]
  return cfg


def test_sources_samples_and_collated_batch(world):
  cfg = real_cfg(world)
  srcs = data_lib.sources(cfg.data, "train")
  assert srcs["sign"].n_clips == 3 and srcs["speech"].n_clips == 5
  assert len(srcs["sign"]) == len(srcs["speech"]) == 5                 # indices wrap over the smaller dataset
  with pytest.raises(IndexError):
    srcs["sign"][5]
  # How2Sign: the centre 64 x 64 square of the 64 x 96 clip (no red border), lips from the ROI dir
  s0, s3 = srcs["sign"][0], srcs["sign"][3]
  assert s3["path"] == s0["path"] == world["paths"][0] and s0["text"] == world["signs"][0]["text"]
  assert s0["video"].shape == world["signs"][0]["video"].shape[:2] + (64, 3) and s0["video"].dtype == np.uint8
  assert "audio" not in s0
  clip = media.read_mp4(world["paths"][0], with_audio=False).frames
  np.testing.assert_array_equal(s0["video"], clip[:, :, PAD:PAD + 64])
  truth = world["signs"][0]["video"][:, :, PAD:PAD + 64].astype(np.float32)
  assert np.abs(s0["video"] - truth).mean() < 3.0                       # h264 at crf 18
  assert np.abs(s0["lip"] - world["signs"][0]["lip"].astype(np.float32)).mean() < 3.0
  assert s0["lip"].shape == world["signs"][0]["lip"].shape and s0["lip"].dtype == np.uint8
  # LRS3: pretrain then trainval ("a+b"); text lower-cased; wav beside = exact audio, else the aac track
  by_path = dict(zip(world["lpaths"], world["speech"]))
  got = [srcs["speech"][i] for i in range(5)]
  assert {s["path"] for s in got[:2]} == set(world["lpaths"][3:])
  assert {s["path"] for s in got[2:]} == set(world["lpaths"][:3])
  for s in got:
    ref = by_path[s["path"]]
    assert s["lip"].shape == ref["lip"].shape and s["lip"].dtype == np.uint8
    assert np.abs(s["lip"] - ref["lip"].astype(np.float32)).mean() < 3.0
    assert s["audio"].dtype == np.float32 and s["sample_rate"] == 16000
    if s["path"] == world["lpaths"][1]:
      ref = ref["audio"]
      assert abs(len(s["audio"]) - len(ref)) <= 1024
      n = min(len(ref), len(s["audio"]))
      assert np.corrcoef(s["audio"][:n], ref[:n])[0, 1] > 0.95
    else:
      np.testing.assert_array_equal(s["audio"], ref["audio"])
  hello = _index(srcs["speech"], world["lpaths"][0])
  assert srcs["speech"][hello]["text"] == "hello world"
  # one collated batch of every task through data.prepare: the keys, shapes and dtypes of task.batch_spec
  tok = data_lib.tokenizer(cfg)
  ex = [data_lib.prepare(i % 5 if i != 2 else hello, t, np.random.default_rng(i), cfg=cfg, srcs=srcs, tok=tok)
        for i, t in enumerate(TASKS + TASKS)]
  batch = data_lib.collate(ex, cfg=cfg, tok=tok)
  cfg.trainer.batch_size = len(ex)
  spec = task_lib.batch_spec(cfg)
  assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {k: (v.shape, v.dtype.name) for k, v in spec.items()}
  for i, k in enumerate(batch["task"]):
    for m in ("sign", "lip", "audio"):
      assert bool(batch[m][i].any()) == (m in TASK_MODALITIES[TASKS[k]]), (i, m)
  assert data_lib.decode_text(tok, ex[2]["target_ids"]) == "hello world"        # asr on the HELLO WORLD clip
  # make_task builds with the real source (no data read), and the grain iterator yields the same layout
  task = task_lib.make_task(cfg)
  assert task.tokenizer is not None
  b = next(data_lib.train_iterator(cfg, tok, batch_size=4, seed=0))
  cfg.trainer.batch_size = 4
  spec = task_lib.batch_spec(cfg)
  assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {k: (v.shape, v.dtype.name) for k, v in spec.items()}


def test_speech_source_decodes_no_face_video_with_lip_root(world, monkeypatch):
  cfg = real_cfg(world)
  src = data_lib.sources(cfg.data, "train")["speech"]
  calls, me = [], threading.get_ident()       # (an earlier test's grain iterator may still prefetch in threads)
  real = real_data.decode_video
  monkeypatch.setattr(real_data, "decode_video",
                      lambda p, *a, **kw: (threading.get_ident() == me and calls.append(p)) or real(p, *a, **kw))
  src[_index(src, world["lpaths"][1])]                  # its wav removed: audio from the mp4's track
  assert calls == [os.path.join(world["lrs3_lip"], os.path.relpath(world["lpaths"][1], world["lrs3"]))]


def test_fixed_mouth_box_without_lip_root(world):
  cfg = real_cfg(world, mouth_box=(112, 64, 96))
  cfg.data.lrs3.lip_root = ""
  src = data_lib.sources(cfg.data, "train")["speech"]
  s = src[_index(src, world["lpaths"][0])]
  frames = media.read_mp4(world["lpaths"][0], with_audio=False).frames          # [T, 64, 64, 3] face video
  # (112, 64, 96) of 224 scaled to 64: rows round(32.0)..round(59.43) = 32..59, columns round(18.29)..round(45.71)
  box = frames[:, 32:59, 18:46].astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)
  grey = np.clip(np.round(box), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(real_data.mouth_box(frames, (112, 64, 96)), grey)
  from PIL import Image
  want = np.stack([np.asarray(Image.fromarray(f).resize((28, 28), Image.BILINEAR)) for f in grey])
  np.testing.assert_array_equal(s["lip"], want)
  assert s["lip"].shape == (frames.shape[0], 28, 28)


def test_frame_helpers():
  x = np.arange(30)
  np.testing.assert_array_equal(real_data.to_fps(x, 30.0, 25.0), [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16,
                                                                   18, 19, 20, 21, 22, 24, 25, 26, 27, 28])
  np.testing.assert_array_equal(real_data.to_fps(x[:10], 25.0, 50.0), np.repeat(np.arange(10), 2))
  assert real_data.to_fps(x, 25.0, 25.0) is x
  v = np.zeros((2, 720, 1280, 3), np.uint8)
  v[:, :, 280:1000] = 200                                # the centre 720 x 720 square
  out = real_data.sign_video(v, 224)
  assert out.shape == (2, 224, 224, 3) and out.dtype == np.uint8 and (out == 200).all()
  tall = np.arange(2 * 6 * 4).reshape(2, 6, 4).astype(np.uint8)
  np.testing.assert_array_equal(real_data.center_square(tall), tall[:, 1:5])


def test_errors_name_the_file(world, tmp_path):
  cfg = real_cfg(world)
  # a missing mouth-ROI file
  lip = os.path.join(world["h2s_lip"], os.path.relpath(world["paths"][1], world["h2s"]))
  os.rename(lip, lip + ".bak")
  try:
    with pytest.raises(DataError, match="does not exist") as e:
      data_lib.sources(cfg.data, "train")["sign"][1]
    assert e.value.path == lip
  finally:
    os.rename(lip + ".bak", lip)
  # a mouth-ROI file with another frame count than the clip
  media.write_mp4(lip, world["signs"][1]["lip"][:-3])
  try:
    with pytest.raises(DataError, match="frames") as e:
      data_lib.sources(cfg.data, "train")["sign"][1]
    assert e.value.path == lip
  finally:
    media.write_mp4(lip, world["signs"][1]["lip"])
  # an 8 kHz wav beside an LRS3 clip: refused (resample=False), or resampled to 16 kHz when asked
  root = str(tmp_path / "lrs3")
  s = dict(world["speech"][0])
  mp4 = layouts.write_lrs3(root, "trainval", [s])[0]
  media.write_mp4(os.path.join(root + "_lips", os.path.relpath(mp4, root)), s["lip"])
  media.write_wav(mp4[:-4] + ".wav", s["audio"][::2], 8000)
  c = real_cfg(world)
  c.data.lrs3.update(dict(root=root, lip_root=root + "_lips"))
  c.data.lrs3.splits.train = "trainval"
  with pytest.raises(DataError, match="8000 Hz") as e:
    data_lib.sources(c.data, "train")["speech"][0]
  assert e.value.path == mp4[:-4] + ".wav"
  c.data.lrs3.resample = True
  assert abs(len(data_lib.sources(c.data, "train")["speech"][0]["audio"]) - len(s["audio"])) <= 2
  # empty transcripts: the LRS3 .txt, the How2Sign CSV
  with open(mp4[:-4] + ".txt", "w") as f:
    f.write("Text:  \nConf:  4\n")
  with pytest.raises(DataError, match="empty transcript") as e:
    data_lib.sources(c.data, "train")
  assert e.value.path == mp4[:-4] + ".txt"
  h2s = str(tmp_path / "h2s")
  layouts.write_how2sign(h2s, "train", [dict(world["signs"][0], text=" ")])
  c.data.how2sign.root = h2s
  with pytest.raises(DataError, match="empty transcript") as e:
    real_data.how2sign_source(c.data, "train")
  assert e.value.path == os.path.join(h2s, "how2sign_realigned_train.csv")
  # config errors: no lip_root for How2Sign, an unset split, a box outside the frame, a SynthCue-less tokenizer
  c = real_cfg(world)
  c.data.how2sign.lip_root = ""
  with pytest.raises(ConfigError, match="how2sign.lip_root"):
    data_lib.sources(c.data, "train")
  with pytest.raises(ConfigError, match=r"lrs3.splits\['validation'\]"):
    data_lib.sources(real_cfg(world).data, "validation")
  c = real_cfg(world, mouth_box=(200, 0, 96))
  with pytest.raises(ConfigError, match="mouth_box"):
    data_lib.check_data(c)
  c = real_cfg(world)
  c.tokenizer.path = ""
  with pytest.raises(ConfigError, match="tokenizer.path"):
    data_lib.tokenizer(c)


def test_babble_from_a_recording(world, tmp_path):
  """Real data: stage-2 babble reads data.babble_path (16 segments of one recording); without it the config is
  refused before any data is built, and --snr evaluation names the missing key."""
  cfg = real_cfg(world)
  cfg.data.babble_p = 0.75
  with pytest.raises(ConfigError, match="babble_path"):
    data_lib.check_data(cfg)
  with pytest.raises(ConfigError, match="babble_path"):
    data_lib.babble_pool(cfg.data)
  rec = np.random.default_rng(0).normal(0, 0.1, 16 * 16000 + 37).astype(np.float32)
  path = str(tmp_path / "babble.wav")
  media.write_wav(path, rec)
  cfg.data.babble_path = path
  data_lib.check_data(cfg)
  pool = data_lib.babble_pool(cfg.data)
  n = len(rec) // data_lib.BABBLE_POOL
  assert len(pool) == data_lib.BABBLE_POOL and all(len(p) == n for p in pool)
  back, _ = media.read_wav(path, sample_rate=16000)
  np.testing.assert_array_equal(np.concatenate(pool), np.asarray(back, np.float32).reshape(-1)[:16 * n])
  cfg.data.babble_path = str(tmp_path / "missing.wav")
  with pytest.raises(ConfigError, match="missing.wav"):
    data_lib.babble_pool(cfg.data)
