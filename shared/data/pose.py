"""Pose I/O (data-pipeline side, numpy): OpenPose JSON, an OpenPose-style renderer, and converters.

UniCUE (SPECS.md § UniCUE) feeds its visual encoder pose maps rendered from OpenPose keypoints; the
sign-language system reads pose too. Everything here works on one keypoint layout, OpenPose's:

  `Keypoints` = dict of float32 arrays, x and y in pixels of the source frame (OpenCV convention:
  the centre of pixel (row i, column j) is x=j, y=i), then confidence; confidence 0 = absent
  (coordinates 0 too):
    body        [T, 25, 3]   BODY_25 (0 Nose, 1 Neck, 2-4 RShoulder/RElbow/RWrist, 5-7 L..., 8 MidHip,
                             9-11 RHip/RKnee/RAnkle, 12-14 L..., 15/16 REye/LEye, 17/18 REar/LEar,
                             19-21 LBigToe/LSmallToe/LHeel, 22-24 R...)
    face        [T, 70, 3]   0-16 contour (8 = chin), 17-26 brows, 27-35 nose (30 = tip), 36-41 right
                             eye, 42-47 left eye, 48-59 outer lips (48/54 corners, 51 top, 57
                             bottom), 60-67 inner lips, 68/69 right/left pupil
    hand_left   [T, 21, 3]   0 wrist, then 4 joints per finger thumb..pinky (tips 4, 8, 12, 16, 20)
    hand_right  [T, 21, 3]
  "Right" is the person's right (on the image's left for a person facing the camera).

Pieces:
- `read_openpose_dir` / `write_openpose_dir`: OpenPose's per-frame JSON (`--write_json`): a directory
  of `<name>_<frame:012d>_keypoints.json`, each {"version": 1.3, "people": [{"person_id": [-1],
  "pose_keypoints_2d": [25*3], "face_keypoints_2d": [70*3], "hand_left_keypoints_2d": [21*3],
  "hand_right_keypoints_2d": [21*3], "pose_keypoints_3d": [], ...}]}.
- `pose_maps`: skeleton images drawn the way OpenPose's CPU renderer draws them (UniCUE's pose stream).
- `synthcue_to_openpose`: SynthCue's 20 keypoints into the slots above, so the same renderer and
  readers serve real and synthetic data.
- `wholebody_to_openpose` / `extract_rtmlib`: COCO-WholeBody (133 points, what rtmlib's RTMW models
  give) into the same layout; extraction from local ONNX files only (never downloads).

Sources of the tables (read from the public code, not copied): CMU-Perceptual-Computing-Lab/openpose
(commit 5c5d965, 2024-08) include/openpose/pose/poseParametersRender.hpp (POSE_BODY_25_PAIRS_RENDER_GPU,
POSE_BODY_25_COLORS_RENDER_GPU), include/openpose/hand/handParameters.hpp (HAND_PAIRS_RENDER_GPU,
HAND_COLORS_RENDER_GPU), include/openpose/face/faceParameters.hpp (FACE_PAIRS_RENDER_GPU, white),
src/openpose/utilities/keypoint.cpp (renderKeypointsCpu: sizes, colours per keypoint),
src/openpose/{pose/renderPose,hand/renderHand,face/renderFace}.cpp (size ratios), include/openpose/
flags.hpp (render thresholds), src/openpose/pose/poseParameters.cpp (part names);
Tau-J/rtmlib (rtmlib/visualization/skeleton/coco133.py: COCO-WholeBody order;
rtmlib/tools/solution/wholebody.py: constructor arguments).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Sequence

import numpy as np

from shared.errors import DataError

log = logging.getLogger(__name__)

# part -> (number of keypoints, OpenPose JSON key); also the drawing order of `pose_maps`
PARTS = {"body": (25, "pose_keypoints_2d"), "face": (70, "face_keypoints_2d"),
         "hand_left": (21, "hand_left_keypoints_2d"), "hand_right": (21, "hand_right_keypoints_2d")}
_JSON_3D = ("pose_keypoints_3d", "face_keypoints_3d", "hand_left_keypoints_3d",
            "hand_right_keypoints_3d")
_FILE = re.compile(r"^(?P<name>.+)_(?P<frame>\d+)_keypoints\.json$")

# ----------------------------------------------------------------------------- OpenPose tables
# BODY_25 limbs (POSE_BODY_25_PAIRS_RENDER_GPU) and colours per keypoint, RGB
# (POSE_BODY_25_COLORS_RENDER_GPU); a limb takes the colour of its second keypoint
# (renderKeypointsCpu).
BODY_25_PAIRS = ((1, 8), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (10, 11),
                 (8, 12), (12, 13), (13, 14), (1, 0), (0, 15), (15, 17), (0, 16), (16, 18),
                 (14, 19), (19, 20), (14, 21), (11, 22), (22, 23), (11, 24))
BODY_25_COLORS = np.array([
    [255, 0, 85], [255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0],
    [85, 255, 0], [0, 255, 0], [255, 0, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255],
    [0, 170, 255], [0, 85, 255], [0, 0, 255], [255, 0, 170], [170, 0, 255], [255, 0, 255],
    [85, 0, 255], [0, 0, 255], [0, 0, 255], [0, 0, 255], [0, 255, 255], [0, 255, 255],
    [0, 255, 255]], np.uint8)
# hand bones (HAND_PAIRS_RENDER_GPU): wrist -> each finger's 4 joints; colours per keypoint
# (HAND_COLORS_RENDER_GPU): wrist grey, thumb red, index yellow, middle green, ring blue, pinky
# magenta, darker towards the palm. Both hands use the same table.
HAND_PAIRS = tuple(p for f in range(5) for p in ((0, 4 * f + 1), (4 * f + 1, 4 * f + 2),
                                                  (4 * f + 2, 4 * f + 3), (4 * f + 3, 4 * f + 4)))
HAND_COLORS = np.array([
    [100, 100, 100],
    [100, 0, 0], [150, 0, 0], [200, 0, 0], [255, 0, 0],
    [100, 100, 0], [150, 150, 0], [200, 200, 0], [255, 255, 0],
    [0, 100, 50], [0, 150, 75], [0, 200, 100], [0, 255, 125],
    [0, 50, 100], [0, 75, 150], [0, 100, 200], [0, 125, 255],
    [100, 0, 100], [150, 0, 150], [200, 0, 200], [255, 0, 255]], np.uint8)
# face (FACE_PAIRS_RENDER_GPU), all white; `pose_maps` draws face lines only with face_lines=True
FACE_PAIRS = (tuple((i, i + 1) for i in range(16)) + tuple((i, i + 1) for i in range(17, 21))
              + tuple((i, i + 1) for i in range(22, 26)) + tuple((i, i + 1) for i in range(27, 30))
              + tuple((i, i + 1) for i in range(31, 35))
              + tuple((i, i + 1) for i in range(36, 41)) + ((41, 36),)
              + tuple((i, i + 1) for i in range(42, 47)) + ((47, 42),)
              + tuple((i, i + 1) for i in range(48, 59)) + ((59, 48),)
              + tuple((i, i + 1) for i in range(60, 67)) + ((67, 60),))
FACE_COLORS = np.full((70, 3), 255, np.uint8)
# (circle-thickness ratio, line ratio w.r.t. circle, default render threshold) per part, from
# renderPose.cpp / renderHand.cpp / renderFace.cpp and flags.hpp (render_threshold 0.05,
# hand_render_threshold 0.2, face_render_threshold 0.4)
_STYLE = {"body": (1 / 75, 0.75, 0.05), "face": (1 / 75, 0.334, 0.4),
          "hand_left": (1 / 50, 0.75, 0.2), "hand_right": (1 / 50, 0.75, 0.2)}
_TABLES = {"body": (BODY_25_PAIRS, BODY_25_COLORS), "face": (FACE_PAIRS, FACE_COLORS),
           "hand_left": (HAND_PAIRS, HAND_COLORS), "hand_right": (HAND_PAIRS, HAND_COLORS)}


# ----------------------------------------------------------------------------- helpers

def empty_keypoints(t_len: int) -> dict[str, np.ndarray]:
  """All-absent keypoints for `t_len` frames (every array zeros)."""
  return {p: np.zeros((t_len, k, 3), np.float32) for p, (k, _) in PARTS.items()}


def check_keypoints(kp: dict, where: str = "keypoints") -> int:
  """Check the four arrays' shapes ([T, K, 3], same T); returns T. DataError names the part."""
  t_len = None
  for part, (k, _) in PARTS.items():
    if part not in kp:
      raise DataError(f"{where}: missing part {part!r} (expected {sorted(PARTS)})", key=part)
    a = np.asarray(kp[part])
    if a.ndim != 3 or a.shape[1:] != (k, 3):
      raise DataError(f"{where}: {part} has shape {a.shape}, expected [T, {k}, 3]", key=part)
    if t_len is not None and a.shape[0] != t_len:
      raise DataError(f"{where}: {part} has {a.shape[0]} frames, the others {t_len}", key=part)
    t_len = a.shape[0]
  return int(t_len)


def to_frame_units(kp: dict, height: int, width: int) -> dict[str, np.ndarray]:
  """Pixels -> frame units in [0, 1] (SynthCue's convention: u = (x + 0.5) / width); absent stays 0."""
  return {p: _scale(np.asarray(kp[p], np.float32), 1.0 / width, 1.0 / height, 0.5) for p in PARTS}


def to_pixels(kp: dict, height: int, width: int) -> dict[str, np.ndarray]:
  """Frame units -> pixels, the inverse of `to_frame_units`."""
  out = {}
  for p in PARTS:
    a = np.asarray(kp[p], np.float32).copy()
    on = a[..., 2] > 0
    a[..., 0] = np.where(on, a[..., 0] * width - 0.5, 0.0)
    a[..., 1] = np.where(on, a[..., 1] * height - 0.5, 0.0)
    out[p] = a
  return out


def _scale(a: np.ndarray, sx: float, sy: float, shift: float) -> np.ndarray:
  a = a.copy()
  on = a[..., 2] > 0
  a[..., 0] = np.where(on, (a[..., 0] + shift) * sx, 0.0)
  a[..., 1] = np.where(on, (a[..., 1] + shift) * sy, 0.0)
  return a


def _largest(people: Sequence[dict[str, np.ndarray]]) -> int:
  """Index of the person whose confident points (all parts) span the largest box (ties: more points,
  then the first)."""
  best, best_key = 0, (-1.0, -1)
  for i, person in enumerate(people):
    pts = np.concatenate([person[p] for p in PARTS])
    pts = pts[pts[:, 2] > 0]
    if len(pts):
      span = pts[:, :2].max(0) - pts[:, :2].min(0)
      key = (float(span[0] * span[1]), len(pts))
    else:
      key = (0.0, 0)
    if key > best_key:
      best, best_key = i, key
  return best


# ----------------------------------------------------------------------------- OpenPose JSON

def openpose_filename(name: str, frame: int) -> str:
  """OpenPose's per-frame JSON name for a video: `<name>_<frame:012d>_keypoints.json`."""
  return f"{name}_{frame:012d}_keypoints.json"


def _read_frame(path: str, frame: int) -> list[dict[str, np.ndarray]]:
  """One JSON file -> list of people, each {part: [K, 3] float32}. DataError names file and frame."""
  def bad(msg):
    return DataError(f"OpenPose JSON frame {frame}: {msg}", path=path)
  try:
    with open(path, "rb") as f:
      doc = json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise bad(f"malformed JSON ({e})") from None
  except OSError as e:
    raise bad(f"unreadable ({e})") from None
  if not isinstance(doc, dict) or not isinstance(doc.get("people"), list):
    raise bad("expected an object with a 'people' list")
  people = []
  for i, person in enumerate(doc["people"]):
    if not isinstance(person, dict):
      raise bad(f"people[{i}] is {type(person).__name__}, expected an object")
    parts = {}
    for part, (k, key) in PARTS.items():
      v = person.get(key)
      if v is None and part == "body":
        v = person.get("pose_keypoints")              # OpenPose JSON version < 1.2
      if v is None or (isinstance(v, list) and not v):  # part not extracted (e.g. no --face)
        parts[part] = np.zeros((k, 3), np.float32)
        continue
      if not isinstance(v, list) or len(v) != 3 * k:
        n = len(v) if isinstance(v, list) else type(v).__name__
        raise bad(f"people[{i}].{key} has {n} values, expected {3 * k} ({k} x (x, y, c))")
      try:
        parts[part] = np.asarray(v, np.float64).astype(np.float32).reshape(k, 3)
      except (TypeError, ValueError):
        raise bad(f"people[{i}].{key} holds non-numbers") from None
    people.append(parts)
  return people


def read_openpose_dir(path: str, n_frames: int | None = None, person: str | int = "largest", *,
                      name: str | None = None,
                      frame_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """Read OpenPose's per-frame JSON directory into `Keypoints` ([T, K, 3] float32 per part).

  Files `<name>_<frame>_keypoints.json` are ordered by their frame number, which must run 0..T-1
  without a gap (T = n_frames when given: then exactly that many frames must be there).
  Args:
    person: "largest" (the person whose confident points span the largest box) or an index into
      each frame's `people` list.
    name: which clip when the directory holds several names (required then).
    frame_size: (height, width) to return frame units in [0, 1] (`to_frame_units`) instead of pixels.
  A frame with no people (or fewer than `person` + 1) gives zeros (confidence 0) for that frame; a
  part written as [] (OpenPose run without --face / --hand) gives zeros too. A missing directory, no
  matching files, several names, a gap in the numbering, malformed JSON, a wrong list length or
  non-numbers raise DataError naming the file and frame.
  """
  if not (person == "largest" or (isinstance(person, int) and person >= 0)):
    raise DataError(f"person={person!r}: expected 'largest' or an index >= 0", key="person")
  if not os.path.isdir(path):
    raise DataError("OpenPose JSON directory not found", path=path)
  found: dict[str, dict[int, str]] = {}
  for fn in os.listdir(path):
    m = _FILE.match(fn)
    if m:
      frames = found.setdefault(m["name"], {})
      fr = int(m["frame"])
      if fr in frames:
        raise DataError(f"OpenPose JSON frame {fr} appears twice ({frames[fr]}, {fn})",
                        path=os.path.join(path, fn))
      frames[fr] = fn
  if name is not None:
    found = {name: found[name]} if name in found else {}
  if not found:
    want = f"{name}_<frame>_keypoints.json" if name else "<name>_<frame>_keypoints.json"
    raise DataError(f"no OpenPose JSON files ({want}) in the directory", path=path)
  if len(found) > 1:
    raise DataError(f"OpenPose JSON directory holds several clips {sorted(found)}: pass name=",
                    path=path)
  (clip, frames), = found.items()
  t_len = (max(frames) + 1) if n_frames is None else int(n_frames)
  missing = [f for f in range(t_len) if f not in frames]
  if missing:
    raise DataError(f"OpenPose JSON frame {missing[0]} is missing ({len(missing)} of {t_len} frames "
                    "missing; numbering must run 0..T-1)",
                    path=os.path.join(path, openpose_filename(clip, missing[0])))
  extra = sorted(f for f in frames if f >= t_len)
  if extra:
    raise DataError(f"OpenPose JSON frame {extra[0]} is beyond n_frames={t_len} "
                    f"({len(extra)} extra files)", path=os.path.join(path, frames[extra[0]]))
  out = empty_keypoints(t_len)
  empty = 0
  for t in range(t_len):
    people = _read_frame(os.path.join(path, frames[t]), t)
    i = _largest(people) if person == "largest" else person
    if i >= len(people):
      empty += 1
      continue
    for part in PARTS:
      out[part][t] = people[i][part]
  if empty:
    log.info("%s: %d of %d frames have no person (zeros)", path, empty, t_len)
  if frame_size is not None:
    out = to_frame_units(out, *frame_size)
  return out


def write_openpose_dir(path: str, keypoints: dict, name: str) -> list[str]:
  """Write `Keypoints` (pixels) as OpenPose's per-frame JSON; returns the file paths.

  One person per frame (person_id [-1], the 3-D lists empty, as OpenPose writes without --3d); a
  frame whose values are all zero is written with no people. Values are written exactly (float32 ->
  shortest float64 repr), so `read_openpose_dir` gives the same arrays back bit for bit. Refuses
  (DataError) when the directory already holds frames of `name` beyond this clip's length.
  """
  t_len = check_keypoints(keypoints, f"write_openpose_dir({name!r})")
  if not name or os.sep in name or (os.altsep and os.altsep in name):
    raise DataError(f"clip name {name!r}: expected a non-empty file-name stem", key="name")
  os.makedirs(path, exist_ok=True)
  stale = [fn for fn in os.listdir(path)
           if (m := _FILE.match(fn)) and m["name"] == name and int(m["frame"]) >= t_len]
  if stale:
    raise DataError(f"directory already holds {len(stale)} frames of {name!r} beyond T={t_len} "
                    f"(e.g. {sorted(stale)[0]}); remove them first", path=path)
  arrays = {p: np.asarray(keypoints[p], np.float32) for p in PARTS}
  paths = []
  for t in range(t_len):
    people = []
    if any(arrays[p][t].any() for p in PARTS):
      person = {"person_id": [-1]}
      for part, (_, key) in PARTS.items():
        person[key] = [float(v) for v in arrays[part][t].reshape(-1)]
      person.update({k: [] for k in _JSON_3D})
      people.append(person)
    fn = os.path.join(path, openpose_filename(name, t))
    with open(fn, "w") as f:
      json.dump({"version": 1.3, "people": people}, f, separators=(",", ":"))
    paths.append(fn)
  return paths


# ----------------------------------------------------------------------------- renderer

def _paint_capsules(out: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray,
                    on: np.ndarray, color: np.ndarray) -> None:
  """Paint, in place, every pixel whose centre lies within radius[t] of segment a[t]-b[t] (a disc
  when a == b) in frames where on[t]. out [T, H, W, 3] uint8; a, b [T, 2] pixels; radius, on [T].

  Vectorised over frames and pixels (no loop): per frame, u is the segment's major axis (x, or y when
  steeper than 45 degrees) and v the other; candidates are, for each u along the segment (+- r), the
  2R+1 pixels around the segment's v there (R = ceil(2 r) + 1 covers the capsule, whose height over
  a u is at most 2 r); the exact distance test picks the hits, written by fancy indexing.
  """
  idx = np.nonzero(on)[0]
  if not len(idx):
    return
  h, w = out.shape[1:3]
  a, b, r = a[idx].astype(np.float32), b[idx].astype(np.float32), radius[idx].astype(np.float32)
  steep = np.abs(b[:, 1] - a[:, 1]) > np.abs(b[:, 0] - a[:, 0])
  pa = np.where(steep[:, None], a[:, ::-1], a)                                # (u, v)
  pb = np.where(steep[:, None], b[:, ::-1], b)
  flip = pa[:, 0] > pb[:, 0]
  p, q = np.where(flip[:, None], pb, pa), np.where(flip[:, None], pa, pb)
  du = q[:, 0] - p[:, 0]
  slope = np.where(du > 0, (q[:, 1] - p[:, 1]) / np.maximum(du, 1e-12), 0.0)
  u0 = np.maximum(np.floor(p[:, 0] - r), 0).astype(np.int64)
  u1 = np.minimum(np.ceil(q[:, 0] + r), np.where(steep, h - 1, w - 1)).astype(np.int64)
  keep = u1 >= u0
  if not keep.any():
    return
  idx, a, b, r, p, q, slope, steep, u0, u1 = (
      x[keep] for x in (idx, a, b, r, p, q, slope, steep, u0, u1))
  span = int((u1 - u0).max()) + 1
  rad = int(np.ceil(2 * r.max())) + 1
  u = u0[:, None] + np.arange(span)[None]                                     # [n, L]
  vc = p[:, 1, None] + (np.clip(u, p[:, 0, None], q[:, 0, None]) - p[:, 0, None]) * slope[:, None]
  v = np.round(vc).astype(np.int64)[:, :, None] + np.arange(-rad, rad + 1)    # [n, L, 2R+1]
  u = np.broadcast_to(u[:, :, None], v.shape)
  st = steep[:, None, None]
  x, y = np.where(st, v, u).astype(np.int32), np.where(st, u, v).astype(np.int32)
  ax, ay = a[:, 0, None, None], a[:, 1, None, None]
  dx, dy = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
  px, py = x.astype(np.float32) - ax, y.astype(np.float32) - ay
  s = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, np.float32(1e-12)), 0.0, 1.0)
  ex, ey = px - dx * s, py - dy * s
  rr = r[:, None, None]
  hit = (ex * ex + ey * ey <= rr * rr + 1e-3) & (u <= u1[:, None, None]) & \
      (x >= 0) & (x < w) & (y >= 0) & (y < h)
  t, i, j = np.nonzero(hit)
  out[idx[t], y[t, i, j], x[t, i, j]] = color


def _draw_part(out: np.ndarray, kp: np.ndarray, pairs, colors: np.ndarray, circle_ratio: float,
               line_ratio: float, threshold: float, lines: bool = True) -> None:
  """One part of one person, as OpenPose's renderKeypointsCpu: sizes from the part's box (points with
  confidence > 0.1), lines of colour colors[second keypoint], then a dot at each keypoint."""
  h, w = out.shape[1:3]
  xy_raw, conf = kp[..., :2].astype(np.float64), kp[..., 2]
  boxed = conf > 0.1
  m = boxed[..., None]
  span = np.where(m, xy_raw, -np.inf).max(1) - np.where(m, xy_raw, np.inf).min(1)   # [T, 2]
  span = np.where(boxed.any(1)[:, None], span, 0.0)  # (-inf - inf where no point: replaced)
  drawn = span[:, 0] * span[:, 1] > 0                  # OpenPose skips a person whose box has no area
  ratio = np.minimum(1.0, np.maximum(span[:, 0] / w, span[:, 1] / h))
  thick = np.maximum(np.floor(np.sqrt(h * w) * circle_ratio * ratio + 0.5), 2.0)
  circle_t = np.where(ratio > 0.05, thick, 1.0)
  line_t = np.maximum(1.0, np.floor(thick * line_ratio + 0.5))
  dot_r = np.floor(thick / 2) + circle_t / 2           # cv::circle(radius, thickness): ring -> disc
  xy = np.floor(xy_raw + 0.5).astype(np.float32)       # OpenPose rounds keypoints to pixels
  ok = (conf > max(threshold, 0.0)) & drawn[:, None]
  if lines:
    for i, j in pairs:
      _paint_capsules(out, xy[:, i], xy[:, j], line_t / 2, ok[:, i] & ok[:, j], colors[j])
  for k in range(kp.shape[1]):
    _paint_capsules(out, xy[:, k], xy[:, k], dot_r, ok[:, k], colors[k])


def pose_maps(keypoints: dict, height: int, width: int, *, threshold: float | None = None,
              face_lines: bool = False, parts: Sequence[str] = tuple(PARTS)) -> np.ndarray:
  """Render `Keypoints` (pixels) as OpenPose-style skeleton images: [T, height, width, 3] uint8 RGB.

  As OpenPose's CPU renderer on a black background, in the order body, face, left hand, right hand:
  BODY_25 limbs in its per-limb colours (a limb has the colour of its second keypoint), the 20 hand
  bones in per-finger colours, face points as white dots (its contour lines too with face_lines=True),
  a dot at every keypoint. Sizes follow OpenPose: t = max(round(sqrt(H*W) * c * r), 2) with r the
  part's box over the frame (capped at 1) and c = 1/75 (body, face) or 1/50 (hands); lines
  max(1, round(0.75 t)) wide (face 0.334 t); dots are OpenCV rings of radius floor(t/2) and thickness
  t (1 when r <= 0.05), drawn filled to radius floor(t/2) + t/2. Points with confidence at or
  below the threshold are not drawn (OpenPose's defaults: body 0.05, hands 0.2, face 0.4; `threshold`
  overrides all three), nor is a part whose confident points span no area (as in OpenPose).
  Differences: hard-edged pixels (OpenCV's LINE_8 too, but our raster is pixel centres within t/2 of
  the segment, not OpenCV's line algorithm), the GPU renderer's blending and heat maps are not drawn.
  """
  t_len = check_keypoints(keypoints, "pose_maps")
  out = np.zeros((t_len, int(height), int(width), 3), np.uint8)
  for part in PARTS:
    if part not in parts:
      continue
    pairs, colors = _TABLES[part]
    circle_ratio, line_ratio, default_thr = _STYLE[part]
    _draw_part(out, np.asarray(keypoints[part], np.float32), pairs, colors, circle_ratio,
               line_ratio, default_thr if threshold is None else threshold,
               lines=(part != "face") or face_lines)
  return out


# ----------------------------------------------------------------------------- SynthCue

# SynthCue keypoint -> OpenPose slots. SynthCue names its face points by image side ("L" = image
# left), which for a camera-facing person is the person's right: 0 (image-left eye) -> REye / RPupil.
# Its hand 8-13 is the cueing/dominant hand it calls "right" -> hand_right (and RWrist), 14-19 ->
# hand_left, although SynthCue draws that hand on the image's right (a mirror view of the cuer).
SYNTHCUE_TO_OPENPOSE = (
    # (synthcue index, part, openpose index, what)
    (0, "body", 15, "eye (image left) -> REye"), (0, "face", 68, "eye (image left) -> RPupil"),
    (1, "body", 16, "eye (image right) -> LEye"), (1, "face", 69, "eye (image right) -> LPupil"),
    (2, "body", 0, "nose -> Nose"), (2, "face", 30, "nose -> nose tip"),
    (3, "face", 8, "chin -> contour 8 (chin)"),
    (4, "face", 48, "mouth corner (image left) -> outer lip 48"),
    (5, "face", 54, "mouth corner (image right) -> outer lip 54"),
    (6, "face", 51, "upper lip (outer, centre) -> 51"),
    (7, "face", 57, "lower lip (outer, centre) -> 57"),
    (8, "body", 4, "right hand wrist -> RWrist"), (8, "hand_right", 0, "wrist"),
    (9, "hand_right", 4, "thumb tip"), (10, "hand_right", 8, "index tip"),
    (11, "hand_right", 12, "middle tip"), (12, "hand_right", 16, "ring tip"),
    (13, "hand_right", 20, "pinky tip"),
    (14, "body", 7, "left hand wrist -> LWrist"), (14, "hand_left", 0, "wrist"),
    (15, "hand_left", 4, "thumb tip"), (16, "hand_left", 8, "index tip"),
    (17, "hand_left", 12, "middle tip"), (18, "hand_left", 16, "ring tip"),
    (19, "hand_left", 20, "pinky tip"),
)


def synthcue_to_openpose(pose: np.ndarray, height: int, width: int, *,
                         fill_fingers: bool = True) -> dict[str, np.ndarray]:
  """SynthCue pose [T, 20, 3] (frame units) -> `Keypoints` in pixels of a height x width frame.

  Slots per `SYNTHCUE_TO_OPENPOSE`; every other slot stays absent (confidence 0). SynthCue has wrists
  and fingertips only; with fill_fingers=True the other 15 joints of a hand are placed on each
  finger's straight line the way shared/data/synthcue_render.draw_hands draws it (knuckle centre =
  wrist + 0.55 (mean tip - wrist); joint 1 = knuckle + 0.25 (tip - knuckle); joints 2, 3 at 1/3, 2/3
  from joint 1 to the tip), confidence min(wrist, tip), so the renderer draws hand bones, not dots.
  """
  pose = np.asarray(pose, np.float32)
  if pose.ndim != 3 or pose.shape[1:] != (20, 3):
    raise DataError(f"SynthCue pose has shape {pose.shape}, expected [T, 20, 3]", key="pose")
  out = empty_keypoints(pose.shape[0])
  for s, part, k, _ in SYNTHCUE_TO_OPENPOSE:
    out[part][:, k] = pose[:, s]
  if fill_fingers:
    for part, w0 in (("hand_right", 8), ("hand_left", 14)):
      wrist, tips = pose[:, w0, :2], pose[:, w0 + 1:w0 + 6, :2]                 # [T, 2], [T, 5, 2]
      conf = np.minimum(pose[:, w0, 2:3], pose[:, w0 + 1:w0 + 6, 2])           # [T, 5]
      knuckle = wrist + 0.55 * (tips.mean(1) - wrist)
      base = knuckle[:, None] + 0.25 * (tips - knuckle[:, None])               # [T, 5, 2]
      for j, f in enumerate((0.0, 1 / 3, 2 / 3)):
        out[part][:, 1 + j:20:4, :2] = base + f * (tips - base)
        out[part][:, 1 + j:20:4, 2] = conf
  return to_pixels(out, height, width)


# ----------------------------------------------------------------------------- COCO-WholeBody / rtmlib

# COCO-WholeBody (133): 0-16 COCO body (0 nose, 1/2 left/right eye, 3/4 ears, 5/6 shoulders,
# 7/8 elbows, 9/10 wrists, 11/12 hips, 13/14 knees, 15/16 ankles; left first), 17-22 feet (left big
# toe, small toe, heel, then right), 23-90 face (the 68 points of OpenPose's face 0-67), 91-111 left
# hand, 112-132 right hand (OpenPose's hand order). BODY_25 index -> COCO-WholeBody index; Neck and
# MidHip are the midpoints of the shoulders / hips with the smaller confidence.
WHOLEBODY_TO_BODY_25 = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 9: 12, 10: 14, 11: 16, 12: 11,
                        13: 13, 14: 15, 15: 2, 16: 1, 17: 4, 18: 3, 19: 17, 20: 18, 21: 19,
                        22: 20, 23: 21, 24: 22}
WHOLEBODY_MIDPOINTS = {1: (5, 6), 8: (11, 12)}       # Neck, MidHip
WHOLEBODY_FACE = slice(23, 91)                       # -> face 0-67; pupils 68/69 = eye centres
WHOLEBODY_HAND_LEFT = slice(91, 112)
WHOLEBODY_HAND_RIGHT = slice(112, 133)


def wholebody_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
  """COCO-WholeBody keypoints [T, 133, 2] (pixels) and scores [T, 133] -> `Keypoints`.

  One person per frame. Face 68/69 (pupils, not in COCO-WholeBody) are the centres of the eye
  contours 36-41 / 42-47 with the smallest of their confidences. A point with score <= 0 becomes
  absent (zeros). Scores are the model's, not OpenPose's: pick thresholds for pose_maps accordingly.
  """
  xy = np.asarray(keypoints, np.float32)
  sc = np.asarray(scores, np.float32)
  if xy.ndim != 3 or xy.shape[1:] != (133, 2) or sc.shape != xy.shape[:2]:
    raise DataError(f"COCO-WholeBody keypoints {xy.shape} / scores {sc.shape}: expected "
                    "[T, 133, 2] and [T, 133]", key="keypoints")
  full = np.concatenate([xy, sc[..., None]], -1)                                # [T, 133, 3]
  out = empty_keypoints(xy.shape[0])
  for k, c in WHOLEBODY_TO_BODY_25.items():
    out["body"][:, k] = full[:, c]
  for k, (i, j) in WHOLEBODY_MIDPOINTS.items():
    out["body"][:, k, :2] = 0.5 * (full[:, i, :2] + full[:, j, :2])
    out["body"][:, k, 2] = np.minimum(full[:, i, 2], full[:, j, 2])
  out["face"][:, :68] = full[:, WHOLEBODY_FACE]
  for k, (i, j) in ((68, (36, 42)), (69, (42, 48))):
    eye = out["face"][:, i:j]
    out["face"][:, k, :2] = eye[..., :2].mean(1)
    out["face"][:, k, 2] = eye[..., 2].min(1)
  out["hand_left"][:] = full[:, WHOLEBODY_HAND_LEFT]
  out["hand_right"][:] = full[:, WHOLEBODY_HAND_RIGHT]
  for a in out.values():
    a[a[..., 2] <= 0] = 0.0
  return out


def extract_rtmlib(frames: np.ndarray, det_onnx: str, pose_onnx: str, *,
                   det_input_size: tuple[int, int] = (640, 640),
                   pose_input_size: tuple[int, int] = (288, 384),
                   backend: str = "onnxruntime", device: str = "cpu") -> dict[str, np.ndarray]:
  """Whole-body keypoints with rtmlib from local ONNX files: frames [T,H,W,3] uint8 RGB -> `Keypoints`.

  det_onnx: a YOLOX person detector; pose_onnx: an RTMW / DWPose COCO-WholeBody model (133 points);
  input sizes are (width, height) as rtmlib takes them (RTMW-x 384x288: (288, 384); 256x192 models:
  (192, 256)). rtmlib downloads a model whenever the path is not an existing file, so both paths are
  checked first: a missing file raises DataError naming it; rtmlib missing raises ImportError. The
  largest person per frame is kept (frames without one are zeros).
  """
  for what, p in (("detector", det_onnx), ("pose model", pose_onnx)):
    if not (isinstance(p, (str, os.PathLike)) and os.path.isfile(p)):
      raise DataError(f"rtmlib {what} ONNX file not found (local files only; nothing is downloaded)",
                      path=str(p))
  try:
    from rtmlib import Wholebody
  except ImportError as e:
    raise ImportError("extract_rtmlib needs rtmlib (pip install rtmlib onnxruntime; it needs "
                      f"opencv-python too): {e}") from e
  model = Wholebody(det=str(det_onnx), det_input_size=tuple(det_input_size), pose=str(pose_onnx),
                    pose_input_size=tuple(pose_input_size), to_openpose=False, backend=backend,
                    device=device)
  frames = np.asarray(frames)
  t_len = frames.shape[0]
  xy = np.zeros((t_len, 133, 2), np.float32)
  sc = np.zeros((t_len, 133), np.float32)
  for t in range(t_len):
    kps, scores = model(np.ascontiguousarray(frames[t][..., ::-1]))             # rtmlib takes BGR
    kps, scores = np.asarray(kps, np.float32), np.asarray(scores, np.float32)
    if kps.ndim != 3 or not len(kps):
      continue
    people = [wholebody_to_openpose(kps[i:i + 1], scores[i:i + 1]) for i in range(len(kps))]
    best = _largest([{p: d[p][0] for p in PARTS} for d in people])
    xy[t], sc[t] = kps[best], scores[best]
  return wholebody_to_openpose(xy, sc)
