"""SynthCue: determinism, the sample contract, and that its ambiguities are real.

The ambiguity tests decode with nearest-neighbour / bigram decoders fitted on one split and scored
on another (same speakers, other seeds), so each number is a measured accuracy, not a tautology.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from pypinyin import Style, lazy_pinyin, pinyin

from shared.data import synthcue_phonology as ph
from shared.data import synthcue_render as rd
from shared.data.synthcue import CLASSES, FACE_UNIT, SynthCue, SynthCueConfig, build_world
from shared.data.synthcue_lexicon import SYLLABLE_CHARS
from shared.errors import ConfigError

FAST = dict(render_video=False, render_audio=False)
TEST_DIR = os.path.dirname(os.path.abspath(__file__))


def _nn(xtr, ytr, xte):
  d = (xte * xte).sum(1)[:, None] - 2 * xte @ xtr.T + (xtr * xtr).sum(1)[None]
  return ytr[d.argmin(1)]


def test_deterministic_bytes_random_access():
  a = SynthCue(num_samples=20, seed=3)
  b = pickle.loads(pickle.dumps(SynthCue(num_samples=20, seed=3)))  # as a grain worker gets it
  s7 = a[7]
  _ = b[2], b[11]                                                    # access order is irrelevant
  t7 = b[7]
  assert set(s7) == set(t7)
  for k, v in s7.items():
    if isinstance(v, np.ndarray):
      assert v.dtype == t7[k].dtype and v.tobytes() == t7[k].tobytes(), k
    else:
      assert v == t7[k], k
  assert a[8]["text"] != s7["text"] or a[8]["audio"].tobytes() != s7["audio"].tobytes()
  assert SynthCue(num_samples=20, seed=4)[7]["audio"].tobytes() != s7["audio"].tobytes()
  assert SynthCue(num_samples=20, seed=3, split="validation")[7]["text"] != s7["text"] or \
      SynthCue(num_samples=20, seed=3, split="validation")[7]["speaker"] != s7["speaker"]
  with pytest.raises(IndexError):
    a[20]


def _digest(sample) -> str:
  m = hashlib.sha256()
  for k in sorted(sample):
    v = sample[k]
    m.update(k.encode() + (v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode()))
  return m.hexdigest()


def test_deterministic_across_processes():
  """Another interpreter (other hash seed) builds the same bytes."""
  code = "\n".join([
      "import hashlib, numpy as np",
      "from shared.data.synthcue import SynthCue",
      "for mode in ('cued', 'sign'):",
      "  s, m = SynthCue(num_samples=9, seed=2, mode=mode)[8], hashlib.sha256()",
      "  for k in sorted(s):",
      "    v = s[k]",
      "    m.update(k.encode() + (v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode()))",
      "  print(m.hexdigest())"])
  root = os.path.dirname(os.path.dirname(TEST_DIR))
  env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=root)
  got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=root, check=True).stdout.split()
  want = [_digest(SynthCue(num_samples=9, seed=2, mode=m)[8]) for m in ("cued", "sign")]
  assert got == want


@pytest.mark.parametrize("mode", ["cued", "sign", "speech"])
def test_sample_contract(mode):
  src = SynthCue(num_samples=4, mode=mode, frame_size=48, lip_size=32, lexicon_size=30)
  for i in range(2):
    s = src[i]
    t, n = s["video"].shape[0], len(s["char_ids"])
    assert s["video"].shape == (t, 48, 48, 3) and s["video"].dtype == np.uint8
    assert s["lip"].shape == (t, 32, 32) and s["lip"].dtype == np.uint8
    assert s["pose"].shape == (t, 20, 3) and s["pose"].dtype == np.float32
    assert s["audio"].shape == (t * 640,) and s["audio"].dtype == np.float32
    assert np.abs(s["audio"]).max() <= 1.0 and s["fps"] == 25 and s["sample_rate"] == 16000
    assert len(s["text"]) == n and s["pinyin"].split() == lazy_pinyin(s["text"], style=Style.NORMAL)
    assert sorted(s["gloss"].split()) == sorted(s["text"])
    assert [s["text"][j] for j in s["gloss_order"]] == s["gloss"].split()
    fr = s["syllable_frames"]
    assert (fr[:, 0] >= 0).all() and (fr[:, 1] <= t).all() and (fr[:, 1] > fr[:, 0]).all()
    assert (s["syllable_samples"] == fr * 640).all()
    tl = fr[s["gloss_order"]] if mode == "sign" else fr                # timeline order
    assert (tl[1:, 0] == tl[:-1, 1]).all()                             # contiguous, no overlap
    np.testing.assert_array_equal(s["mouth_open"], s["lip_params"][:, 0])
    hands_seen = s["pose"][:, 8:, 2].max(0)
    np.testing.assert_array_equal(hands_seen, np.repeat([mode != "speech", mode == "sign"], 6))
    assert 0.0 <= s["pose"][..., :2].min() and s["pose"][..., :2].max() <= 1.0
  assert {len(ch) for ch in SYLLABLE_CHARS.values()} == {3}


def test_texts_have_their_pinyin_and_classes():
  src = SynthCue(num_samples=60, lexicon_size=120, **FAST)
  w = src.world
  for i in range(60):
    chars, _ = src.sentence(i)
    text = "".join(w.chars[c] for c in chars)
    assert lazy_pinyin(text, style=Style.NORMAL) == [w.syllables[k] for k in w.char_syllable[chars]]
  for syl, chars3 in SYLLABLE_CHARS.items():            # the table: unique readings, known finals
    assert ph.split_syllable(syl)[1] in ph.FINALS
    for ch in chars3:
      assert set(pinyin(ch, style=Style.NORMAL, heteronym=True)[0]) == {syl}, ch
  vocab = src.char_vocab()
  s0 = src[0]
  assert "".join(vocab.decode(s0["char_ids"] + len(vocab.specials))) == s0["text"]
  # homophones of one syllable always belong to different word classes; every class is usable
  for lex, homophones, seed in [(44, 3, 0), (4, 1, 1), (5, 2, 2), (6, 1, 3), (295, 3, 4)]:
    w = build_world(seed, lex, homophones, 4, 0.3)
    assert all(len(c) for c in w.class_chars) and len(w.syllables) == lex
    for k in range(lex):
      cls = w.char_class[w.char_syllable == k]
      assert len(set(cls.tolist())) == len(cls) and cls.max() < len(CLASSES)
    # glosses sharing a manual form look different on the lips
    for f in np.unique(w.char_form):
      sigs = [ph.syllable_lip_signature(w.syllables[w.char_syllable[c]])
              for c in np.nonzero(w.char_form == f)[0]]
      assert len(set(sigs)) == len(sigs)


def test_cue_hand_leads_lips_and_sits_at_its_position():
  src = SynthCue(num_samples=8, **FAST)
  for i in range(8):
    s = src[i]
    lead = s["syllable_frames"][:, 0] - s["hand_frames"]
    assert len(set(lead.tolist())) == 1 and 2 <= lead[0] <= 4          # a speaker's constant lead
    sp = src.world.speakers
    assert lead[0] == sp["lead"][s["speaker"]]
    # at the arrival frame the hand is at its coded position: nearest-position decoding is exact
    face_c = s["pose"][0, 0:2, :2].mean(0) + np.array([0.0, 0.3 * FACE_UNIT])
    down = np.array([-np.sin(-0.35), np.cos(-0.35)]) * 0.55                # knuckles -> wrist
    anchors = (s["pose"][s["hand_frames"], 8, :2] - face_c) / FACE_UNIT - down
    d = np.linalg.norm(anchors[:, None] - ph.HAND_POSITIONS[None], axis=-1)
    assert (d.argmin(1) == s["hand_position"]).all() and d.min(1).max() < 0.25
    # and the hand shape shown there is the syllable's (fingertips relative to the wrist)
    tmpl = rd.hand_keypoints(np.zeros((8, 2), np.float32), ph.HAND_SHAPES, FACE_UNIT)
    tmpl = (tmpl[:, 1:] - tmpl[:, :1]).reshape(8, -1)
    kp = s["pose"][s["hand_frames"], 8:14, :2]
    rel = (kp[:, 1:] - kp[:, :1]).reshape(len(kp), -1)
    shown = ((rel[:, None] - tmpl[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(shown, s["hand_shape"])


def test_held_out_speakers_and_config_errors():
  cfg = SynthCueConfig(n_speakers=6, n_test_speakers=2, num_samples=40)
  tr = {SynthCue(cfg, **FAST)[i]["speaker"] for i in range(40)}
  te = {SynthCue(cfg, split="test", **FAST)[i]["speaker"] for i in range(40)}
  assert tr <= {0, 1, 2, 3} and te <= {4, 5} and len(te) == 2
  with pytest.raises(ConfigError, match="split"):
    SynthCue(split="dev")
  with pytest.raises(ConfigError, match="lexicon_size"):
    SynthCue(lexicon_size=10_000)
  with pytest.raises(ConfigError, match="mode"):
    SynthCue(mode="mime")


def test_audio_energy_follows_mouth_opening():
  src = SynthCue(num_samples=10, render_video=False)
  corr = []
  for i in range(10):
    s = src[i]
    e = np.log(np.sqrt((s["audio"].reshape(-1, 640) ** 2).mean(1)) + 1e-4)
    corr.append(np.corrcoef(e, s["mouth_open"])[0, 1])
  assert np.mean(corr) > 0.6 and min(corr) > 0.3


def test_lips_confuse_what_hand_shapes_separate():
  """Classify the initial consonant of each syllable by 1-NN: lips alone vs hand alone vs both."""
  def feats(src, n):
    lips, hands, ys = [], [], []
    for i in range(n):
      s = src[i]
      for j in np.nonzero(s["initial_ids"] > 0)[0]:
        f = s["vowel_frames"][j] - 1                       # last consonant frame on the lips
        lips.append(s["lip"][f].astype(np.float32).ravel() / 255.0)
        hk = s["pose"][s["hand_frames"][j], 8:14, :2]       # the hand, `lead` frames earlier
        hands.append((hk[1:] - hk[:1]).ravel() / 0.15)
        ys.append(s["initial_ids"][j])
    return np.array(lips), np.array(hands), np.array(ys)

  kw = dict(lexicon_size=220, **FAST)
  ltr, htr, ytr = feats(SynthCue(num_samples=150, **kw), 150)
  lte, hte, yte = feats(SynthCue(split="test_seen", num_samples=60, **kw), 60)
  acc_lip = (_nn(ltr, ytr, lte) == yte).mean()
  acc_hand = (_nn(htr, ytr, hte) == yte).mean()
  acc_both = (_nn(np.hstack([ltr, 10 * htr]), ytr, np.hstack([lte, 10 * hte])) == yte).mean()
  group = np.array([ph.INITIAL_VISEME[i] for i in ph.INITIALS[1:]])
  acc_lip_group = (group[_nn(ltr, ytr, lte) - 1] == group[yte - 1]).mean()
  print(f"consonant accuracy: lips {acc_lip:.3f} (viseme group {acc_lip_group:.3f}), "
        f"hand {acc_hand:.3f}, lips+hand {acc_both:.3f}, n={len(yte)}")
  assert acc_lip_group > 0.9            # the lips do show the viseme group ...
  assert acc_lip < 0.5                  # ... but not which consonant inside it
  assert acc_hand < 0.5                 # hand shapes are shared across groups
  assert acc_both > 0.93                # together they identify the consonant


def test_homophones_need_context():
  """A context-free decoder (most frequent character per syllable) vs a character-bigram Viterbi."""
  kw = dict(lexicon_size=44, **FAST)
  tr, te = SynthCue(num_samples=3000, **kw), SynthCue(split="test_seen", num_samples=300, **kw)
  w = tr.world
  n_c = len(w.chars)
  uni = np.zeros(n_c)
  big = np.full((n_c + 1, n_c + 1), 0.01)                               # index n_c = boundary
  for i in range(len(tr)):
    seq = np.concatenate([[n_c], tr.sentence(i)[0], [n_c]])
    np.add.at(uni, seq[1:-1], 1)
    np.add.at(big, (seq[:-1], seq[1:]), 1)
  logp = np.log(big / big.sum(1, keepdims=True))
  cands = [np.nonzero(w.char_syllable == k)[0] for k in range(len(w.syllables))]
  ok_cf = ok_bg = total = 0
  for i in range(len(te)):
    truth = te.sentence(i)[0]
    syl = w.char_syllable[truth]                                        # the decoder sees pinyin
    ok_cf += sum(cands[k][uni[cands[k]].argmax()] == c for k, c in zip(syl, truth))
    score, back, prev = np.zeros(1), [], np.array([n_c])
    for k in syl:
      tot = score[:, None] + logp[prev][:, cands[k]]
      back.append(tot.argmax(0))
      score, prev_c = tot.max(0), prev
      prev = cands[k]
    best = int((score + logp[prev, n_c]).argmax())
    path = [prev[best]]
    for k_i in range(len(syl) - 1, 0, -1):
      best = back[k_i][best]
      path.append(cands[syl[k_i - 1]][best])
    ok_bg += (np.array(path[::-1]) == truth).sum()
    total += len(truth)
  acc_cf, acc_bg = ok_cf / total, ok_bg / total
  print(f"character accuracy from pinyin: context-free {acc_cf:.3f}, bigram {acc_bg:.3f}")
  assert acc_cf < 0.75 and acc_bg > 0.95


def test_mouthing_separates_shared_manual_forms():
  """Decode each gloss by 1-NN from its hands' trajectory, with and without the mouth."""
  def feats(src, n):
    hand, mouth, ys, forms = [], [], [], []
    for i in range(n):
      s = src[i]
      for k, j in enumerate(s["gloss_order"]):
        a, b = s["syllable_frames"][j]
        idx = a + ((np.arange(6) + 0.5) * (b - a) / 6).astype(int)
        hand.append(s["pose"][idx, 8:20, :2].ravel() / 0.15)
        m = s["pose"][idx, 4:8, :2]
        mouth.append((m - m.mean(1, keepdims=True)).ravel() / 0.015)
        ys.append(s["gloss_ids"][k])
        forms.append(s["gloss_form"][k])
    return np.array(hand), np.array(mouth), np.array(ys), np.array(forms)

  kw = dict(mode="sign", **FAST)
  tr = SynthCue(num_samples=120, **kw)
  htr, mtr, ytr, _ = feats(tr, 120)
  hte, mte, yte, fte = feats(SynthCue(split="test_seen", num_samples=40, **kw), 40)
  shared = np.array([(tr.world.char_form == f).sum() > 1 for f in fte])
  assert 0.15 < shared.mean() < 0.6
  acc_hand = (_nn(htr, ytr, hte) == yte)[shared].mean()
  acc_both = (_nn(np.hstack([htr, mtr]), ytr, np.hstack([hte, mte])) == yte)[shared].mean()
  acc_hand_unique = (_nn(htr, ytr, hte) == yte)[~shared].mean()
  print(f"gloss accuracy on shared manual forms: hands {acc_hand:.3f}, hands+mouth {acc_both:.3f}; "
        f"unique forms, hands only: {acc_hand_unique:.3f}")
  assert acc_hand_unique > 0.95         # the manual form identifies unshared glosses ...
  assert acc_hand < 0.72                # ... but not which gloss of a shared pair
  assert acc_both > 0.95                # the mouthing does


def test_audio_tells_lip_identical_consonants_apart():
  """1-NN on a 32-band log spectrum around each consonant: the voice carries what the lips hide."""
  def logspec(a):
    fr = a[: len(a) // 160 * 160].reshape(-1, 160)
    fr = np.concatenate([fr[:-1], fr[1:]], 1) * np.hanning(320)
    p = np.abs(np.fft.rfft(fr, axis=1)) ** 2                                  # 100 Hz frames
    return np.log(p[:, 1:161].reshape(len(p), 32, 5).sum(-1) + 1e-6).T       # [32, F]

  def feats(src, n):
    xs, ys = [], []
    for i in range(n):
      s = src[i]
      spec = logspec(s["audio"])
      for j in np.nonzero(s["initial_ids"] > 0)[0]:
        seg = spec[:, s["syllable_frames"][j, 0] * 4:s["vowel_frames"][j] * 4 + 4]
        parts = np.array_split(np.arange(seg.shape[1]), 3)
        xs.append(np.concatenate([seg[:, p].mean(1) for p in parts]))
        ys.append(s["initial_ids"][j])
    xs = np.array(xs)
    return xs - xs.mean(1, keepdims=True), np.array(ys)

  kw = dict(render_video=False, lexicon_size=150)
  xtr, ytr = feats(SynthCue(num_samples=80, **kw), 80)
  xte, yte = feats(SynthCue(split="test_seen", num_samples=30, **kw), 30)
  acc = (_nn(xtr, ytr, xte) == yte).mean()
  print(f"consonant accuracy from audio: {acc:.3f}")
  assert acc > 0.8


def test_pose_map_draws_present_parts_where_the_keypoints_are():
  s = SynthCue(num_samples=2, **FAST)[1]
  m = rd.pose_map(s["pose"], 64)
  assert m.shape == (len(s["pose"]), 64, 64, 3) and m.dtype == np.uint8
  assert m[..., 0].any() and m[..., 1].any() and not m[..., 2].any()   # cued: no left hand
  t = s["hand_frames"][0]
  x, y = (s["pose"][t, 8, :2] * 64).astype(int)                        # the wrist lies on a line
  assert m[t, y, x, 1] > 100
  mask = m[t, ..., 1] > 0
  assert mask.mean() < 0.1                                             # ... and lines are thin
