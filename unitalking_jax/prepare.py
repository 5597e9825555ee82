"""Encode clips once into UniTalking training latents (ArrayRecord shards + index; unitalking_jax/latents.py).

  python -m unitalking_jax.prepare --config configs/unitalking/tiny.py --layout lrs3 --root LRS3 --out LATENTS \
      [--split train] [--process_index i --process_count n] [--clips_per_shard 64] [--limit N]
  python -m unitalking_jax.train --config configs/unitalking/tiny.py --config.data.latents=LATENTS --workdir W

Layouts (--root): lrs3 (shared/data/layouts.py LRS3Reader: {split}/<ytid>/<NNNNN>.mp4 + .txt, audio from the
.wav beside or the mp4's track); folder (every <stem>.mp4 under root, recursively, with <stem>.txt: an LRS3
"Text:" line or plain text; <stem>.wav beside or the mp4's audio; --split ignored); synthcue (no files: the
config's SynthCue speech clips of --split, as the on-the-fly path builds them; --limit caps the count).

Per clip, as unitalking_jax/data.py's `prepare` does on the fly (that very function encodes): video resampled to
25 fps (nearest frame), the centre square scaled to data.frame_size, the first data.frames frames, the face
window of data.face_crop px located from the eye landmarks - the clip's own (<stem>_pose.npy, as our writers and
pose extraction leave them), else from --det_onnx / --pose_onnx (a local rtmlib YOLOX + RTMW whole-body model,
shared/data/pose.py, first frame; never downloaded), else a CENTRED crop; audio at 16 kHz; the config's codecs
(data.codecs: PCA codecs fitted on the config's SynthCue at tiny size, or the trained Wan / mel VAEs of
data.video_codec_path / data.audio_codec_path with data.video_codec="wan_vae", data.audio_codec="mel_vae"; the
index records which, with the sha256 of the codec files), text ids or UMT5 features, reference
tokens (the clip's own audio latents permuted, keyed on trainer.seed and the clip's index; truncated /
zero-padded to data.ref_len tokens when that is > 0).

Clips are listed in a fixed order (sorted files; SynthCue index); shard K holds clips [K c, (K+1) c); process i
of n writes shards i, i + n, ... (the union is what one process writes, byte for byte) and whichever finishes
the last shard writes index.json. Resumable: a finished shard (file complete and recorded) is skipped on rerun.
Clips and skipped files are named relative to --root (hosts may mount it at different paths).
Bad clips are skipped and counted by kind, the file named: empty_file (zero-byte mp4), no_audio (no .wav and no
audio track), empty_transcript, missing_transcript, no_pinyin (data.text="pinyin" needs pinyin: Chinese text
or a side file), undecodable, frame_count, face_crop (the window leaves the frame), missing, malformed.
A progress line with the rate and ETA every --log_every clips.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import math
import os
import time

import numpy as np

from shared.data import layouts
from shared.data.synthcue import FACE_UNIT
from shared.errors import ConfigError, DataError
from unitalking_jax import data as data_lib
from unitalking_jax import latents as lat

LAYOUTS = ("lrs3", "folder", "synthcue")
FPS, SAMPLE_RATE = 25, 16000   # data.MEL_PER_FRAME = 16000 / 25 / 160
log = logging.getLogger(__name__)


class Skip(Exception):
  def __init__(self, kind: str, path: str, message: str):
    super().__init__(f"{kind}: {message} ({path})")
    self.kind, self.path, self.message = kind, path, message


# ------------------------------------------------------------------------------------------ layouts

def _kind(e: DataError) -> str:
  kind = getattr(e, "kind", "undecodable")
  path = e.path or ""
  if path.endswith(".mp4") and os.path.isfile(path) and os.path.getsize(path) == 0:
    return "empty_file"
  if kind == "missing" and "audio" in str(e):
    return "no_audio"
  return kind


class _Recorded:
  """Mixin for LayoutReaders: every skip kept as (kind, path, message) with refined kinds."""

  def _bad(self, e: DataError):
    if not hasattr(e, "kind"):
      e.kind = "undecodable"
    if not self.skip:
      raise e
    self.records.append((_kind(e), e.path or "", str(e)))
    self.skipped[self.records[-1][0]] += 1


class _LRS3(_Recorded, layouts.LRS3Reader):
  def __init__(self, root, split, **kw):
    self.records = []
    super().__init__(root, split, **kw)


class FolderReader(_Recorded, layouts.LayoutReader):
  """Every <stem>.mp4 under root (recursive; our writers' <stem>_lip.mp4 / <stem>_video.mp4 side files left out)
  with <stem>.txt (an LRS3 "Text:" first line, else the whole file); audio from <stem>.wav or the mp4."""
  require_audio = True

  def __init__(self, root: str, **kw):
    self.records = []
    super().__init__(**kw)
    mp4s = sorted(glob.glob(os.path.join(root, "**", "*.mp4"), recursive=True))
    have = set(mp4s)
    mp4s = [m for m in mp4s if not any(m.endswith(f"_{s}.mp4") and m[:-len(s) - 5] + ".mp4" in have
                                       for s in ("lip", "video"))]
    if not mp4s:
      raise DataError("no .mp4 files under the folder", path=root)

    def make(mp4):
      txt = mp4[:-4] + ".txt"
      if not os.path.isfile(txt):
        raise layouts._err("missing_transcript", "no transcript beside the video", txt, "text")
      with open(txt, encoding="utf-8") as f:
        first = f.read()
      text = layouts.parse_lrs3_txt(txt)[0] if first.startswith("Text:") else first.strip()
      return layouts._Entry(mp4=mp4, wav=mp4[:-4] + ".wav", text=text, text_path=txt)
    for m in mp4s:
      self._add(lambda m=m: make(m))


class Clips:
  """A layout's clip listing: names [N], listing skips [(kind, path, message)], load(i) -> a SynthCue-like
  sample at 25 fps / 16 kHz (raises Skip)."""

  def __init__(self, cfg, layout: str, root: str, split: str, limit: int = 0, landmarks=None):
    if layout not in LAYOUTS:
      raise ConfigError(f"--layout {layout!r}: expected one of {LAYOUTS}")
    self.cfg, self.layout, self.landmarks = cfg, layout, landmarks
    if layout == "synthcue":
      self.src = data_lib.source(cfg, split)
      n = len(self.src) if not limit else min(limit, len(self.src))
      self.names = [f"synthcue/{split}/{i}" for i in range(n)]
      self.listing_skips = []
      return
    if not root or not os.path.isdir(root):
      raise ConfigError(f"--root {root!r}: not a directory (the {layout} dataset)")
    kw = dict(skip=True, sample_rate=SAMPLE_RATE, load_video=False)
    self.reader = _LRS3(root, split, **kw) if layout == "lrs3" else FolderReader(root, **kw)
    self.root = os.path.abspath(root)
    self.listing_skips = [(k, self.rel(p), self.rel_msg(m)) for k, p, m in self.reader.records]
    n = len(self.reader) if not limit else min(limit, len(self.reader))
    self.names = [self.rel(self.reader.entries[i]["mp4"]) for i in range(n)]

  def rel(self, path: str) -> str:
    """A file of the dataset relative to --root (hosts may mount it at different paths), else as given."""
    if not path or self.layout == "synthcue":
      return path
    r = os.path.relpath(os.path.abspath(path), self.root)
    return path if r.startswith("..") else r

  def rel_msg(self, message: str) -> str:
    return message if self.layout == "synthcue" else message.replace(self.root + os.sep, "")

  def __len__(self) -> int:
    return len(self.names)

  def load(self, i: int) -> dict:
    if self.layout == "synthcue":
      return self.src[i]
    before = len(self.reader.records)
    s = self.reader[i]
    if s is None:
      kind, path, msg = self.reader.records[before]
      raise Skip(kind, self.rel(path), self.rel_msg(msg))
    try:
      return conform(s, self.cfg, i, self.landmarks)
    except DataError as e:
      raise Skip(getattr(e, "kind", "malformed"), self.rel(e.path) or self.names[i], self.rel_msg(str(e))) from e


# ------------------------------------------------------------------------------------------ clip geometry

def _resize(frames: np.ndarray, size: int) -> np.ndarray:
  """[T, s, s, 3] uint8 -> [T, size, size, 3] (PIL bilinear with antialiasing; identity when equal)."""
  if frames.shape[1] == size:
    return frames
  from PIL import Image
  return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


def centre_pose(t: int) -> np.ndarray:
  """Landmarks [T, 20, 3] whose face window (data.face_crop) is centred in the frame: eyes 0.3 face units
  above the centre."""
  pose = np.zeros((t, 20, 3), np.float32)
  pose[:, 0:2, 0] = 0.5
  pose[:, 0:2, 1] = 0.5 - 0.3 * FACE_UNIT
  pose[:, 0:2, 2] = 1.0
  return pose


def detect_eyes(frame: np.ndarray, landmarks: tuple[str, str]) -> np.ndarray | None:
  """Eye centres [2, 2] (frame units, person's right then left) from a local rtmlib model pair on one
  frame, None when no face is found."""
  from shared.data import pose as pose_lib
  kp = pose_lib.extract_rtmlib(frame[None], landmarks[0], landmarks[1])
  face = kp["face"][0]
  if face[36:48, 2].min() <= 0:
    return None
  h, w = frame.shape[:2]
  eyes = np.stack([face[36:42, :2].mean(0), face[42:48, :2].mean(0)])
  return ((eyes + 0.5) / np.array([w, h], np.float32)).astype(np.float32)


def conform(sample: dict, cfg, clip: int, landmarks=None) -> dict:
  """A layout reader's sample -> what data.prepare takes: video at 25 fps, square data.frame_size frames,
  pose (eye landmarks: the clip's own, detected, or centred), audio 16 kHz, mouth_open (zeros unless the clip
  carries SynthCue's), pinyin, index (the clip's own SynthCue index when its side file has one, else its
  position in the listing)."""
  d = cfg.data
  path = sample.get("path", "")
  video = np.asarray(sample["video"])
  fps = float(sample.get("fps", FPS))
  if not fps > 0:
    raise DataError(f"video frame rate {fps}", path=path, key="fps")
  n = int(math.floor(video.shape[0] * FPS / fps + 1e-6)) if fps != FPS else video.shape[0]
  pick = np.minimum(np.round(np.arange(max(n, 1)) * fps / FPS).astype(int), video.shape[0] - 1)
  video = video[pick]
  t, h, w, _ = video.shape
  pose = sample.get("pose")
  if pose is not None:
    pose = np.asarray(pose, np.float32)[pick].copy()
  elif landmarks and int(d.get("face_crop", 0)):
    eyes = detect_eyes(video[0], landmarks)     # on the full-resolution first frame
    if eyes is None:
      raise layouts._err("face_crop", "the landmark model found no face in the first frame", path, "video")
    pose = centre_pose(t)
    pose[:, 0:2, :2] = eyes
  s = min(h, w)
  y0, x0 = (h - s) // 2, (w - s) // 2
  video = _resize(video[:, y0:y0 + s, x0:x0 + s], int(d.frame_size))
  if pose is None:
    pose = centre_pose(t)
  else:     # frame units of the centre square (scaling keeps them)
    pose[..., 0] = (pose[..., 0] * w - x0) / s
    pose[..., 1] = (pose[..., 1] * h - y0) / s
  out = dict(sample, video=video, pose=pose, fps=FPS)
  mo = np.asarray(sample.get("mouth_open", np.zeros(0)), np.float32)
  out["mouth_open"] = mo[pick[pick < mo.shape[0]]] if mo.size else np.zeros(t, np.float32)
  out["index"] = int(sample["index"]) if "index" in sample else int(clip)
  if data_lib.text_kind(cfg) == "pinyin" and not (sample.get("pinyin") or "").strip():
    raise layouts._err("no_pinyin", "data.text='pinyin' needs pinyin (Chinese text or a side file's); use "
                       "data.text='umt5' for other languages", sample.get("path", ""), "text")
  if sample.get("audio") is None:
    raise layouts._err("no_audio", "no audio", path, "audio")
  return out


# ------------------------------------------------------------------------------------------ prepare

def _plan(cfg, layout, root, split, clips: Clips, per_shard: int) -> dict:
  n_shards = max(1, math.ceil(len(clips) / per_shard))
  listing = hashlib.sha256("\n".join(clips.names).encode()).hexdigest()
  return {"format": lat.FORMAT, "layout": layout, "split": split, "clips": len(clips), "listing_sha256": listing,
          "clips_per_shard": per_shard, "shards": n_shards,
          "config_hash": lat.config_hash(cfg), "codec_config": lat.codec_config(cfg)}


def _check_plan(out: str, plan: dict):
  path = os.path.join(out, lat.PLAN)
  if os.path.isfile(path):
    old = lat.read_json(path)
    diff = sorted(k for k in plan if old.get(k) != plan[k])
    if diff:
      k = diff[0]
      raise ConfigError(f"--out {out}: already holds latents of another plan ({k}: {old.get(k)!r} there, "
                        f"{plan[k]!r} now; differing: {diff}): use another --out or delete it")
  else:
    lat.write_json(path, plan)


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def prepare(cfg, layout: str, root: str, out: str, *, split: str = "train", process_index: int = 0,
            process_count: int = 1, clips_per_shard: int = 64, log_every: int = 50, limit: int = 0,
            landmarks: tuple[str, str] | None = None, progress=None) -> dict:
  """Writes this process's shards of `layout`'s clips under `out` (resuming) and, when every shard is finished,
  index.json. Returns {"written": [shard names], "skipped_shards": [...], "clips": encoded here, "index": the
  index dict or None}. progress: a callable taking the progress line (default: logging)."""
  say = progress or log.info
  if not 0 <= process_index < process_count:
    raise ConfigError(f"--process_index {process_index} / --process_count {process_count}: need 0 <= i < n")
  if clips_per_shard < 1:
    raise ConfigError(f"--clips_per_shard {clips_per_shard}: expected >= 1")
  seed = int(cfg.trainer.seed)
  data_lib.text_kind(cfg)
  for flag, f in zip(("--det_onnx", "--pose_onnx"), landmarks or ()):
    if not os.path.isfile(f):
      raise ConfigError(f"{flag} {f}: no such file (a local rtmlib ONNX model; nothing is downloaded)")
  clips = Clips(cfg, layout, root, split, limit, landmarks)
  os.makedirs(out, exist_ok=True)
  plan = _plan(cfg, layout, root, split, clips, clips_per_shard)
  _check_plan(out, plan)
  n_shards = plan["shards"]
  mine = list(range(process_index, n_shards, process_count))
  todo = [k for k in mine if lat.shard_done(out, lat.shard_name(k, n_shards)) is None]
  total = sum(len(range(k * clips_per_shard, min((k + 1) * clips_per_shard, len(clips)))) for k in todo)
  say(f"prepare {layout} {root or split}: {len(clips)} clips in {n_shards} shards; process {process_index}/"
      f"{process_count}: {len(mine)} shards, {len(mine) - len(todo)} already finished, {total} clips to encode")
  codecs = data_lib.codecs(cfg) if todo else None
  done, bad, t0, written = 0, 0, time.perf_counter(), []
  for k in todo:
    name = lat.shard_name(k, n_shards)
    records, names, skipped, stats = [], [], [], lat.Stats()
    for i in range(k * clips_per_shard, min((k + 1) * clips_per_shard, len(clips))):
      try:
        sample = clips.load(i)
        try:
          ex = data_lib.prepare(sample, cfg, seed)
        except DataError as e:
          raise Skip(getattr(e, "kind", None) or ("face_crop" if "face crop" in str(e) else "encode"),
                     clips.rel(e.path) or clips.names[i], clips.rel_msg(str(e))) from e
        records.append(lat.encode_record(ex, clips.names[i], int(sample.get("index", i))))
        names.append(clips.names[i])
        stats.add(ex)
      except Skip as s:
        skipped.append({"kind": s.kind, "path": s.path, "message": s.message})
        bad += 1
      done += 1
      if done % log_every == 0 or done == total:
        el = time.perf_counter() - t0
        rate = done / max(el, 1e-9)
        say(f"prepare: {done}/{total} clips ({100.0 * done / max(total, 1):.1f}%), {rate:.2f} clips/s, "
            f"ETA {_eta((total - done) / max(rate, 1e-9))}, skipped {bad}")
    info = lat.write_shard(os.path.join(out, name + ".array_record"), records)
    lat.write_json(os.path.join(out, name + ".json"),
                   {"shard": k, "file": name + ".array_record", "records": len(records), "names": names,
                    "skipped": skipped, "stats": stats.to_json(), "config_hash": plan["config_hash"], **info})
    written.append(name)
  index = finalize(out, cfg, clips, plan, codecs)
  return {"written": written, "skipped_shards": [lat.shard_name(k, n_shards) for k in mine if k not in todo],
          "clips": done, "index": index}


def codec_identity(cfg, codecs) -> dict:
  """latents.codec_identity for the config's codecs: the PCA arrays' hash, or the trained VAEs' files."""
  if getattr(codecs, "kind", "pca") == "vae":
    return lat.codec_identity(cfg, dirs=data_lib.vae_codec_dirs(cfg))
  return lat.codec_identity(cfg, codecs.arrays())


def finalize(out: str, cfg, clips: Clips, plan: dict, codecs=None) -> dict | None:
  """index.json from every shard's sidecar, when all are finished (else None)."""
  n = plan["shards"]
  metas = [lat.shard_done(out, lat.shard_name(k, n)) for k in range(n)]
  if any(m is None for m in metas):
    return None
  codecs = codecs or data_lib.codecs(cfg)
  stats = lat.Stats()
  skipped = [{"kind": k, "path": p, "message": m} for k, p, m in clips.listing_skips]
  for m in metas:
    stats.merge(lat.Stats(m["stats"]))
    skipped += m["skipped"]
  counts: dict = {}
  for s in skipped:
    counts[s["kind"]] = counts.get(s["kind"], 0) + 1
  shapes = {}
  first = next((m for m in metas if m["records"]), None)
  if first is not None:
    from grain import sources as gs
    rec = lat.decode_record(gs.ArrayRecordDataSource([os.path.join(out, first["file"])])[0],
                            int(cfg.data.text_len))
    shapes = {k: {"shape": list(np.shape(rec[k])), "dtype": str(np.asarray(rec[k]).dtype)}
              for k in ("video", "audio", "text", "text_mask", "ref", "mouth_open")}
  index = {"format": lat.FORMAT, "layout": plan["layout"], "split": plan["split"],
           "listing_sha256": plan["listing_sha256"],
           "clips": plan["clips"] + len(clips.listing_skips), "records": sum(m["records"] for m in metas),
           "clips_per_shard": plan["clips_per_shard"], "fps": FPS, "sample_rate": SAMPLE_RATE,
           "shards": [{"file": m["file"], "records": m["records"], "bytes": m["bytes"], "sha256": m["sha256"]}
                      for m in metas],
           "skipped": dict(sorted(counts.items())), "skipped_files": skipped, "stats": stats.summary(),
           "shapes": shapes, "codec": codec_identity(cfg, codecs),
           "codec_config": lat.codec_config(cfg), "config_hash": plan["config_hash"]}
  lat.write_json(os.path.join(out, lat.INDEX), index)
  return index


# ------------------------------------------------------------------------------------------ CLI

def _flags():
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "UniTalking config file (its data and codec sections).",
                                  lock_config=True)
  flags.DEFINE_enum("layout", None, list(LAYOUTS), "Dataset layout of --root.")
  flags.DEFINE_string("root", "", "Dataset directory (not needed for --layout synthcue).")
  flags.DEFINE_string("out", None, "Latents directory to write (rerun to resume).")
  flags.DEFINE_string("split", "train", "Split to prepare (lrs3: the {split}/ folder; synthcue: the split).")
  flags.DEFINE_integer("process_index", 0, "This process's index i: it writes shards i, i + n, ...")
  flags.DEFINE_integer("process_count", 1, "Number of preparing processes n.")
  flags.DEFINE_integer("clips_per_shard", 64, "Clips per shard (the unit of resumption and of sharing out).")
  flags.DEFINE_integer("log_every", 50, "A progress line every this many clips.")
  flags.DEFINE_integer("limit", 0, "Prepare only the first N clips of the listing (0: all).")
  flags.DEFINE_string("det_onnx", "", "Local rtmlib person-detector ONNX (with --pose_onnx: landmark crops).")
  flags.DEFINE_string("pose_onnx", "", "Local rtmlib RTMW / DWPose whole-body ONNX (with --det_onnx).")
  flags.mark_flags_as_required(["config", "layout", "out"])
  return flags.FLAGS


def main():
  from shared import cli
  f = cli.FLAGS
  if bool(f.det_onnx) != bool(f.pose_onnx):
    raise ConfigError("--det_onnx and --pose_onnx go together (a local rtmlib detector + whole-body model)")
  landmarks = (f.det_onnx, f.pose_onnx) if f.det_onnx else None
  out = cli.make_dir(f.out, "--out")
  res = prepare(f.config, f.layout, f.root, out, split=f.split, process_index=f.process_index,
                process_count=f.process_count, clips_per_shard=f.clips_per_shard, log_every=f.log_every,
                limit=f.limit, landmarks=landmarks)
  idx = res["index"]
  if idx is None:
    print(f"wrote {len(res['written'])} shards; index.json follows when every process has finished", flush=True)
  else:
    print(f"{out}: {idx['records']} clips encoded of {idx['clips']}, skipped {idx['skipped']}", flush=True)


if __name__ == "__main__":
  from shared import cli as _cli
  _flags()
  _cli.run(main)
