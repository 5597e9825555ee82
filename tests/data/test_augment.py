"""Augmentations: shapes, seeding, crop windows, flips, masks, achieved SNR, word-drop rate."""
from __future__ import annotations

import numpy as np
import pytest

from shared.data import augment as A
from shared.errors import ConfigError


def _clip(t=6, h=96, w=96):
  return np.random.default_rng(0).integers(0, 256, (t, h, w), dtype=np.uint8)


def test_crops_are_windows_shared_across_frames_and_seeded():
  v = _clip()
  c = A.center_crop(v, 88)
  np.testing.assert_array_equal(c, v[:, 4:92, 4:92])
  r1 = A.random_crop(v, np.random.default_rng(3), 88)
  r2 = A.random_crop(v, np.random.default_rng(3), 88)
  np.testing.assert_array_equal(r1, r2)
  # the crop is one window for the whole clip: locate frame 0's window, check every frame
  hits = [(i, j) for i in range(9) for j in range(9) if np.array_equal(v[0, i:i + 88, j:j + 88], r1[0])]
  assert len(hits) == 1
  i, j = hits[0]
  np.testing.assert_array_equal(r1, v[:, i:i + 88, j:j + 88])
  offsets = {A.random_crop(v, np.random.default_rng(s), 88)[0, 0, 0] for s in range(20)}
  assert len(offsets) > 3  # different seeds give different windows
  assert A.center_crop(np.zeros((2, 40, 30, 3), np.uint8), (32, 24)).shape == (2, 32, 24, 3)
  with pytest.raises(ConfigError):
    A.center_crop(v, 100)


def test_flip_and_normalize():
  v = _clip(2, 8, 8)
  flips = [A.horizontal_flip(v, np.random.default_rng(s)) for s in range(40)]
  flipped = [np.array_equal(f, v[:, :, ::-1]) for f in flips]
  unchanged = [np.array_equal(f, v) for f in flips]
  assert all(a or b for a, b in zip(flipped, unchanged)) and 5 < sum(flipped) < 35
  assert A.horizontal_flip(v, np.random.default_rng(0), p=1.0)[0, 0, 0] == v[0, 0, -1]
  n = A.normalize_lips(np.full((1, 2, 2), 255, np.uint8))
  np.testing.assert_allclose(n, (1 - 0.421) / 0.165, rtol=1e-6)


def test_color_jitter_is_one_transform_per_clip_and_seeded():
  rng = np.random.default_rng(0)
  v = rng.integers(0, 256, (4, 10, 10, 3), dtype=np.uint8)
  v[1] = v[0]                                            # two equal frames stay equal: one transform per clip
  a = A.color_jitter(v, np.random.default_rng(5))
  assert a.shape == v.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a[0], a[1])
  np.testing.assert_array_equal(a, A.color_jitter(v, np.random.default_rng(5)))
  assert not np.array_equal(a, A.color_jitter(v, np.random.default_rng(6)))
  # the identity settings return the clip; p_gray 1 gives equal channels
  same = A.color_jitter(v, rng, brightness=0, contrast=0, saturation=0, permute_channels=False, p_gray=0)
  np.testing.assert_array_equal(same, v)
  g = A.color_jitter(v, rng, p_gray=1.0)
  assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
  # a channel permutation alone moves the channels, nothing else
  seen = {tuple(A.color_jitter(v[:, :1, :1], np.random.default_rng(s), brightness=0, contrast=0, saturation=0,
                               p_gray=0)[0, 0, 0]) for s in range(30)}
  assert len(seen) == 6 and all(sorted(c) == sorted(v[0, 0, 0]) for c in seen)
  with pytest.raises(ConfigError, match=r"\(4, 10, 10\)"):
    A.color_jitter(v[..., 0], rng)


def test_random_translate_shifts_the_clip_with_edges_replicated():
  v = np.arange(2 * 6 * 6, dtype=np.int32).reshape(2, 6, 6)
  outs = [A.random_translate(v, np.random.default_rng(s), 2) for s in range(40)]
  shifts = set()
  for o in outs:
    hit = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
           if np.array_equal(o, v[:, np.clip(np.arange(6) - dy, 0, 5)][:, :, np.clip(np.arange(6) - dx, 0, 5)])]
    assert hit                                            # every output is one whole-clip shift
    shifts.add(hit[0])
  assert len(shifts) > 10
  np.testing.assert_array_equal(A.random_translate(v, np.random.default_rng(0), 0), v)
  with pytest.raises(ConfigError, match="max_shift"):
    A.random_translate(v, np.random.default_rng(0), 6)


def test_time_mask_masks_spans_with_mean():
  x = np.arange(50 * 4, dtype=np.float32).reshape(50, 4)
  out, mask = A.time_mask(x, np.random.default_rng(1), n_masks=2, max_width=10)
  assert mask.sum() > 0 and mask.sum() <= 20
  np.testing.assert_array_equal(out[~mask], x[~mask])
  np.testing.assert_allclose(out[mask], np.broadcast_to(x.mean(0), out[mask].shape))
  out0, _ = A.time_mask(x, np.random.default_rng(1), n_masks=2, max_width=10, value=0.0)
  assert (out0[mask] == 0).all()


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_babble_mixed_at_requested_snr(snr_db):
  rng = np.random.default_rng(0)
  sr = 16000
  t = np.arange(sr) / sr
  speech = (0.2 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
  others = [(0.05 * (k + 1) * rng.standard_normal(sr // (k + 1))).astype(np.float32) for k in range(4)]
  mixed = A.add_babble(speech, others, np.random.default_rng(7), snr_db)
  noise = mixed.astype(np.float64) - speech
  achieved = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise ** 2))
  assert achieved == pytest.approx(snr_db, abs=0.01)
  # the noise is made of the other utterances: correlates with them, not with the speech
  assert abs(np.corrcoef(noise, speech)[0, 1]) < 0.1


def test_word_drop_rate_and_seed():
  text = " ".join(f"w{i}" for i in range(2000))
  out = A.drop_words(text, np.random.default_rng(0), rate=0.2)
  kept = out.split()
  assert 0.77 < len(kept) / 2000 < 0.83
  assert kept == [w for w in text.split() if w in set(kept)]  # order preserved, nothing invented
  assert A.drop_words(text, np.random.default_rng(5)) == A.drop_words(text, np.random.default_rng(5))
  rates = [1 - len(A.drop_words(text, np.random.default_rng(s)).split()) / 2000 for s in range(20)]
  assert 0.0 <= min(rates) and max(rates) <= 0.22 and np.std(rates) > 0.02  # rate drawn in [0, 0.2]
  zh = A.drop_words("我 爱 北京天安门", np.random.default_rng(0), rate=0.5, chinese=True)
  assert " " not in zh and 1 <= len(zh) <= 7
  assert A.drop_words("one", np.random.default_rng(0), rate=1.0) == "one"  # never empty
