"""Figure: a SynthCue cued clip's frames (top) and its OpenPose-style pose maps (bottom).

    python benchmarks/pose_figure.py [--out docs/img/pose_maps_synthcue.png]

The pose maps are `shared.data.pose.pose_maps` of `synthcue_to_openpose(sample["pose"])`, the same
renderer that draws real OpenPose JSON (`read_openpose_dir`). Not a benchmark: it writes one PNG.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from shared.data.pose import pose_maps, synthcue_to_openpose
from shared.data.synthcue import SynthCue


def save_pose_figure(path: str = "docs/img/pose_maps_synthcue.png", *, n_frames: int = 4,
                     size: int = 256, index: int = 0, seed: int = 0) -> str:
  """Write a 2 x n_frames grid (video above, pose map below) of SynthCue cued sample `index`; the
  frames are spread over the clip's cued part (first to last hand arrival)."""
  sample = SynthCue(num_samples=index + 1, seed=seed, mode="cued", frame_size=size,
                    render_audio=False)[index]
  video, pose = sample["video"], sample["pose"]
  maps = pose_maps(synthcue_to_openpose(pose, size, size), size, size)
  first, last = int(sample["hand_frames"][0]), int(sample["syllable_frames"][-1, 1])
  first, last = max(first, 0), min(max(last, first + 1), len(video) - 1)
  frames = np.linspace(first, last, n_frames).round().astype(int)
  gap = 4
  grid = np.full((2 * size + gap, n_frames * size + (n_frames - 1) * gap, 3), 255, np.uint8)
  for j, t in enumerate(frames):
    x = j * (size + gap)
    grid[:size, x:x + size] = video[t]
    grid[size + gap:, x:x + size] = maps[t]
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(grid).save(path)
  return path


if __name__ == "__main__":
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="docs/img/pose_maps_synthcue.png")
  ap.add_argument("--size", type=int, default=256)
  print(save_pose_figure(ap.parse_args().out, size=ap.parse_args().size))
