"""FlashLips data: SynthCue `speech` clips (faces with moving lips, no hands) -> face crops, a mouth box, mouth
crops and frame-aligned speech features.

Geometry (per clip, from SynthCue's pose keypoints; frame units, see shared/data/synthcue.py):
  face crop   a square of data.crop_scale face units centred on the face (the eyes' midpoint + 0.3 face units
              down), read from the clip's first frame (SynthCue heads do not move), resized to data.image_size
  mouth box   the extent of the mouth keypoints 4-7 (corners, upper / lower lip) over the whole clip, widened by
              data.mask_margin of its size on each side and snapped outward to the VAE's latent stride: one fixed
              box per clip (its size tells nothing of the opening in a given frame), (y0, y1, x0, x1) in crop
              pixels, end exclusive
  mouth crop  a square of data.mouth_scale face units centred on the clip's mean mouth centre, resized to
              data.mouth_size: what the lips-pose encoder sees
  speech      the AudioLDM log-mel (shared.data.audioldm_mel: 16 kHz, hop 160 -> 4 frames per video frame at
              25 fps, 64 bins), normalised (x - mel_mean) / mel_std, the 4 mel frames of each video frame
              concatenated: [T, 256] (audio_dim)

Examples (fixed shapes, so every batch compiles once):
  parts "pairs" (vae / editor / maskfree stages; P = data.pairs_per_clip random (target, reference) frame pairs of one
  clip, the reference a different frame of the same clip):
    target [P, S, S, 3] uint8, reference [P, S, S, 3] uint8, mouth [P, m, m, 3] uint8 (the target's mouth crop),
    box [4] int32, lip_params [P, 3] float32 (SynthCue truth: opening, width, rounding; compared, or supervised
    with objective.lips_gt_weight)
  parts "clip" (pose stage: the first F = data.frames frames; shorter clips padded, frame_mask False there):
    mouth [F, m, m, 3] uint8, audio [F, audio_dim] float32, frame_mask [F] bool, lip_params [F, 3] float32
    (+ with video: frames [F, S, S, 3] uint8 face crops and box [4] int32, for evaluation / inference)
"""
from __future__ import annotations

import numpy as np

from shared.data import audioldm_mel
from shared.data.pipeline import make_iterator
from shared.data.synthcue import FACE_UNIT, synthcue_source
from shared.errors import ConfigError, DataError

MEL_BINS = audioldm_mel.N_MELS
MOUTH_KP = slice(4, 8)


SOURCES = ("synthcue", "folder")


class FolderSource:
  """Real talking-face videos (HDTF / CelebV-HQ style, one speaker per clip): data.root/<split>/<name>.mp4 with its
  audio track, beside it <name>_landmarks.npy ([T, 68, 2|3] pixels, iBUG order: from the user's own face-landmark
  detector, e.g. face_alignment; none runs here). Random access (grain): sample i -> {"video" [T, H, W, 3] uint8,
  "audio" [S] float32 16 kHz, "pose" [T, 20, 3] (pose_from_landmarks68), "face_unit" (pixels per face unit),
  "path"}; no viseme truth (lip_params absent: the probe and objective.lips_gt_weight need SynthCue). A video at
  another frame rate than data.fps, or frames / landmarks of different lengths, is a DataError naming the file."""

  def __init__(self, data, split: str, *, video: bool = True, audio: bool = True):
    import glob
    import os
    root = str(data.get("root", "") or "")
    if not root:
      raise ConfigError("data.source='folder' needs data.root (a directory with train/ and test/ folders of mp4s)",
                        key="data.root")
    where = os.path.join(root, split)
    if not os.path.isdir(where):
      raise ConfigError(f"data.root={root!r}: no {split}/ folder in it")
    self.paths = [p for p in sorted(glob.glob(os.path.join(where, "*.mp4")))
                  if os.path.isfile(p[:-4] + "_landmarks.npy")]
    if not self.paths:
      raise DataError("no <name>.mp4 with <name>_landmarks.npy beside it", path=where)
    self.fps, self.with_audio = float(data.fps), bool(audio)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    from shared.data.media import read_mp4
    path = self.paths[int(i)]
    m = read_mp4(path, with_audio=self.with_audio, sample_rate=16000 if self.with_audio else None)
    if abs(float(m.fps) - self.fps) > 0.01:
      raise DataError(f"{m.fps:g} fps; data.fps is {self.fps:g} (resample the videos first)", path=path)
    if self.with_audio and m.audio is None:
      raise DataError("no audio track", path=path, key="audio")
    lm_path = path[:-4] + "_landmarks.npy"
    lm = np.load(lm_path, allow_pickle=False)
    if len(lm) != len(m.frames):
      raise DataError(f"{len(lm)} landmark frames for {len(m.frames)} video frames", path=lm_path)
    pose, unit = pose_from_landmarks68(lm, *m.frames.shape[1:3], path=lm_path)
    out = {"video": m.frames, "pose": pose, "face_unit": unit, "path": path, "index": int(i)}
    if self.with_audio:
      out["audio"] = np.asarray(m.audio, np.float32)
    return out


def source(data, split: str = "train", *, video: bool = True, audio: bool = True):
  kind = data.get("source", "synthcue")
  if kind == "folder":
    return FolderSource(data, split, video=video, audio=audio)
  if kind != "synthcue":
    raise ConfigError(f"data.source={kind!r}: expected one of {SOURCES}")
  return synthcue_source(data, split, "speech", render_video=video, render_audio=audio)


def mel_per_frame(data) -> int:
  per = audioldm_mel.SAMPLE_RATE / audioldm_mel.HOP / float(data.fps)
  if abs(per - round(per)) > 1e-6:
    raise ConfigError(f"data.fps={data.fps}: 16000 / 160 / fps must be an integer (mel frames per video frame)")
  return int(round(per))


def audio_dim(data) -> int:
  return mel_per_frame(data) * MEL_BINS


def speech_features(audio: np.ndarray, frames: int, data) -> np.ndarray:
  """16 kHz audio [N] -> [frames, audio_dim] float32: the normalised log-mel of each video frame (silence beyond
  the audio)."""
  per = mel_per_frame(data)
  wav = audioldm_mel.pad_or_crop_wav(audioldm_mel.normalize_wav(audio), frames * per * audioldm_mel.HOP)
  mel = audioldm_mel.log_mel(wav, target_frames=frames * per)
  mel = (mel - float(data.mel_mean)) / float(data.mel_std)
  return mel.reshape(frames, per * MEL_BINS).astype(np.float32)


# ----------------------------------------------------------------------------- geometry

EYE_SPAN = 0.8          # SynthCue's eye centres lie 0.8 face units apart (synthcue_render.face_base: ±0.4)
LANDMARKS68_EYES = (slice(36, 42), slice(42, 48))   # iBUG 68-point convention: the subject's right eye, left eye
LANDMARKS68_MOUTH = slice(48, 68)                   # outer + inner lip


def pose_from_landmarks68(landmarks: np.ndarray, height: int, width: int, path: str = "") -> tuple[np.ndarray, float]:
  """68-point face landmarks of a real video (iBUG convention, pixels, [T, 68, 2] or [T, 68, 3] with a score, as
  face_alignment / auto_avsr-style preprocessing writes them) -> (SynthCue-style keypoints [T, 20, 3] in frame
  units: 0-1 the eye centres, 4-7 four mouth points standing in for the lip contour's extent; the rest unseen,
  pixels per face unit = the median eye distance / EYE_SPAN): what `Geometry(..., unit=)` takes."""
  lm = np.asarray(landmarks, np.float32)
  if lm.ndim != 3 or lm.shape[1] != 68 or lm.shape[2] not in (2, 3):
    raise DataError(f"landmarks have shape {lm.shape}; expected [T, 68, 2] (or [T, 68, 3]) pixel coordinates",
                    path=path or None, key="landmarks")
  xy = lm[..., :2]
  if not np.isfinite(xy).all():
    raise DataError("landmarks hold NaN / inf (a frame without a detected face?)", path=path or None,
                    key="landmarks")
  eyes = np.stack([xy[:, s].mean(1) for s in LANDMARKS68_EYES], 1)            # [T, 2, 2]
  if eyes[0, 0, 0] > eyes[0, 1, 0]:
    eyes = eyes[:, ::-1]                                                        # image-left eye first
  span = float(np.median(np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=-1)))
  if span < 2.0:
    raise DataError(f"landmarks: the eyes are {span:.2f} px apart; not a face", path=path or None, key="landmarks")
  mouth = xy[:, LANDMARKS68_MOUTH]
  lo, hi = mouth.min(1), mouth.max(1)                                            # [T, 2] the lips' extent
  mid = (lo + hi) / 2
  pts = np.stack([np.stack([lo[:, 0], mid[:, 1]], -1), np.stack([hi[:, 0], mid[:, 1]], -1),
                  np.stack([mid[:, 0], lo[:, 1]], -1), np.stack([mid[:, 0], hi[:, 1]], -1)], 1)
  pose = np.zeros((len(lm), 20, 3), np.float32)
  scale = np.array([width, height], np.float32)
  pose[:, 0:2, :2], pose[:, 0:2, 2] = eyes / scale, 1.0
  pose[:, 4:8, :2], pose[:, 4:8, 2] = pts / scale, 1.0
  return pose, span / EYE_SPAN


class Geometry:
  """The crops of one clip: face square (x0, y0, side) in frame pixels, mouth box in crop pixels, mouth square in
  crop pixels. `pose` [T, 20, 3] SynthCue keypoints (frame units), frames of height x width; `unit`: pixels per
  face unit (default SynthCue's FACE_UNIT x width; a real face's from pose_from_landmarks68)."""

  def __init__(self, pose: np.ndarray, height: int, width: int, data, stride: int, unit: float | None = None):
    pose = np.asarray(pose, np.float32)
    if pose.ndim != 3 or pose.shape[1] < 8:
      raise DataError(f"pose has shape {pose.shape}; expected SynthCue keypoints [T, 20, 3]", key="pose")
    size = int(data.image_size)
    if unit is None:                                           # SynthCue: square frames, a fixed face size
      unit = FACE_UNIT * width                                 # pixels per face unit
      centre = (pose[0, 0:2, :2].mean(0) + np.array([0.0, 0.3 * FACE_UNIT], np.float32)) * [width, height]
    else:                                                      # the face centre: 0.3 face units below the eyes
      unit = float(unit)
      centre = pose[0, 0:2, :2].mean(0) * np.array([width, height], np.float32) + np.array([0.0, 0.3 * unit])
    side = float(data.crop_scale) * unit
    self.face = (float(centre[0] - side / 2), float(centre[1] - side / 2), side)
    self.size = size
    s = size / side                                            # crop pixels per frame pixel
    mouth = pose[:, MOUTH_KP]
    seen = mouth[..., 2] > 0
    if not seen.any():
      raise DataError("no mouth keypoints (4-7) in the clip: cannot place the mouth box", key="pose")
    xy = (mouth[..., :2][seen] * [width, height] - [self.face[0], self.face[1]]) * s
    lo, hi = xy.min(0), xy.max(0)
    pad = float(data.mask_margin) * np.maximum(hi - lo, 1.0)
    lo, hi = lo - pad, hi + pad
    y0, x0 = (np.floor(lo[::-1] / stride) * stride).astype(int)
    y1, x1 = (np.ceil(hi[::-1] / stride) * stride).astype(int)
    self.box = np.array([max(y0, 0), min(y1, size), max(x0, 0), min(x1, size)], np.int32)
    mc = xy.mean(0)
    ms = float(data.mouth_scale) * unit * s
    self.mouth = (float(mc[0] - ms / 2), float(mc[1] - ms / 2), ms)
    self.mouth_size = int(data.mouth_size)


def _resample(frames: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
  """frames [T, H, W, 3] uint8 -> [T, size, size, 3]: the square box (x0, y0, side) resampled bilinearly; outside
  the frame is edge-padded. An integer box of the output size is a plain slice."""
  from PIL import Image
  x0, y0, side = box
  t, h, w = frames.shape[:3]
  if abs(side - size) < 1e-6 and float(x0).is_integer() and float(y0).is_integer() and x0 >= 0 and y0 >= 0 \
      and x0 + size <= w and y0 + size <= h:
    return np.ascontiguousarray(frames[:, int(y0):int(y0) + size, int(x0):int(x0) + size])
  pad = int(np.ceil(max(0.0, -x0, -y0, x0 + side - w, y0 + side - h))) + 1
  src = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  bx = (x0 + pad, y0 + pad, x0 + pad + side, y0 + pad + side)
  out = np.empty((t, size, size, 3), np.uint8)
  for i in range(t):
    out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(src[i])).resize((size, size), Image.BILINEAR, box=bx))
  return out


def face_crops(frames: np.ndarray, g: Geometry) -> np.ndarray:
  return _resample(np.asarray(frames, np.uint8), g.face, g.size)


def mouth_crops(crops: np.ndarray, g: Geometry) -> np.ndarray:
  """face crops [T, S, S, 3] -> mouth crops [T, m, m, 3]."""
  return _resample(crops, g.mouth, g.mouth_size)


def latent_stride(cfg) -> int:
  return 2 ** (len(cfg.model.vae.block_out_channels) - 1)


# ----------------------------------------------------------------------------- examples

def _check(sample, video: bool = True):
  where = sample.get("path") or f"SynthCue sample {sample.get('index', '?')}"
  if video and (sample.get("video") is None or np.ndim(sample["video"]) != 4):
    raise DataError("expected colour frames 'video' [T, H, W, 3]", path=where, key="video")
  if sample.get("pose") is None:
    raise DataError("expected pose keypoints 'pose' [T, 20, 3]", path=where, key="pose")


def prepare_pairs(sample, rng: np.random.Generator, *, data, stride: int) -> dict:
  """A clip -> P (target, reference) pairs (module docstring)."""
  _check(sample)
  video = np.asarray(sample["video"], np.uint8)
  t, h, w = video.shape[:3]
  g = Geometry(sample["pose"], h, w, data, stride, unit=sample.get("face_unit"))
  p = int(data.pairs_per_clip)
  ti = rng.integers(0, t, p)
  ri = (ti + rng.integers(1, max(t, 2), p)) % t               # another frame of the clip
  crops = face_crops(video[np.concatenate([ti, ri])], g)
  lips = np.asarray(sample.get("lip_params", np.zeros((t, 3), np.float32)), np.float32)
  return {"target": crops[:p], "reference": crops[p:], "mouth": mouth_crops(crops[:p], g), "box": g.box,
          "lip_params": lips[ti]}


def prepare_clip(sample, *, data, stride: int, video: bool = False, audio=None) -> dict:
  """A clip -> the pose stage's example over its first F frames (module docstring). `audio` replaces the clip's
  own speech (cross-audio evaluation)."""
  _check(sample)
  f = int(data.frames)
  frames = np.asarray(sample["video"], np.uint8)[:f]
  t, h, w = frames.shape[:3]
  g = Geometry(sample["pose"], h, w, data, stride, unit=sample.get("face_unit"))
  crops = face_crops(frames, g)
  if t < f:                                                   # repeat the last frame (mouth closed at the end)
    crops = np.concatenate([crops, np.repeat(crops[-1:], f - t, 0)])
  wav = sample.get("audio") if audio is None else audio
  if wav is None:
    raise DataError("expected 16 kHz audio 'audio' [S]", key="audio")
  lips = np.zeros((f, 3), np.float32)
  lp = np.asarray(sample.get("lip_params", np.zeros((t, 3))), np.float32)[:f]
  lips[:len(lp)] = lp
  out = {"mouth": mouth_crops(crops, g), "audio": speech_features(np.asarray(wav, np.float32), f, data),
         "frame_mask": np.arange(f) < t, "lip_params": lips}
  if video:
    out.update(frames=crops, box=g.box)
  return out


def stack(examples):
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def train_iterator(cfg, *, batch_size: int, seed: int):
  """Checkpointable grain iterator of host-local training batches for the config's stage."""
  data, stride = cfg.data, latent_stride(cfg)
  if cfg.model.stage == "pose":
    src = source(data, "train", audio=True)

    def prep(sample, rng):
      del rng
      return prepare_clip(sample, data=data, stride=stride)
  else:
    src = source(data, "train", audio=False)

    def prep(sample, rng):
      return prepare_pairs(sample, rng, data=data, stride=stride)
  return make_iterator(src, stack, batch_size=batch_size, seed=seed, random_map_fn=prep)


def eval_pairs(cfg, split: str, n: int, batch_size: int, seed: int = 0):
  """Deterministic batches of pairs from the first clips of `split`: yields (batch, k real examples)."""
  src = source(cfg.data, split, audio=False)
  stride = latent_stride(cfg)
  out = []
  for i in range(n):
    out.append(prepare_pairs(src[i], np.random.default_rng([seed, i]), data=cfg.data, stride=stride))
    if len(out) == batch_size:
      yield stack(out), batch_size
      out = []
  if out:
    k = len(out)
    yield stack(out + out[-1:] * (batch_size - k)), k
