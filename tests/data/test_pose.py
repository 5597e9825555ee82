"""shared.data.pose: OpenPose JSON round trip and errors, the OpenPose-style renderer, SynthCue and
COCO-WholeBody conversions, the rtmlib guard (rtmlib itself is not run)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from shared.data import pose as P
from shared.data.synthcue import SynthCue
from shared.errors import DataError


def _random_keypoints(t_len: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  kp = {}
  for part, (k, _) in P.PARTS.items():
    a = np.zeros((t_len, k, 3), np.float32)
    a[..., :2] = rng.uniform(0, 640, (t_len, k, 2)).astype(np.float32)
    a[..., 2] = rng.uniform(0.01, 1, (t_len, k)).astype(np.float32)
    a[rng.random((t_len, k)) < 0.2] = 0.0           # some absent points
    kp[part] = a
  for a in kp.values():
    a[2:3] = 0.0                                      # frame 2: nobody
  return kp


# ----------------------------------------------------------------------------- JSON

def test_round_trip_exact(tmp_path):
  kp = _random_keypoints(5)
  paths = P.write_openpose_dir(str(tmp_path), kp, "clip")
  assert [os.path.basename(p) for p in paths] == [f"clip_{t:012d}_keypoints.json" for t in range(5)]
  doc = json.load(open(paths[0]))
  assert doc["version"] == 1.3 and len(doc["people"]) == 1
  person = doc["people"][0]
  assert person["person_id"] == [-1] and person["pose_keypoints_3d"] == []
  assert len(person["pose_keypoints_2d"]) == 75 and len(person["face_keypoints_2d"]) == 210
  assert len(person["hand_left_keypoints_2d"]) == 63 == len(person["hand_right_keypoints_2d"])
  assert json.load(open(paths[2]))["people"] == []
  back = P.read_openpose_dir(str(tmp_path))
  for part in P.PARTS:
    assert back[part].dtype == np.float32 and back[part].tobytes() == kp[part].tobytes(), part
  units = P.read_openpose_dir(str(tmp_path), 5, frame_size=(480, 640))
  ref = P.to_frame_units(kp, 480, 640)
  for part in P.PARTS:
    np.testing.assert_allclose(units[part], ref[part], rtol=0, atol=1e-7)
  np.testing.assert_allclose(P.to_pixels(units, 480, 640)["body"], kp["body"], atol=1e-3)
  with pytest.raises(DataError, match="beyond T=3"):                 # would leave a longer clip
    P.write_openpose_dir(str(tmp_path), {p: a[:3] for p, a in kp.items()}, "clip")


def _person(scale: float, **parts) -> dict:
  out = {"person_id": [-1]}
  for part, (k, key) in P.PARTS.items():
    a = np.zeros((k, 3))
    a[:4] = [[10, 10, 0.9], [10 + scale, 10, 0.9], [10, 10 + scale, 0.9], [10 + scale, 10 + scale, 0.9]]
    out[key] = parts.get(part, a.reshape(-1).tolist())
  return out


def test_people_selection_and_empty_parts(tmp_path):
  frames = [[_person(5), _person(50)], [], [_person(30, face=[], hand_left=[])]]
  for t, people in enumerate(frames):
    with open(tmp_path / P.openpose_filename("v", t), "w") as f:
      json.dump({"version": 1.3, "people": people}, f)
  big = P.read_openpose_dir(str(tmp_path))
  first = P.read_openpose_dir(str(tmp_path), person=0)
  second = P.read_openpose_dir(str(tmp_path), person=1)
  assert big["body"][0, 1, 0] == 60 and first["body"][0, 1, 0] == 15      # largest box wins
  assert not big["body"][1].any() and not big["hand_right"][1].any()     # no people -> zeros
  assert not second["body"][2].any()                                      # index past the people
  assert big["body"][2, 3, 2] == np.float32(0.9)
  assert not big["face"][2].any() and not big["hand_left"][2].any()      # [] = not extracted


def _write_clip(path, t_len=4):
  P.write_openpose_dir(str(path), _random_keypoints(t_len), "cue")


@pytest.mark.parametrize("damage, match", [
    ("malformed", r"frame 1: malformed JSON.*cue_000000000001_keypoints\.json"),
    ("length", r"frame 3: people\[0\]\.hand_left_keypoints_2d has 60 values, expected 63"
               r".*cue_000000000003_keypoints\.json"),
    ("gap", r"frame 1 is missing.*cue_000000000001_keypoints\.json"),
    ("strings", r"frame 1: people\[0\]\.pose_keypoints_2d holds non-numbers"),
    ("n_frames", r"frame 3 is missing.*cue_000000000003_keypoints\.json"),
    ("two_clips", r"several clips \['cue', 'other'\]"),
])
def test_bad_files_name_file_and_frame(tmp_path, damage, match):
  _write_clip(tmp_path)
  fn = lambda t: tmp_path / P.openpose_filename("cue", t)  # noqa: E731
  n_frames = None
  if damage == "malformed":
    fn(1).write_text(fn(1).read_text()[:-7])
  elif damage == "length":
    doc = json.loads(fn(3).read_text())                 # (frame 2 has no people)
    doc["people"][0]["hand_left_keypoints_2d"] = doc["people"][0]["hand_left_keypoints_2d"][:60]
    fn(3).write_text(json.dumps(doc))
  elif damage == "gap":
    fn(1).unlink()
  elif damage == "strings":
    doc = json.loads(fn(1).read_text())
    doc["people"][0]["pose_keypoints_2d"][4] = "x"
    fn(1).write_text(json.dumps(doc))
  elif damage == "n_frames":
    fn(3).unlink()
    n_frames = 4
  elif damage == "two_clips":
    P.write_openpose_dir(str(tmp_path), _random_keypoints(2), "other")
  with pytest.raises(DataError, match=match) as e:
    P.read_openpose_dir(str(tmp_path), n_frames)
  assert e.value.path and str(tmp_path) in e.value.path
  if damage == "two_clips":
    assert P.read_openpose_dir(str(tmp_path), name="other")["body"].shape == (2, 25, 3)
  with pytest.raises(DataError, match="not found"):
    P.read_openpose_dir(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- renderer

def _skeleton(scale: float = 1.0) -> dict:
  """Neck (100,50) -> RShoulder (60,50) -> RElbow (60,110); Neck -> MidHip (100,150); LShoulder
  absent (confidence 0), LElbow below threshold; right hand: wrist + index finger only (not all on
  one line: OpenPose skips a part whose box has no area)."""
  kp = P.empty_keypoints(1)
  b = kp["body"][0]
  b[1], b[2], b[3], b[8] = [100, 50, 0.9], [60, 50, 0.8], [60, 110, 0.7], [100, 150, 0.9]
  b[5] = [140, 50, 0.0]
  b[6] = [140, 110, 0.04]
  h = kp["hand_right"][0]
  h[0], h[5], h[6] = [140, 190, .9], [150, 160, .9], [150, 140, .9]
  h[7], h[8] = [150, 120, .9], [150, 100, .9]
  for a in kp.values():
    a[..., :2] *= scale
  return kp


def test_renderer_colours_thresholds_and_sizes():
  kp = _skeleton()
  img = P.pose_maps(kp, 200, 200)
  assert img.shape == (1, 200, 200, 3) and img.dtype == np.uint8
  im = img[0]
  c = P.BODY_25_COLORS
  assert (im[50, 80] == c[2]).all()              # Neck->RShoulder has RShoulder's colour
  assert (im[80, 60] == c[3]).all()              # RShoulder->RElbow: RElbow's
  assert (im[100, 100] == c[8]).all()            # Neck->MidHip: MidHip's
  assert (im[110, 60] == c[3]).all()             # the dot at RElbow: its own colour
  assert (im[130, 150] == P.HAND_COLORS[7]).all()  # hand bone 6->7: keypoint 7's colour
  assert (im[175, 145] == P.HAND_COLORS[5]).all()  # bone 0->5
  assert not im[40:60, 112:200].any()            # absent LShoulder, LElbow under 0.05: nothing
  assert not im[60:140, 120:145].any()
  # OpenPose's sizes: body box 40x100 of 200 -> t = max(round(200/75 * 0.5), 2) = 2 -> line 2 wide
  col = (im[:, 80] != 0).any(-1)
  assert col[49:52].all() and not col[47] and not col[53]
  big = P.pose_maps(_skeleton(4.0), 800, 800)[0]   # t = round(800/75 * 0.5) = 5 -> line 4
  width = (big[:, 320] != 0).any(-1)
  assert width.sum() == 5 and width[198:203].all()
  assert not P.pose_maps(P.empty_keypoints(3), 64, 80).any()
  # thresholds: one override for all parts; 0.04 < 0.05 drawn only when the threshold is lower
  low = P.pose_maps(kp, 200, 200, threshold=0.01)[0]
  assert (low[110, 140] == c[6]).all() and not im[110, 140].any()
  assert not low[50, 120].any() and not low[50, 140].any()   # confidence 0 never drawn


def test_renderer_face_dots_and_lines():
  kp = P.empty_keypoints(2)
  kp["face"][0, 48] = [40, 60, 0.9]
  kp["face"][0, 49] = [80, 60, 0.9]
  kp["face"][0, 50] = [80, 90, 0.3]               # under the face threshold 0.4
  dots = P.pose_maps(kp, 120, 120)
  assert (dots[0, 60, 40] == 255).all() and (dots[0, 60, 80] == 255).all()
  assert not dots[0, 60, 50:70].any() and not dots[0, 85:95, 75:85].any() and not dots[1].any()
  lines = P.pose_maps(kp, 120, 120, face_lines=True)
  assert (lines[0, 60, 50:70] == 255).all()
  assert not P.pose_maps(kp, 120, 120, parts=("body",)).any()


# ----------------------------------------------------------------------------- SynthCue

@pytest.fixture(scope="module")
def cued_pose():
  return SynthCue(num_samples=1, seed=0, mode="cued", render_video=False, render_audio=False)[0]["pose"]


def test_synthcue_mapping_and_hand_motion(cued_pose, tmp_path):
  size = 128
  kp = P.synthcue_to_openpose(cued_pose, size, size)
  px = lambda s: cued_pose[:, s, :2] * size - 0.5  # noqa: E731
  for s, part, k, _ in P.SYNTHCUE_TO_OPENPOSE:
    np.testing.assert_allclose(kp[part][:, k, :2], np.where(cued_pose[:, s, 2:] > 0, px(s), 0),
                               atol=1e-4, err_msg=f"{s}->{part}[{k}]")
    np.testing.assert_array_equal(kp[part][:, k, 2], cued_pose[:, s, 2])
  mapped = {(p, k) for _, p, k, _ in P.SYNTHCUE_TO_OPENPOSE} | {
      ("hand_right", k) for k in range(21)} | {("hand_left", k) for k in range(21)}
  for part, (n, _) in P.PARTS.items():
    for k in range(n):
      if (part, k) not in mapped:
        assert not kp[part][:, k].any(), (part, k)
  assert not kp["hand_left"].any()                  # cued mode: one hand
  # filled finger joints lie on the knuckle-base -> tip line of each finger
  h = kp["hand_right"][..., :2]
  np.testing.assert_allclose(h[:, 3] - h[:, 2], h[:, 2] - h[:, 1], atol=1e-3)
  np.testing.assert_allclose(h[:, 4] - h[:, 3], h[:, 3] - h[:, 2], atol=1e-3)

  maps = P.pose_maps(kp, size, size)
  assert maps.shape == (len(cued_pose), size, size, 3) and (maps.reshape(len(maps), -1).any(1)).all()
  hand = P.pose_maps(kp, size, size, parts=("hand_right",))
  lit = hand.any(-1)
  assert lit.reshape(len(lit), -1).any(1).all()
  yy, xx = np.mgrid[:size, :size]
  n = lit.sum((1, 2))
  centroid = np.stack([(lit * xx).sum((1, 2)) / n, (lit * yy).sum((1, 2)) / n], -1)
  keypts = h.mean(1)
  assert np.abs(centroid - keypts).max() < 6.0      # the drawn hand is where the keypoints are
  assert np.ptp(centroid, 0).max() > 15.0            # ... and it moves (cue positions, rest)
  for d in range(2):
    assert np.corrcoef(centroid[:, d], keypts[:, d])[0, 1] > 0.95
  # the same reader serves synthetic data: JSON round trip back to SynthCue's frame units
  P.write_openpose_dir(str(tmp_path), kp, "synthcue")
  back = P.read_openpose_dir(str(tmp_path), len(cued_pose), frame_size=(size, size))
  np.testing.assert_allclose(back["face"][:, 48, :2], cued_pose[:, 4, :2], atol=1e-5)
  np.testing.assert_allclose(back["hand_right"][:, 8, :2], cued_pose[:, 10, :2], atol=1e-5)


# ----------------------------------------------------------------------------- COCO-WholeBody

def test_wholebody_conversion_indices():
  t_len = 2
  idx = np.arange(133, dtype=np.float32)
  xy = np.broadcast_to(np.stack([idx, 1000 + idx], -1), (t_len, 133, 2)).copy()
  sc = np.broadcast_to(0.5 + idx / 1000, (t_len, 133)).astype(np.float32).copy()
  sc[1, 10] = 0.0                                     # frame 1: right wrist not seen
  kp = P.wholebody_to_openpose(xy, sc)
  src = lambda a: a[0, :, 0]  # noqa: E731   the COCO-WholeBody index each slot came from
  named = {0: 0, 1: 5.5, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 11.5, 9: 12, 10: 14, 11: 16, 12: 11,
           13: 13, 14: 15, 15: 2, 16: 1, 17: 4, 18: 3, 19: 17, 20: 18, 21: 19, 22: 20, 23: 21, 24: 22}
  np.testing.assert_array_equal(src(kp["body"]), [named[k] for k in range(25)])
  np.testing.assert_array_equal(kp["body"][0, :, 1], 1000 + src(kp["body"]))
  assert kp["body"][0, 1, 2] == sc[0, 5] and kp["body"][0, 8, 2] == sc[0, 11]  # min of the pair
  np.testing.assert_array_equal(src(kp["face"])[:68], np.arange(23, 91))
  np.testing.assert_allclose(src(kp["face"])[68:], [23 + 38.5, 23 + 44.5])  # pupils: eye centres
  np.testing.assert_array_equal(src(kp["hand_left"]), np.arange(91, 112))
  np.testing.assert_array_equal(src(kp["hand_right"]), np.arange(112, 133))
  assert not kp["body"][1, 4].any() and kp["body"][0, 4, 2] > 0   # score 0 -> absent
  with pytest.raises(DataError, match=r"\[T, 133, 2\]"):
    P.wholebody_to_openpose(xy[:, :17], sc[:, :17])


def test_extract_rtmlib_errors(tmp_path, monkeypatch):
  frames = np.zeros((1, 32, 32, 3), np.uint8)
  det, pose = tmp_path / "yolox.onnx", tmp_path / "rtmw.onnx"
  with pytest.raises(DataError, match="detector ONNX file not found") as e:
    P.extract_rtmlib(frames, str(det), str(pose))
  assert e.value.path == str(det)
  det.write_bytes(b"")
  with pytest.raises(DataError, match="pose model ONNX file not found"):
    P.extract_rtmlib(frames, str(det), str(pose))
  pose.write_bytes(b"")
  monkeypatch.setitem(sys.modules, "rtmlib", None)      # as if not installed
  with pytest.raises(ImportError, match="pip install rtmlib"):
    P.extract_rtmlib(frames, str(det), str(pose))
