"""SynthCue drawing: anti-aliased mouth, face and hands with numpy (no Python loop over pixels).

Coordinates: frame units in [0, 1] (x right, y down); the face is an ellipse centred at `centre`
with half-width `unit` (1 face unit). Shapes are drawn from signed distances d (pixels) with
coverage clip(0.5 - d, 0, 1), which anti-aliases edges.
"""
from __future__ import annotations

import numpy as np

from shared.data.synthcue_phonology import HAND_SHAPES

# finger directions (radians, y down; -pi/2 = up) for thumb..pinky before the hand's tilt
_FINGER_ANGLES = np.deg2rad(np.array([-165.0, -112.0, -92.0, -74.0, -56.0], np.float32))
_FINGER_LEN = np.array([0.62, 0.92, 1.0, 0.9, 0.72], np.float32)  # in face units
PALM_RADIUS = 0.34
_FINGER_RADIUS = 0.085


def _cover(d: np.ndarray) -> np.ndarray:
  return np.clip(0.5 - d, 0.0, 1.0)


def ellipse_sd(x, y, cx, cy, a, b):
  """Approximate signed distance (same units as x) to an axis-aligned ellipse; broadcasts."""
  dx, dy = (x - cx) / a, (y - cy) / b
  q = dx * dx + dy * dy
  g = 2.0 * np.sqrt((dx / a) ** 2 + (dy / b) ** 2) + 1e-6
  return (q - 1.0) / g


def mouth_layers(params: np.ndarray, gx: np.ndarray, gy: np.ndarray, px: float):
  """Coverage of lips, mouth cavity and teeth.

  Args:
    params: [T, 3] (opening, width, rounding) in [0, 1].
    gx, gy: [h, w] grid in mouth units (1 = nominal half-width of the mouth), centred on the mouth.
    px: pixels per mouth unit (anti-aliasing scale).
  Returns:
    lips, cavity, teeth: [T, h, w] float32 coverages (each already inside the previous).
  """
  o, w, r = (params[:, i][:, None, None] for i in range(3))
  a_out = (0.55 + 0.5 * w) * (1.0 - 0.3 * r)
  b_out = 0.26 + 0.5 * o + 0.12 * r
  a_in = a_out * (0.8 - 0.3 * r)
  b_in = 0.025 + 0.46 * o
  lips = _cover(ellipse_sd(gx, gy, 0.0, 0.0, a_out, b_out) * px)
  cavity = _cover(ellipse_sd(gx, gy, 0.0, 0.0, a_in, b_in) * px)
  teeth_on = np.clip((o - 0.08) * 4.0, 0.0, 1.0) * (1.0 - r)
  teeth = cavity * _cover((gy + 0.35 * b_in) * px) * teeth_on
  return lips.astype(np.float32), cavity.astype(np.float32), teeth.astype(np.float32)


def mouth_gray(params: np.ndarray, size: tuple[int, int], skin: float, lip: float,
               extent: float = 1.35) -> np.ndarray:
  """The lip-ROI stream: [T, h, w] uint8 grayscale mouth, `extent` mouth units either side."""
  h, w = size
  xs = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
  ys = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
  gx, gy = np.meshgrid(xs * extent, ys * extent * h / w)
  lips, cav, teeth = mouth_layers(params, gx, gy, w / (2 * extent))
  img = skin + (lip - skin) * lips
  img = img + (25.0 - img) * cav
  img = img + (225.0 - img) * teeth
  return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def face_base(size: int, centre, unit: float, face_rgb, bg_rgb) -> np.ndarray:
  """Static background + face ellipse + eyes: [H, W, 3] uint8."""
  g = (np.arange(size, dtype=np.float32) + 0.5) / size
  gx, gy = np.meshgrid(g, g)
  img = np.broadcast_to(np.asarray(bg_rgb, np.float32), (size, size, 3)).copy()
  face = _cover(ellipse_sd(gx, gy, centre[0], centre[1], unit, 1.3 * unit) * size)[..., None]
  img += (np.asarray(face_rgb, np.float32) - img) * face
  for ex in (-0.4, 0.4):
    eye = _cover(ellipse_sd(gx, gy, centre[0] + ex * unit, centre[1] - 0.3 * unit, 0.13 * unit,
                            0.08 * unit) * size)[..., None]
    img += (np.float32(30.0) - img) * eye
  return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def hand_keypoints(anchor: np.ndarray, shape: np.ndarray, unit: float, tilt: float = -0.35,
                   mirror: bool = False) -> np.ndarray:
  """Wrist + five fingertips, [T, 6, 2] frame units, from anchor [T, 2] (knuckle centre) and the
  per-frame extension of each finger `shape` [T, 5] (1 = extended, 0 = curled)."""
  sgn = -1.0 if mirror else 1.0
  ang = _FINGER_ANGLES + tilt
  dirs = np.stack([sgn * np.cos(ang), np.sin(ang)], -1)                  # [5, 2]
  down = np.array([-sgn * np.sin(tilt), np.cos(tilt)], np.float32)       # wrist direction
  wrist = anchor + down * (0.55 * unit)
  base = anchor[:, None, :] + dirs[None] * (0.22 * unit)
  length = (0.3 + 0.7 * shape) * _FINGER_LEN                              # [T, 5]
  tips = base + dirs[None] * (length[..., None] * 0.6 * unit)
  return np.concatenate([wrist[:, None, :], tips], 1).astype(np.float32)


def draw_hands(frames: np.ndarray, kps: np.ndarray, visible: np.ndarray, unit: float, rgb) -> None:
  """Draw hands in place: frames [T, H, W, 3] uint8, kps [T, n_hands, 6, 2], visible [T, n]."""
  t_len, size = frames.shape[0], frames.shape[1]
  win = int(np.ceil(2.6 * unit * size)) | 1
  half = win // 2
  rgb = np.asarray(rgb, np.float32)
  g = np.arange(win, dtype=np.float32) - half
  for hnd in range(kps.shape[1]):
    wrist, tips = kps[:, hnd, 0], kps[:, hnd, 1:]
    knuckle_frame = wrist + (tips.mean(1) - wrist) * 0.55
    centre_px = np.round(knuckle_frame * size).astype(np.int32)        # window around the palm
    off = (centre_px - half).astype(np.float32)                        # [T, 2] window origin
    def pxy(p):  # frame units -> window pixels
      return p * size - (off[:, None, :] if p.ndim == 3 else off)
    wr = pxy(wrist)
    knuckle = wr + (pxy(tips).mean(1) - wr) * 0.55
    gx = g[None, None, :] + half
    gy = g[None, :, None] + half
    d_palm = np.hypot(gx - knuckle[:, 0, None, None], gy - knuckle[:, 1, None, None]) - \
        PALM_RADIUS * unit * size
    d_arm = _capsule(gx, gy, wr, knuckle, 0.2 * unit * size)
    cover = np.maximum(_cover(d_palm), _cover(d_arm))
    base = knuckle[:, None, :] + (pxy(tips) - knuckle[:, None, :]) * 0.25
    for f in range(5):
      cover = np.maximum(cover, _cover(_capsule(gx, gy, base[:, f], pxy(tips)[:, f],
                                                _FINGER_RADIUS * unit * size)))
    cover *= visible[:, hnd, None, None]
    for t in range(t_len):
      x0, y0 = int(off[t, 0]), int(off[t, 1])
      xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + win, size), min(y0 + win, size)
      if xa >= xb or ya >= yb:
        continue
      c = cover[t, ya - y0:yb - y0, xa - x0:xb - x0, None]
      region = frames[t, ya:yb, xa:xb].astype(np.float32)
      frames[t, ya:yb, xa:xb] = region + (rgb - region) * c + 0.5


def _capsule(gx, gy, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
  """Distance to segments a->b ([T, 2] each) minus radius: [T, h, w]."""
  ax, ay = a[:, 0, None, None], a[:, 1, None, None]
  bx, by = b[:, 0, None, None] - ax, b[:, 1, None, None] - ay
  px, py = gx - ax, gy - ay
  hh = np.clip((px * bx + py * by) / (bx * bx + by * by + 1e-6), 0.0, 1.0)
  return np.hypot(px - bx * hh, py - by * hh) - radius


def shape_fingers(shape_ids: np.ndarray) -> np.ndarray:
  """Hand-shape ids [T] -> finger extensions [T, 5]."""
  return HAND_SHAPES[np.asarray(shape_ids, np.int32)]


# SynthCue's keypoint layout: (channel, edges) per group; see shared/data/synthcue.py
POSE_GROUPS = (
    (0, ((0, 1), (0, 2), (1, 2), (2, 3), (4, 6), (6, 5), (5, 7), (7, 4))),        # face + lips
    (1, tuple((8, k) for k in range(9, 14))),                                    # right hand
    (2, tuple((14, k) for k in range(15, 20))),                                  # left hand
)


def pose_map(pose: np.ndarray, size: int, groups=POSE_GROUPS, width: float = 1.0) -> np.ndarray:
  """Render keypoints as a skeleton image (UniCUE's pose stream): [T, size, size, 3] uint8.

  Args:
    pose: [T, K, 3] (x, y in [0, 1], confidence); an edge is drawn with the smaller confidence of
      its two ends (0 = absent).
    groups: (channel, edges) per body part; each part goes to its own colour channel.
    width: line half-width in pixels.
  """
  t_len = pose.shape[0]
  g = np.arange(size, dtype=np.float32) + 0.5
  gx, gy = g[None, None, :], g[:, None]
  out = np.zeros((t_len, size, size, 3), np.float32)
  for channel, edges in groups:
    for a, b in edges:
      conf = np.minimum(pose[:, a, 2], pose[:, b, 2])
      if not conf.any():
        continue
      d = _capsule(gx, gy, pose[:, a, :2] * size, pose[:, b, :2] * size, width)
      out[..., channel] = np.maximum(out[..., channel], _cover(d) * conf[:, None, None])
  return (out * 255.0 + 0.5).astype(np.uint8)
