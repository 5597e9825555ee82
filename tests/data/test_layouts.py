"""Real-dataset layouts: write -> read round trips, and every kind of bad input (error naming the
file, or skip-and-count losing nothing else)."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from shared.data import layouts as L
from shared.data import media
from shared.errors import DataError

WORDS = ["HELLO", "WORLD", "THE", "CAT", "SAT", "ON", "A", "MAT", "GREEN", "RIVER"]
HANZI = "我爱北京天安门你好世界中文学习"


def make_samples(n: int, seed: int = 0, chinese: bool = False) -> list[dict]:
  """Deterministic samples with DESIGN.md's keys: smooth moving images (what a codec is for)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    t = int(rng.integers(10, 16))
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    video = np.empty((t, 32, 32, 3), np.uint8)
    lip = np.empty((t, 24, 24), np.uint8)
    for f in range(t):
      cy, cx = 16 + 8 * np.sin(f / 3 + i), 16 + 8 * np.cos(f / 4 + i)
      disc = 100.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < 30)
      for c in range(3):
        video[f, ..., c] = np.clip(30 + 3 * xx + 20 * c + disc, 0, 255)
      mouth = abs(yy[:24, :24] - 12) < 2 + 3 * np.sin(f / 2) ** 2
      lip[f] = np.clip(60 + 4 * yy[:24, :24] + 80 * mouth, 0, 255)
    n_words = int(rng.integers(2, 6))
    if chinese:
      text = "".join(rng.choice(list(HANZI), n_words))
      pinyin = " ".join(f"py{ord(c) % 97}" for c in text)
    else:
      text = " ".join(rng.choice(WORDS, n_words))
      pinyin = ""
    out.append(dict(
        video=video, lip=lip,
        pose=rng.uniform(0, 1, (t, 20, 3)).astype(np.float32),
        audio=(0.1 * rng.standard_normal(t * 640)).astype(np.float32),
        text=text, pinyin=pinyin, gloss=" ".join(reversed(text.split())) if not chinese else text[::-1],
        speaker=int(rng.integers(0, 3)), fps=25, sample_rate=16000,
        char_ids=rng.integers(0, 50, n_words).astype(np.int32)))
  return out


def psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


LAYOUTS = {
    "lrs3": (lambda r, s: L.write_lrs3(r, "test", s), lambda r, **k: L.LRS3Reader(r, "test", **k), False),
    "how2sign": (lambda r, s: L.write_how2sign(r, "train", s),
                 lambda r, **k: L.How2SignReader(r, "train", **k), False),
    "cnvsrc": (lambda r, s: L.write_cnvsrc(r, "dev", s), lambda r, **k: L.cnvsrc_reader(r, "dev", **k), True),
    "cnvsrc_vts": (lambda r, s: L.write_cnvsrc(r, "dev", s),
                   lambda r, **k: L.cnvsrc_reader(r, "dev", vts=True, **k), True),
    "cued": (lambda r, s: L.write_cued(r, "train", s), lambda r, **k: L.cued_reader(r, "train", **k), True),
    "cmlr": (lambda r, s: L.write_cmlr(r, "train", s), lambda r, **k: L.cmlr_reader(r, "train", **k), True),
}


def check_same(a: dict, b: dict):
  assert b["text"] == a["text"]
  np.testing.assert_array_equal(b["audio"], a["audio"])  # wav: exact
  np.testing.assert_array_equal(b["pose"], a["pose"])
  for k in ("video", "lip"):
    assert b[k].shape == a[k].shape and b[k].dtype == np.uint8
    assert psnr(b[k], a[k]) > 30, (k, psnr(b[k], a[k]))  # h264 crf 18 tolerance
  assert (b["pinyin"], b["gloss"], b["speaker"]) == (a["pinyin"], a["gloss"], a["speaker"])
  assert b["fps"] == 25.0 and b["sample_rate"] == 16000
  np.testing.assert_array_equal(b["char_ids"], a["char_ids"])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """Each layout written once (3 samples); tests that break files work on copies."""
  out = {}
  for name, (write, _, chinese) in LAYOUTS.items():
    root = str(tmp_path_factory.mktemp(name))
    samples = make_samples(3, seed=len(name), chinese=chinese)
    out[name] = (root, dict(zip(write(root, samples), samples)))
  return out


def _copy(written, name, tmp_path):
  import shutil
  root, by_path = written[name]
  dst = str(tmp_path / name)
  shutil.copytree(root, dst)
  return dst, {p.replace(root, dst, 1): s for p, s in by_path.items()}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_round_trip(written, name):
  root, by_path = written[name]
  reader = LAYOUTS[name][1](root)
  got = list(reader)
  assert len(got) == len(by_path) == 3 and not reader.skipped
  for b in got:
    check_same(by_path[b["path"]], b)
  if name in ("cnvsrc", "cued"):  # default token ids: code points of the transcript
    assert [chr(i) for i in got[0]["token_ids"]] == list(got[0]["text"])


def test_lrs3_transcript_file_and_word_timings(tmp_path):
  s = make_samples(1)[0]
  s["words"] = [(w, 0.1 * i, 0.1 * i + 0.08, 1.5) for i, w in enumerate(s["text"].split())]
  (mp4,) = L.write_lrs3(str(tmp_path), "trainval", [s])
  assert mp4.endswith(os.path.join("trainval", f"spk{s['speaker']:05d}", "00000.mp4"))
  lines = open(mp4[:-4] + ".txt", encoding="utf-8").read().splitlines()
  assert lines[0] == f"Text:  {s['text']}" and lines[1].startswith("Conf:")
  assert lines[3] == "WORD START END ASDSCORE"
  got = L.LRS3Reader(str(tmp_path), "trainval")[0]
  assert [w[0] for w in got["words"]] == s["text"].split()
  np.testing.assert_allclose([w[1:] for w in got["words"]], [w[1:] for w in s["words"]], atol=6e-3)


def test_real_data_without_our_side_files(tmp_path):
  """Real datasets have no .json / .wav / _lip / _pose side files: readers still work."""
  s = make_samples(2, chinese=True)
  lrs = str(tmp_path / "lrs3")
  paths = L.write_lrs3(lrs, "test", s)
  cn = str(tmp_path / "cn")
  cn_paths = L.write_cnvsrc(cn, "dev", s)
  for p in paths:
    for ext in (".json", ".wav", "_lip.mp4", "_pose.npy"):
      os.remove(p[:-4] + ext)
  for p in cn_paths:
    os.remove(p[:-4] + ".json")
    os.remove(p.replace("/video/", "/text/")[:-4] + ".txt")  # transcript from token ids only
  got = {g["path"]: g for g in L.LRS3Reader(lrs, "test")}
  for p, a in zip(paths, s):
    b = got[p]
    assert b["text"] == a["text"] and "lip" not in b and "pose" not in b
    n = len(a["audio"])  # audio from the mp4's aac track
    assert n <= len(b["audio"]) < n + 16 and np.corrcoef(b["audio"][:n], a["audio"])[0, 1] > 0.9
    assert b["speaker"] == a["speaker"]  # parsed from the ytid directory our writer named
  got = {g["path"]: g for g in L.cnvsrc_reader(cn, "dev")}
  from shared.text.pinyin import to_pinyin
  for p, a in zip(cn_paths, s):
    b = got[p]
    assert b["text"] == a["text"] and b["pinyin"] == " ".join(to_pinyin(a["text"]))
    np.testing.assert_array_equal(b["audio"], a["audio"])
    assert b["lip"].shape == a["lip"].shape and "video" in b


def test_synthcue_samples_round_trip(tmp_path):
  try:
    from shared.data.synthcue import SynthCue
    src = SynthCue(num_samples=2)
    samples = [src[0], src[1]]
  except ImportError as e:  # the corpus module is built in parallel; the fixture tests cover layouts
    pytest.skip(f"SynthCue not importable: {e}")
  for name in ("cued", "lrs3"):
    write, read, _ = LAYOUTS[name]
    root = str(tmp_path / name)
    by_path = dict(zip(write(root, samples), samples))
    got = list(read(root))
    assert len(got) == 2
    for b in got:
      a = by_path[b["path"]]
      check_same(a, b)
      for k, v in a.items():  # SynthCue's ground truth survives through the side file
        if isinstance(v, np.ndarray) and k not in L.MEDIA:
          np.testing.assert_array_equal(b[k], v)
    if name == "cued":
      hs = got[0]["hand_shape_frames"]
      a = by_path[got[0]["path"]]
      assert hs.shape == (a["video"].shape[0],)
      j = int(np.argmax(a["hand_frames"]))
      assert hs[-1] == a["hand_shape"][j]


# ----------------------------------------------------------------------------- bad input

def _break(kind, name, root, by_path):
  """Damage one sample; return (path the error must name, whether it shows at construction)."""
  victim = sorted(by_path)[1]
  stem = victim[:-4]
  if kind == "missing_video":
    os.remove(victim)
    return victim, True
  if kind == "undecodable":
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[: len(data) // 3])
    return victim, False
  if kind == "sample_rate":
    wav = (victim.replace("/video/", "/audio/")[:-4] + ".wav" if name.startswith(("cnvsrc", "cmlr"))
           else stem + ".wav")
    x, _ = media.read_wav(wav)
    media.write_wav(wav, media.resample(x, 16000, 8000), 8000)
    return wav, False
  if kind == "empty_transcript":
    if name == "lrs3":
      txt = stem + ".txt"
      open(txt, "w").write("Text:   \nConf:  4\n")
      return txt, True
    if name == "how2sign":
      csv_path = os.path.join(root, "how2sign_realigned_train.csv")
      rows = list(csv.reader(open(csv_path), delimiter="\t"))
      for r in rows:
        if r[3] == os.path.basename(stem):
          r[6] = ""
      csv.writer(open(csv_path, "w", newline=""), delimiter="\t", lineterminator="\n").writerows(rows)
      return csv_path, True
    if name == "cnvsrc_vts":
      csv_path = os.path.join(root, "labels", "cnvsrc_dev_vts.csv")
      rows = list(csv.reader(open(csv_path)))
      for r in rows:
        if os.path.join(root, r[0]) == victim:
          r[4] = ""
      csv.writer(open(csv_path, "w", newline=""), lineterminator="\n").writerows(rows)
      return csv_path, True
    txt = victim.replace("/video/", "/text/")[:-4] + ".txt" if name in ("cnvsrc", "cmlr") else stem + ".txt"
    open(txt, "w").write("\n")
    return txt, True
  if kind == "frame_count":
    if name == "how2sign":  # the clip is shorter than START/END_REALIGNED say
      csv_path = os.path.join(root, "how2sign_realigned_train.csv")
      rows = list(csv.reader(open(csv_path), delimiter="\t"))
      for r in rows:
        if r[3] == os.path.basename(stem):
          r[5] = f"{float(r[5]) + 1.0:.2f}"
      csv.writer(open(csv_path, "w", newline=""), delimiter="\t", lineterminator="\n").writerows(rows)
      return victim, False
    if name in ("lrs3", "cmlr"):  # no frame counts in these layouts: the side file disagrees with the main clip
      side = stem + ("_video.mp4" if name == "cmlr" else "_lip.mp4")
      media.write_mp4(side, np.zeros((3, 24, 24), np.uint8))
      return side, False
    csv_path = os.path.join(root, "labels", {"cnvsrc": "cnvsrc_dev.csv", "cnvsrc_vts": "cnvsrc_dev_vts.csv",
                                              "cued": "cued_train.csv"}[name])
    rows = list(csv.reader(open(csv_path)))
    for r in rows:
      if r[0] != "dataset" and victim.endswith(r[1] if name != "cnvsrc_vts" else r[0]):
        r[2] = str(int(r[2]) + 5)
    csv.writer(open(csv_path, "w", newline=""), lineterminator="\n").writerows(rows)
    return victim, False
  raise AssertionError(kind)


KINDS = ["missing_video", "undecodable", "sample_rate", "empty_transcript", "frame_count"]


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_raises_naming_file_or_skips_and_counts(written, tmp_path, name, kind):
  root, by_path = _copy(written, name, tmp_path)
  bad, at_construction = _break(kind, name, root, by_path)
  read = LAYOUTS[name][1]
  strict = dict(resample=False) if kind == "sample_rate" else {}
  with pytest.raises(DataError) as e:
    r = read(root, **strict)
    for i in range(len(r)):
      r[i]
  assert e.value.path == bad and bad in str(e.value)
  assert e.value.kind == {"missing_video": "missing"}.get(kind, kind)
  # skip mode: the bad sample is dropped and counted, every other sample is intact
  r = read(root, skip=True, **strict)
  assert len(r) == (2 if at_construction else 3)
  got = list(r)
  assert len(got) == 2
  assert r.skipped == {e.value.kind: 1} and r.skipped_files[0][0] == bad
  for b in got:
    check_same(by_path[b["path"]], b)
  if kind == "sample_rate":  # by default the reader resamples instead of refusing
    r = read(root)
    s = [x for x in r if x["path"] == sorted(by_path)[1]][0]
    assert s["sample_rate"] == 16000 and abs(len(s["audio"]) - len(by_path[s["path"]]["audio"])) <= 1


def test_missing_required_wav_and_hand_file(written, tmp_path):
  root, by_path = _copy(written, "cued", tmp_path)
  victim = sorted(by_path)[0]
  os.remove(victim[:-4] + ".wav")
  with pytest.raises(DataError, match="audio file does not exist") as e:
    L.cued_reader(root, "train")
  assert e.value.path == victim[:-4] + ".wav"
  os.remove(sorted(by_path)[2][:-4] + "_pose.npy")  # listed as hand_position_path
  r = L.cued_reader(root, "train", skip=True)
  assert len(r) == 1 and r.skipped == {"missing": 2}
  check_same(by_path[sorted(by_path)[1]], r[0])


def test_cmlr_split_lists_transcripts_and_roi_directory(tmp_path):
  """CMLR: split aliases, a header line, the text file's first line (spaces dropped), a mouth-ROI tree read through
  video_dir, and bad lists / transcripts named."""
  root = str(tmp_path / "cmlr")
  s = make_samples(2, seed=5, chinese=True)
  paths = L.write_cmlr(root, "validation", s, video_dir="video_roi")
  assert os.path.isfile(os.path.join(root, "val.csv")) and all("/video_roi/s" in p for p in paths)
  clip = os.path.relpath(paths[0], os.path.join(root, "video_roi"))[:-4]
  txt = os.path.join(root, "text", clip + ".txt")
  open(txt, "w", encoding="utf-8").write(f"\n {s[0]['text'][:1]} {s[0]['text'][1:]} \nword timings 0.1 0.2\n")
  with open(os.path.join(root, "val.csv"), encoding="utf-8") as f:
    lines = f.read()
  open(os.path.join(root, "val.csv"), "w", encoding="utf-8").write("id\n" + lines)
  got = list(L.cmlr_reader(root, "dev", video_dir="video_roi"))
  assert [g["text"] for g in got] == [x["text"] for x in s] and got[0]["lip"].shape == s[0]["lip"].shape
  with pytest.raises(DataError, match="does not exist") as e:   # the default tree is not there
    L.cmlr_reader(root, "val")
  assert e.value.path.endswith(".mp4")
  with pytest.raises(DataError, match="split list") as e:
    L.cmlr_reader(root, "test")
  assert e.value.path == os.path.join(root, "test.csv")
  os.remove(txt)
  r = L.cmlr_reader(root, "val", video_dir="video_roi", skip=True)
  assert len(r) == 1 and r.skipped == {"missing": 1} and r.skipped_files[0][0] == txt
  open(txt, "w", encoding="utf-8").write(s[0]["text"] + "\n")
  open(os.path.join(root, "val.csv"), "a", encoding="utf-8").write("s1/bad.mp4\n")
  with pytest.raises(DataError, match="line 4: 's1/bad.mp4' is not a clip id") as e:
    L.cmlr_reader(root, "val", video_dir="video_roi")
  assert e.value.path == os.path.join(root, "val.csv")
  assert len(L.cmlr_reader(root, "val", video_dir="video_roi", skip=True)) == 2
