"""Real data for the tri-modal system (data.source = "how2sign+lrs3"): How2Sign for SLT, LRS3 for VSR / ASR / AVSR.

`sources(data, split)` -> {"sign": How2SignSource, "speech": LRS3Source}: random-access sources (len, getitem) of
the SAME sample dicts trimodal_jax/data.py's `prepare` reads from SynthCue, so prepare / collate / train_iterator
run unchanged:
  sign   (How2Sign sentence clips, SLT)  video [T, F, F, 3] uint8 RGB (F = data.sign_frame_size), lip [T, h, w]
         uint8 grey mouth crop, text, path, fps, index. No audio is read.
  speech (LRS3 utterances, VSR / ASR / AVSR)  lip [T, h, w] uint8, audio [S] float32 16 kHz, text, path, fps,
         sample_rate, index. The face video is decoded only without a mouth-ROI directory (the fixed box below).
  h = w = data.lip_size (crops of another size are resized to it, bilinear); prepare crops data.crop of it.
Paper sizes (papers/trimodal_sign_lip_audio.txt § IV-B, SPECS.md § Tri-modal): 25 fps, 16 kHz, 96 x 96 mouth
patches (random / centre crop 88), sign frames 224 x 224 for the Video Swin-T.

How2Sign (data.how2sign; layout of shared.data.layouts.How2SignReader: how2sign_realigned_{split}.csv + clips
sentence_level/{split}/rgb_front/raw_videos/<SENTENCE_NAME>.mp4):
  video  the rgb_front clip, centre square crop (the full height of the 1280 x 720 frame: the signer stands in
         the middle) then resized to data.sign_frame_size (PIL bilinear with antialiasing). An approximation: the
         paper crops the signer region following LiTFiC [65] (a person box), which we do not run.
  lip    how2sign.lip_root/<the clip's path relative to how2sign.root>: mouth-ROI mp4s prepared offline with a
         facial landmark detector (the paper: RetinaFace landmarks -> 96 x 96 patches, as LiTFiC does); required
         (DataError naming the missing file), same frame count as the clip after the frame-rate step.
  text   the CSV's SENTENCE, as given (cased, punctuated English).
LRS3 (data.lrs3; layouts.LRS3Reader: {split}/<ytid>/<NNNNN>.mp4 + .txt "Text:  WORDS"):
  lip    lrs3.lip_root/<the clip's path relative to lrs3.root> (auto_avsr / AV-HuBERT-style pre-cropped 96 x 96
         mouth mp4s) or, with lip_root "", a FIXED box lrs3.mouth_box = (top, left, size) in pixels of the 224 x 224
         face-aligned LRS3 frame (scaled to the frame's size), converted to grey: an approximation of a landmark
         crop (the face is centred in LRS3's frames, the mouth is not tracked).
  audio  the .wav beside the mp4 when there is one, else the mp4's own audio track (decoded alone: no video
         frame is decoded for it); at data.sample_rate, or resampled when lrs3.resample (else a file at another
         rate is a DataError naming it: LRS3 is 16 kHz, a different rate means a wrong file).
  text   the "Text:" line, lower-cased when lrs3.lowercase (LRS3 is upper case; the paper does not say which case
         its targets have: ours, lower case, nearer the text LLaMA was trained on), else as given.
Frame rate: clips not at data.fps are resampled to it by nearest frame in time (the paper resamples to 25 fps).
Precomputed sign features (data.sign_features set: trimodal_jax/data.py, trimodal_jax/extract.py): the How2Sign
source reads the lips and the text only (load_video False: no rgb_front frame is decoded; the CSV duration is
checked against the lip clip); data.SignFeatures adds the clip's features, found by `clip_name(i)` = the clip's
file stem (<SENTENCE_NAME>), the name trimodal_jax.extract writes; the extraction itself reads the How2Sign
frames alone (how2sign_source(lips=False): neither the mouth-ROI videos nor LRS3 are needed for it).

Splits: the system asks for "train", "validation" and data.eval_split; how2sign.splits / lrs3.splits map these to
the datasets' directories ("a+b" concatenates; "" = not available: ConfigError when asked for). Paper: How2Sign
train / val / test (31,128 / 1,741 / 2,322 sentences); LRS3 pretrain + trainval (151K utterances) / test (1,321).
LRS3 has no validation split (AV-HuBERT holds out 1,200 trainval clips): "" by default, point it at such a copy.

Indices: both sources have the same len() = the larger of the two datasets (prepare indexes either with the same
clip index); index i reads clip i mod n of each, so an epoch of train_iterator covers both datasets, the smaller
one repeated. `n_clips` is a source's own count. Bad files raise DataError naming the file (missing lip mp4,
undecodable media, frame-count mismatch, sample rate, empty transcript: the last at construction).
"""
from __future__ import annotations

import os

import numpy as np

from shared.data import layouts, media
from shared.errors import ConfigError, DataError

SOURCE = "how2sign+lrs3"
SPLITS = ("train", "validation", "test")
LRS3_FRAME = 224             # LRS3's face-aligned frames are 224 x 224 (mouth_box is in these pixels)


def how2sign_section(**kw) -> dict:
  """data.how2sign defaults (paper.py)."""
  return {"root": "", "lip_root": "", "splits": {"train": "train", "validation": "val", "test": "test"},
          "duration_tol": 0.25, **kw}


def lrs3_section(**kw) -> dict:
  """data.lrs3 defaults (paper.py). mouth_box (top, left, size): a 96 px box around the mouth of a 224 x 224
  face-aligned frame (rows 112-207, columns 64-159), used only with lip_root ""."""
  return {"root": "", "lip_root": "", "splits": {"train": "pretrain+trainval", "validation": "", "test": "test"},
          "mouth_box": (112, 64, 96), "lowercase": True, "resample": False, **kw}


# ----------------------------------------------------------------------------- checks

def check(d):
  """ConfigError for a malformed how2sign / lrs3 section (roots are checked when a source is built)."""
  for name in ("how2sign", "lrs3"):
    if name not in d:
      raise ConfigError(f"data.source={SOURCE!r} needs data.{name} (trimodal_jax/real_data.py {name}_section)")
    sec = d[name]
    for key in ("root", "lip_root", "splits"):
      if key not in sec:
        raise ConfigError(f"data.{name}.{key} is missing")
    bad = sorted(set(sec.splits) - set(SPLITS))
    if bad:
      raise ConfigError(f"data.{name}.splits has {bad}; expected keys from {SPLITS}")
  top, left, size = (int(x) for x in d.lrs3.mouth_box)
  if size < 1 or top < 0 or left < 0 or top + size > LRS3_FRAME or left + size > LRS3_FRAME:
    raise ConfigError(f"data.lrs3.mouth_box={tuple(d.lrs3.mouth_box)}: expected (top, left, size) inside the "
                      f"{LRS3_FRAME} x {LRS3_FRAME} LRS3 frame")
  if float(d.fps) <= 0:
    raise ConfigError(f"data.fps={d.fps}: expected > 0")


def _dirs(d, name: str, split: str) -> list[str]:
  sec = d[name]
  root = str(sec.root or "")
  if not root:
    raise ConfigError(f"data.{name}.root is empty: the {name} directory is needed for split {split!r}")
  if not os.path.isdir(root):
    raise DataError(f"data.{name}.root is not a directory", path=root)
  mapped = str(sec.splits.get(split, "") or "")
  if not mapped:
    raise ConfigError(f"data.{name}.splits[{split!r}] is not set: which {name} split(s) serve as {split!r}")
  return [s for s in mapped.split("+") if s]


# ----------------------------------------------------------------------------- frames

def _resize(frames: np.ndarray, size: int) -> np.ndarray:
  """[T, H, W(, 3)] uint8 -> [T, size, size(, 3)] uint8 (PIL bilinear, antialiased when shrinking)."""
  if frames.shape[1] == size and frames.shape[2] == size:
    return np.asarray(frames, np.uint8)
  from PIL import Image
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((size, size), Image.BILINEAR))
                   for f in frames]).astype(np.uint8)


def center_square(frames: np.ndarray) -> np.ndarray:
  """[T, H, W, ...] -> the centred min(H, W) square [T, S, S, ...]."""
  h, w = frames.shape[1:3]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  return frames[:, top:top + s, left:left + s]


def sign_video(frames: np.ndarray, size: int) -> np.ndarray:
  """RGB clip [T, H, W, 3] uint8 -> [T, size, size, 3] uint8: centre square crop, then resized."""
  return _resize(center_square(frames), size)


def mouth_box(frames: np.ndarray, box) -> np.ndarray:
  """Face frames [T, H, W(, 3)] -> grey [T, s, s] uint8: `box` (top, left, size) of a 224 x 224 frame, scaled to
  H x W (ITU-R 601 luma when RGB)."""
  h, w = frames.shape[1:3]
  top, left, size = (int(x) for x in box)
  y0, x0 = round(top * h / LRS3_FRAME), round(left * w / LRS3_FRAME)
  y1, x1 = round((top + size) * h / LRS3_FRAME), round((left + size) * w / LRS3_FRAME)
  crop = frames[:, y0:y1, x0:x1]
  if crop.ndim == 4:
    crop = np.clip(np.round(crop.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)), 0, 255)
  return crop.astype(np.uint8)


def to_fps(frames: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
  """Nearest frame in time: [T, ...] at fps_in -> [round(T fps_out / fps_in), ...] at fps_out."""
  if not np.isfinite(fps_in) or abs(fps_in - fps_out) < 1e-3:
    return frames
  n = max(1, int(round(frames.shape[0] * fps_out / fps_in)))
  idx = np.minimum(np.floor(np.arange(n) * fps_in / fps_out + 1e-6).astype(np.int64), frames.shape[0] - 1)
  return frames[idx]


def decode_video(path: str, per_frame=None, *, gray: bool = False) -> tuple[np.ndarray, float]:
  """The video stream of an mp4 alone, `per_frame` ([1, H, W(, 3)] -> [1, ...]) applied to each decoded frame as it
  comes (a How2Sign frame is 1280 x 720: crop / resize before stacking, not after) -> (frames [T, ...] uint8, fps).
  The audio stream is not decoded. DataError naming the file when it is missing or undecodable."""
  from shared.data.media import read_mp4
  one = None if per_frame is None else (lambda x: per_frame(x[None])[0])
  m = read_mp4(path, gray=gray, with_audio=False, per_frame=one)
  return m.frames.astype(np.uint8), m.fps


def read_lip(path: str, d, t: int | None = None) -> np.ndarray:
  """A mouth-ROI mp4 -> [T, lip_size, lip_size] uint8 at data.fps; DataError naming it when missing or when its
  frame count differs from t."""
  if not os.path.isfile(path):
    raise DataError("mouth-ROI video does not exist (prepare the lip_root with a landmark detector)", path=path,
                    key="lip")
  frames, fps = decode_video(path, lambda x: _resize(x, int(d.lip_size)), gray=True)
  lip = to_fps(frames, fps, float(d.fps))
  if t is not None and lip.shape[0] != t:
    raise DataError(f"mouth-ROI video has {lip.shape[0]} frames at {d.fps} fps, the clip has {t}", path=path,
                    key="lip")
  return lip


def read_audio_track(path: str) -> tuple[np.ndarray, int]:
  """The audio stream of an mp4 alone (no video frame decoded) -> ([S] float32 mono, sample rate)."""
  got = media.read_audio(path)
  if got is None:
    raise DataError("no .wav beside the video and no audio track in it", path=path, key="audio")
  return got


# ----------------------------------------------------------------------------- sources

class _Source:
  """Entries of one dataset's reader(s); len() may be set larger (indices wrap: module docstring)."""

  def __init__(self, readers, d, root: str, lip_root: str):
    self.entries = [e for r in readers for e in r.entries]
    if not self.entries:
      raise DataError("no clips found", path=root)
    self.d, self.root, self.lip_root = d, root, lip_root
    self.n_clips = len(self.entries)
    self.length = self.n_clips

  def __len__(self) -> int:
    return self.length

  def lip_path(self, mp4: str) -> str:
    return os.path.join(self.lip_root, os.path.relpath(mp4, self.root))

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    if not 0 <= i < self.length:
      raise IndexError(f"index {i} out of range for {self.length} clips")
    return self.load(self.entries[i % self.n_clips], i)


class How2SignSource(_Source):
  """How2Sign sentence clips for SLT (module docstring). load_video False: lips + text only (precomputed sign
  features); load_lip False: video + text only (trimodal_jax.extract)."""
  load_video = True
  load_lip = True

  def clip_name(self, i: int) -> str:
    """Clip i's feature name: its mp4's file stem (How2Sign's SENTENCE_NAME)."""
    return os.path.splitext(os.path.basename(self.entries[int(i) % self.n_clips]["mp4"]))[0]

  def load(self, e, index: int) -> dict:
    d = self.d
    if not self.load_video:
      lip = read_lip(self.lip_path(e["mp4"]), d)
      dur = e.get("duration")
      if dur is not None and abs(lip.shape[0] / float(d.fps) - dur) > float(d.how2sign.duration_tol):
        raise DataError(f"mouth-ROI clip lasts {lip.shape[0] / float(d.fps):.2f} s, the CSV says {dur:.2f} s",
                        path=self.lip_path(e["mp4"]), key="lip")
      return {"lip": lip, "text": str(e["text"]).strip(), "path": e["mp4"], "fps": float(d.fps), "index": index}
    frames, fps = decode_video(e["mp4"], lambda x: sign_video(x, int(d.sign_frame_size)))
    dur = e.get("duration")
    if dur is not None and abs(frames.shape[0] / fps - dur) > float(d.how2sign.duration_tol):
      raise DataError(f"clip lasts {frames.shape[0] / fps:.2f} s, the CSV says {dur:.2f} s", path=e["mp4"])
    video = to_fps(frames, fps, float(d.fps))
    out = {"video": video, "text": str(e["text"]).strip(), "path": e["mp4"], "fps": float(d.fps), "index": index}
    if self.load_lip:
      out["lip"] = read_lip(self.lip_path(e["mp4"]), d, video.shape[0])
    return out


class LRS3Source(_Source):
  """LRS3 utterances for VSR / ASR / AVSR (module docstring)."""

  def _audio(self, e) -> np.ndarray:
    d, sr_want = self.d, int(self.d.sample_rate)
    wav = e["wav"] if e["wav"] and os.path.isfile(e["wav"]) else None
    if wav is not None:
      audio, sr = media.read_wav(wav)
    else:
      audio, sr = read_audio_track(e["mp4"])
    if sr != sr_want:
      if not bool(d.lrs3.resample):
        raise DataError(f"audio at {sr} Hz, expected {sr_want} Hz (data.lrs3.resample=False)",
                        path=wav or e["mp4"], key="audio")
      audio = media.resample(audio, sr, sr_want)
    if audio.size == 0:
      raise DataError("empty audio", path=wav or e["mp4"], key="audio")
    return np.asarray(audio, np.float32)

  def load(self, e, index: int) -> dict:
    d = self.d
    if self.lip_root:
      lip = read_lip(self.lip_path(e["mp4"]), d)
    else:   # the fixed mouth box of the face video (an approximation: module docstring)
      frames, fps = decode_video(e["mp4"], lambda x: _resize(mouth_box(x, d.lrs3.mouth_box), int(d.lip_size)))
      lip = to_fps(frames, fps, float(d.fps))
    text = str(e["text"]).strip()
    return {"lip": lip, "audio": self._audio(e), "text": text.lower() if d.lrs3.lowercase else text,
            "path": e["mp4"], "fps": float(d.fps), "sample_rate": int(d.sample_rate), "index": index}


def how2sign_source(d, split: str, *, lips: bool = True) -> How2SignSource:
  """The How2Sign clips of `split`; lips False: no mouth-ROI video is read (lip_root may be empty: the sign
  feature extraction reads the frames alone)."""
  root, sec = str(d.how2sign.root or ""), d.how2sign
  dirs = _dirs(d, "how2sign", split)
  if lips and not str(sec.lip_root or ""):
    raise ConfigError("data.how2sign.lip_root is empty: How2Sign needs the signer's mouth-ROI mp4s (prepared "
                      "with a facial landmark detector; same relative names as the clips)")
  readers = [layouts.How2SignReader(root, s, duration_tol=float(sec.duration_tol), load_video=False)
             for s in dirs]
  src = How2SignSource(readers, d, root, str(sec.lip_root or ""))
  src.load_video = not str(d.get("sign_features", "") or "")    # features: trimodal_jax.data.SignFeatures
  src.load_lip = bool(lips)
  return src


def lrs3_source(d, split: str) -> LRS3Source:
  root = str(d.lrs3.root or "")
  readers = [layouts.LRS3Reader(root, s, load_video=False) for s in _dirs(d, "lrs3", split)]
  return LRS3Source(readers, d, root, str(d.lrs3.lip_root or ""))


def sources(d, split: str) -> dict:
  """{"sign": How2Sign clips, "speech": LRS3 clips} of the system's `split` (module docstring), equal len()."""
  for name in ("how2sign", "lrs3"):     # both split maps and roots before any file is read
    _dirs(d, name, split)
  out = {"sign": how2sign_source(d, split), "speech": lrs3_source(d, split)}
  n = max(s.n_clips for s in out.values())
  for s in out.values():
    s.length = n
  return out
