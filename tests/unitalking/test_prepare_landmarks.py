"""prepare's landmark crop (--det_onnx / --pose_onnx): the eye centres of a whole-body model's 68 face points place
the face window. No rtmlib model ships here, so the model is replaced by one that reports the SynthCue face's true
eye landmarks as COCO-WholeBody face points (pixels): the detected crop must equal the crop from the clip's own
pose, in a larger, off-centre frame too; no face -> a DataError naming the clip."""
import numpy as np
import pytest

from configs.unitalking.tiny import get_config
from shared.data import pose as pose_lib
from shared.errors import DataError
from unitalking_jax import data as data_lib
from unitalking_jax import prepare as prep


def _model_from(eyes_px, found=True):
  """A stand-in for extract_rtmlib: eyes_px [2, 2] (person's right, left) in pixels -> keypoints with face points
  36-41 around the right eye, 42-47 around the left (each set's mean is the eye centre)."""
  def extract(frames, det, pose, **kw):
    face = np.zeros((frames.shape[0], 68, 3), np.float32)
    ring = np.array([[-2, 0], [-1, -1], [1, -1], [2, 0], [1, 1], [-1, 1]], np.float32)
    for k, (a, b) in enumerate(((36, 42), (42, 48))):
      face[:, a:b, :2] = eyes_px[k] + ring - 0.5    # (pixel centres: detect_eyes adds 0.5)
      face[:, a:b, 2] = 1.0 if found else 0.0
    return {"face": face}
  return extract


@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (30, 10, 70, 20)])   # top, bottom, left, right (a wider frame)
def test_detected_eyes_give_the_clips_own_crop(monkeypatch, pad):
  cfg = get_config()
  src = data_lib.source(cfg, "test")
  s = dict(src[0])
  top, bottom, left, right = pad
  video = np.pad(s["video"], ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
  h, w = video.shape[1:3]
  pose = np.asarray(s["pose"], np.float32).copy()        # frame units of the 80 px frame -> of the padded frame
  pose[..., 0] = (pose[..., 0] * 80 + left) / w
  pose[..., 1] = (pose[..., 1] * 80 + top) / h
  own = prep.conform(dict(s, video=video, pose=pose), cfg, 0)
  eyes_px = pose[0, 0:2, :2] * np.array([w, h], np.float32)
  monkeypatch.setattr(pose_lib, "extract_rtmlib", _model_from(eyes_px))
  bare = {k: v for k, v in s.items() if k != "pose"}
  got = prep.conform(dict(bare, video=video), cfg, 0, landmarks=("det.onnx", "pose.onnx"))
  np.testing.assert_allclose(got["pose"][0, 0:2, :2], own["pose"][0, 0:2, :2], atol=1e-5)
  a, b = data_lib.clip_video(got, cfg)[0], data_lib.clip_video(own, cfg)[0]   # the first frame's face crop
  assert a.shape == (32, 32, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_no_face_is_named(monkeypatch):
  cfg = get_config()
  s = {k: v for k, v in data_lib.source(cfg, "test")[0].items() if k != "pose"}
  monkeypatch.setattr(pose_lib, "extract_rtmlib", _model_from(np.zeros((2, 2), np.float32), found=False))
  with pytest.raises(DataError, match="no face") as e:
    prep.conform(dict(s, path="clips/a.mp4"), cfg, 0, landmarks=("det.onnx", "pose.onnx"))
  assert "clips/a.mp4" in str(e.value)
