"""sync.png: per clip, the mouth opening measured on the frames (red) over the audio energy (blue), both
z-scored per clip, frame by frame — the picture behind sync.txt's numbers. Drawn with PIL (no plotting
dependency).
"""
from __future__ import annotations

import numpy as np

ROW_H, PX_PER_FRAME, LABEL_W = 56, 8, 150
RED, BLUE, GREY = (200, 40, 40), (40, 80, 200), (200, 200, 200)


def _z(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return (x - x.mean()) / max(float(x.std()), 1e-8)


def sync_figure(rows: list[tuple[str, np.ndarray, np.ndarray]]):
  """rows: (label, mouth opening [T], audio energy [T]) -> PIL.Image, one strip per row."""
  from PIL import Image, ImageDraw
  if not rows:
    raise ValueError("sync_figure needs at least one row")
  t = max(len(r[1]) for r in rows)
  w, h = LABEL_W + PX_PER_FRAME * t + 8, ROW_H * len(rows) + 16
  img = Image.new("RGB", (w, h), (255, 255, 255))
  d = ImageDraw.Draw(img)
  d.text((4, 2), "red: mouth opening   blue: audio energy   (z-scored per clip)", fill=(0, 0, 0))
  for i, (label, opening, energy) in enumerate(rows):
    top = 16 + i * ROW_H
    mid = top + ROW_H // 2
    d.line([(LABEL_W, mid), (w - 8, mid)], fill=GREY)
    d.text((4, mid - 6), label[:22], fill=(0, 0, 0))
    for series, colour in ((opening, RED), (energy, BLUE)):
      y = mid - np.clip(_z(series), -2.5, 2.5) * (ROW_H / 2 - 4) / 2.5
      pts = [(LABEL_W + PX_PER_FRAME * j + PX_PER_FRAME // 2, float(v)) for j, v in enumerate(y)]
      d.line(pts, fill=colour, width=2)
  return img
