"""UniTalking latent preparation (unitalking_jax/prepare.py) and training from the shards (unitalking_jax/latents.py).

An LRS3 folder of 8 SynthCue clips written by shared/data/layouts.write_lrs3, three of them broken (a zero-byte
mp4, an mp4 without audio and no wav, a transcript without text): exactly those are skipped and counted with their
files, the rest encoded as data.prepare encodes the original clips; a prepare killed mid-way and rerun does not
rewrite its finished shards and ends with the same dataset; two processes write what one writes. SynthCue latents
give the on-the-fly path's batches bit for bit (same clips, order and seed; the iterator state restores exactly),
with no codec running; the same losses step for step over 50 trainer steps is benchmarks/unitalking_prepare.py's
check (two trainer compiles are too slow for the suite)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs.unitalking.tiny import get_config
from shared.data import layouts, media
from shared.errors import ConfigError
from unitalking_jax import data as data_lib
from unitalking_jax import latents as lat
from unitalking_jax import prepare as prep
from unitalking_jax.task import make_task

N_CLIPS = 8


def small_config():
  cfg = get_config()
  cfg.data.update(dict(frames=8, pca_fit_samples=12, num_samples=12))
  cfg.model.video.update(dict(num_attention_heads=2, attention_head_dim=16, num_layers=1, ffn_dim=64, freq_dim=32,
                              text_dim=16))
  cfg.model.audio_ffn_dim = 64
  cfg.trainer.update(dict(total_steps=4, batch_size=4, log_every=1, sample_every=0))
  cfg.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  cfg.trainer.schedule.warmup_steps = 1
  return cfg


@pytest.fixture(scope="module")
def lrs3(tmp_path_factory):
  """(cfg, root, mp4 paths, the SynthCue samples, {kind: broken file})."""
  cfg = small_config()
  root = str(tmp_path_factory.mktemp("lrs3"))
  src = data_lib.source(cfg, "train")
  samples = [src[i] for i in range(N_CLIPS)]
  paths = layouts.write_lrs3(root, "train", samples)
  listed = sorted(paths)    # the reader's order (sorted transcripts)
  empty, no_audio, no_text = listed[1], listed[4], listed[6]
  open(empty, "wb").close()
  s = samples[paths.index(no_audio)]
  media.write_mp4(no_audio, s["video"], 25, None)
  os.remove(no_audio[:-4] + ".wav")
  with open(no_text[:-4] + ".txt", "w") as f:
    f.write("Text:  \nConf:  4\n\nWORD START END ASDSCORE\n")
  broken = {"empty_file": empty, "no_audio": no_audio, "empty_transcript": no_text[:-4] + ".txt"}
  return cfg, root, paths, samples, broken


def records(out):
  idx = lat.read_index(out)
  from grain import sources
  files = [os.path.join(out, s["file"]) for s in idx["shards"] if s["records"]]
  return [lat.decode_record(r, 8) for r in sources.ArrayRecordDataSource(files)]


def shard_bytes(out):
  return {f: open(os.path.join(out, f), "rb").read() for f in sorted(os.listdir(out)) if f.endswith(".array_record")}


def test_lrs3_skips_counted_rest_encoded_resume_and_two_processes(lrs3, tmp_path, monkeypatch):
  cfg, root, paths, samples, broken = lrs3
  one = str(tmp_path / "one")
  lines = []
  res = prep.prepare(cfg, "lrs3", root, one, clips_per_shard=2, log_every=2, progress=lines.append)
  idx = res["index"]
  # exactly the three broken clips skipped, each counted by kind with its file named
  assert idx["skipped"] == {"empty_file": 1, "empty_transcript": 1, "no_audio": 1}, idx["skipped"]
  assert {s["kind"]: os.path.join(root, s["path"]) for s in idx["skipped_files"]} == broken   # relative to root
  assert idx["clips"] == N_CLIPS and idx["records"] == N_CLIPS - 3
  assert len(idx["shards"]) == 4 and sum(s["records"] for s in idx["shards"]) == 5   # 7 listed clips / 2
  assert any("ETA" in l for l in lines) and "7/7 clips" in lines[-1] and "skipped 2" in lines[-1]
  assert idx["codec"]["config_hash"] == lat.config_hash(cfg) and len(idx["codec"]["arrays_sha256"]) == 64
  assert idx["shapes"]["video"]["shape"] == [8, 4, 4, 24] and idx["stats"]["video"]["channels"] == 24
  # the rest encoded as data.prepare encodes the original clips: audio (from the float wav), text, the
  # reference (same clip index) and mouth_open exactly; video through h264 (crf 18) and the same eye-landmark crop
  recs = records(one)
  assert [os.path.join(root, r["name"]) for r in recs] == [p for p in sorted(paths) if p not in broken.values()
                                                          and p[:-4] + ".txt" not in broken.values()]
  codec = data_lib.codecs(cfg)
  for r in recs:
    sample = samples[paths.index(os.path.join(root, r["name"]))]
    want = data_lib.prepare(sample, cfg, cfg.trainer.seed)
    for k in ("audio", "text", "text_mask", "ref", "mouth_open"):
      np.testing.assert_array_equal(r[k], want[k], err_msg=k)
    # pixels of the decoded latents: h264 costs ~3-4 levels of 255; the crop 2 px off would cost ~11-17
    got, ref = codec.decode_video(r["video"]).astype(float), codec.decode_video(want["video"]).astype(float)
    shifted = dict(sample, pose=sample["pose"] + np.array([2 / 80, 0, 0], np.float32))
    off = data_lib.clip_video(shifted, cfg).astype(float)
    assert np.abs(got - ref).mean() < 6.0 and np.abs(got - ref).mean() < 0.5 * np.abs(off - ref).mean()
  # statistics are those of the records
  v = np.concatenate([r["video"].reshape(-1, 24) for r in recs])
  np.testing.assert_allclose(idx["stats"]["video"]["mean"], v.mean(0), atol=1e-5)
  np.testing.assert_allclose(idx["stats"]["video"]["std"], v.std(0), atol=1e-4)

  # the folder layout (every mp4 with its .txt) over the same files: the same skips, the same shards
  folder = prep.prepare(cfg, "folder", root, str(tmp_path / "folder"), clips_per_shard=2, progress=lambda l: None)
  assert folder["index"]["skipped_files"] == idx["skipped_files"]
  assert shard_bytes(str(tmp_path / "folder")) == shard_bytes(one)

  # killed mid-way (after clip 3 of 7: shard 0 finished, shard 1 half done, a torn .tmp), then rerun
  resumed = str(tmp_path / "resumed")

  def kill(line):
    if line.startswith("prepare: 3/"):
      open(os.path.join(resumed, lat.shard_name(1, 4) + ".array_record.tmp"), "wb").write(b"torn")
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    prep.prepare(cfg, "lrs3", root, resumed, clips_per_shard=2, log_every=1, progress=kill)
  assert not os.path.exists(os.path.join(resumed, lat.INDEX))
  first = os.path.join(resumed, lat.shard_name(0, 4) + ".array_record")
  stamp = os.stat(first).st_mtime_ns, os.stat(first[:-13] + ".json").st_mtime_ns
  calls = []
  real = data_lib.prepare
  monkeypatch.setattr(data_lib, "prepare", lambda *a, **k: calls.append(1) or real(*a, **k))
  res2 = prep.prepare(cfg, "lrs3", root, resumed, clips_per_shard=2, log_every=100, progress=lambda l: None)
  assert res2["skipped_shards"] == [lat.shard_name(0, 4)] and len(res2["written"]) == 3
  assert (os.stat(first).st_mtime_ns, os.stat(first[:-13] + ".json").st_mtime_ns) == stamp
  assert len(calls) == 4 and res2["clips"] == 5   # listed clips 2..6, one without audio
  assert shard_bytes(resumed) == shard_bytes(one) and res2["index"] == {**idx}
  assert not [f for f in os.listdir(resumed) if f.endswith(".tmp")]
  # a rerun of a finished dataset encodes nothing; another plan in the same --out is refused
  calls.clear()
  assert prep.prepare(cfg, "lrs3", root, resumed, clips_per_shard=2, progress=lambda l: None)["written"] == []
  assert not calls
  with pytest.raises(ConfigError, match="clips_per_shard"):
    prep.prepare(cfg, "lrs3", root, resumed, clips_per_shard=3, progress=lambda l: None)

  # two processes (shards 0, 2 and 1, 3) == one process: same shard files, same index
  two = str(tmp_path / "two")
  a = prep.prepare(cfg, "lrs3", root, two, process_index=0, process_count=2, clips_per_shard=2,
                   progress=lambda l: None)
  assert a["index"] is None and a["written"] == [lat.shard_name(0, 4), lat.shard_name(2, 4)]
  with pytest.raises(ConfigError, match="prepare has not finished"):
    lat.read_index(two)
  b = prep.prepare(cfg, "lrs3", root, two, process_index=1, process_count=2, clips_per_shard=2,
                   progress=lambda l: None)
  assert b["written"] == [lat.shard_name(1, 4), lat.shard_name(3, 4)]
  assert shard_bytes(two) == shard_bytes(one)
  assert json.load(open(os.path.join(two, lat.INDEX))) == json.load(open(os.path.join(one, lat.INDEX)))


def test_synthcue_latents_train_as_on_the_fly(tmp_path, monkeypatch):
  cfg = small_config()
  out = str(tmp_path / "latents")
  idx = prep.prepare(cfg, "synthcue", "", out, clips_per_shard=5, progress=lambda l: None)["index"]
  assert idx["records"] == 12 and idx["skipped"] == {} and len(idx["shards"]) == 3
  fly_cfg, lat_cfg = small_config(), small_config()
  lat_cfg.data.latents = out
  fly_it = make_task(fly_cfg).make_train_iter()
  fly = [next(fly_it) for _ in range(6)]           # 2 epochs of 12 clips, batch 4
  data_lib._CODECS.clear()                          # no codec may run in the latent loop
  monkeypatch.setattr(data_lib, "codecs", lambda cfg: (_ for _ in ()).throw(AssertionError("codec ran")))
  lat_task = make_task(lat_cfg)
  it = lat_task.make_train_iter()
  got = [next(it) for _ in range(3)]
  state = it.get_state()
  got += [next(it) for _ in range(3)]
  for f, g in zip(fly, got):
    assert f.keys() == g.keys()
    for k in f:
      assert f[k].dtype == g[k].dtype and np.array_equal(f[k], g[k]), k
  it2 = lat_task.make_train_iter()                  # the iterator checkpoint restores exactly
  it2.set_state(state)
  assert all(np.array_equal(next(it2)["video"], g["video"]) for g in got[3:])
  monkeypatch.undo()
  # (the same batches give the same losses; benchmarks/unitalking_prepare.py trains 50 steps both ways through
  # shared.train and compares the losses step for step: two trainer compiles are too slow for this file)
  # another training seed: the reference tokens are those data.prepare draws with that seed
  seed_cfg = small_config()
  seed_cfg.trainer.seed = 5
  assert np.array_equal(lat.LatentSource(out, seed_cfg)[3]["ref"],
                        data_lib.prepare(data_lib.source(seed_cfg)[3], seed_cfg, 5)["ref"])
  # latents of another codec config are refused, naming the key
  lat_cfg.data.video_pca = 16
  with pytest.raises(ConfigError, match="data.video_pca"):
    make_task(lat_cfg).make_train_iter()


def test_conform_fps_geometry_and_centred_crop():
  """Clip -> what data.prepare takes: 50 fps -> 25 (every other frame), the centre square of a 120x160 frame
  scaled to frame_size, eye landmarks moved with it; without landmarks the face window is the frame centre."""
  cfg = small_config()
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (20, 120, 160, 3), dtype=np.uint8)
  pose = np.zeros((20, 20, 3), np.float32)
  pose[:, 0:2, :2] = [[0.45, 0.4], [0.55, 0.4]]
  s = dict(video=video, pose=pose, audio=np.zeros(12800, np.float32), fps=50.0, text="t", pinyin="ma", path="c.mp4")
  out = prep.conform(s, cfg, 7)
  from PIL import Image
  want = np.stack([np.asarray(Image.fromarray(f[:, 20:140]).resize((80, 80), Image.BILINEAR)) for f in video[::2]])
  np.testing.assert_array_equal(out["video"], want)
  np.testing.assert_allclose(out["pose"][0, 0:2, :2], [[(0.45 * 160 - 20) / 120, 0.4], [(0.55 * 160 - 20) / 120, 0.4]],
                             atol=1e-6)
  assert out["index"] == 7 and out["mouth_open"].shape == (10,) and not out["mouth_open"].any()
  crop = data_lib.clip_video(prep.conform({k: v for k, v in s.items() if k != "pose"}, cfg, 0), cfg)
  np.testing.assert_array_equal(crop, want[:8, 24:56, 24:56])   # centred 32 px window of the 80 px frame
  with pytest.raises(ConfigError, match="--det_onnx"):
    prep.prepare(cfg, "synthcue", "", "/nonexistent/out", landmarks=("/no/det.onnx", "/no/pose.onnx"))


def test_umt5_record_keeps_only_real_rows_and_restores_the_zeros():
  rng = np.random.default_rng(0)
  text = np.zeros((8, 16), np.float32)
  text[:3] = rng.normal(size=(3, 16))
  ex = dict(video=np.ones((2, 1, 1, 4), np.float32), audio=np.ones((8, 2), np.float32), ref=np.ones((2, 8), np.float32),
            mouth_open=np.zeros(2, np.float32), text=text, text_mask=np.arange(8) < 3)
  data = lat.encode_record(ex, "a/b.mp4", 5)
  back = lat.decode_record(data, 8)
  assert back["name"] == "a/b.mp4" and back["index"] == 5
  for k in ex:
    assert back[k].dtype == ex[k].dtype and np.array_equal(back[k], ex[k]), k
  assert len(data) < len(lat.encode_record(dict(ex, text=np.ones((8, 16), np.float32), text_mask=np.ones(8, bool)),
                                           "a/b.mp4", 5)) - 4 * 16 * 4
