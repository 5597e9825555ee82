"""Writers and readers for the real datasets' on-disk layouts (SPECS.md § Datasets).

Samples are DESIGN.md's dicts: video [T,H,W,3] uint8, lip [T,h,w] uint8, pose [T,K,3] float32,
audio [S] float32 16 kHz, text / pinyin / gloss (str), speaker (int), fps, sample_rate.

Layouts (root = the dataset directory a user points at):
  LRS3      {split}/<ytid>/<NNNNN>.mp4 + .txt ("Text:  WORDS", "Conf:  N", blank, then the table
            "WORD START END ASDSCORE"); audio from a .wav beside the .mp4 when there is one, else the
            mp4's own audio track.
  How2Sign  how2sign_realigned_{split}.csv (tab-separated: VIDEO_ID VIDEO_NAME SENTENCE_ID
            SENTENCE_NAME START_REALIGNED END_REALIGNED SENTENCE) + clips
            sentence_level/{split}/rgb_front/raw_videos/<SENTENCE_NAME>.mp4.
  CNVSRC    <dataset>/{split}/{video,audio,text}/<spk>/<NNNNN>.{mp4,wav,txt}; manifests
            labels/<dataset>_{split}.csv (auto_avsr: dataset,rel_path,n_frames,token_ids; rel_path under
            root/<dataset>) and labels/<dataset>_{split}_vts.csv (video,audio,n_video_frames,
            n_audio_samples,text). rel_path points at the mouth-ROI video when samples carry `lip`
            (what auto_avsr's manifests point at), else at the full video.
  Cued      labels/<dataset>_{split}.csv (dataset,rel_path,n_frames,token_ids,hand_recog_path,
            hand_position_path) and <dataset>/{split}/<spk>/<NNNNN>.mp4 with the .wav beside it.
            hand_position_path holds pose keypoints [T,K,3] (.npy); hand_recog_path per-frame hand-shape
            labels [T] (.npy, -1 before the first cue) when the samples carry SynthCue's cue truth.
            (The exact content of these two files in the public loader is unverified.)
  CMLR      {video,audio,text}/s<N>/<date>/<clip>.{mp4,wav,txt} + split lists train.csv / val.csv / test.csv
            (one clip id s<N>/<date>/<clip> per line, first column; a header line is allowed); the sentence
            is the first non-empty line of the .txt, whitespace removed. `video_dir` names the directory
            holding the clips the reader decodes (CMLR ships face videos: point it at their mouth-ROI crops,
            e.g. "video_roi", for lip reading). SPECS.md marks this layout unverified.

Side files our writers add so that SynthCue round-trips (readers use them when present, real data
works without them): <stem>.wav (exact float audio), <stem>_lip.mp4 / <stem>_video.mp4 (the visual
stream that is not the main one), <stem>_pose.npy, <stem>.json (pinyin, gloss, speaker and SynthCue's
ground-truth arrays). token_ids default to Unicode code points (lossless); pass tokenize/detokenize.

Readers check what they read: missing files, undecodable media, frame count vs manifest, wav sample
rate (resample or refuse), empty transcripts -> DataError naming the file. With skip=True a bad
sample is dropped and counted (`reader.skipped` by kind, `reader.skipped_files`): manifest-level
problems at construction (they shrink len), decode-level problems when read (`reader[i]` returns
None; iterating yields only good samples).
"""
from __future__ import annotations

import collections
import csv
import glob
import json
import logging
import os
import re
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shared.data import media
from shared.errors import DataError

log = logging.getLogger(__name__)
MEDIA = ("video", "lip", "pose", "audio")
_NOT_META = MEDIA + ("text", "path", "words", "token_ids", "fps", "sample_rate", "hand_shape_frames")
_SPEAKER = re.compile(r"^(?:spk|s)(\d+)")  # our writers' speaker-named ids


def _err(kind: str, msg: str, path: str, key: str | None = None) -> DataError:
  e = DataError(msg, path=str(path), key=key)
  e.kind = kind
  return e


# ----------------------------------------------------------------------------- clip files

def _json_value(v: Any) -> Any:
  if isinstance(v, np.ndarray):
    return {"__array__": v.tolist(), "dtype": str(v.dtype), "shape": list(v.shape)}
  if isinstance(v, np.generic):
    return v.item()
  return v


def _from_json(v: Any) -> Any:
  if isinstance(v, dict) and "__array__" in v:
    return np.asarray(v["__array__"], dtype=v["dtype"]).reshape(v["shape"])
  return v


def _hand_shape_frames(sample: dict, t: int) -> np.ndarray | None:
  """Per-frame cue hand shape from SynthCue truth: shape j from hand arrival j to arrival j+1."""
  if not all(k in sample for k in ("hand_shape", "hand_frames")):
    return None
  out = np.full((t,), -1, np.int32)
  order = np.argsort(sample["hand_frames"], kind="stable")
  for j in order:
    out[max(int(sample["hand_frames"][j]), 0):] = int(sample["hand_shape"][j])
  return out


def write_clip(mp4_path: str, sample: dict, *, wav_path: str | None = None, primary: str = "video",
               crf: int = 18, audio_in_mp4: bool = True, meta: bool = True) -> int:
  """Write one sample's media: <mp4_path> (the `primary` visual stream, h264, plus the audio as aac),
  the wav (exact float32), the other visual stream and pose as side files, and <stem>.json.
  Returns the main video's frame count."""
  stem = mp4_path[:-4]
  other = "lip" if primary == "video" else "video"
  if sample.get(primary) is None:
    primary, other = other, primary
  frames = sample.get(primary)
  if frames is None:
    raise _err("malformed", "sample has neither 'video' nor 'lip'", mp4_path, "video")
  fps, sr = float(sample.get("fps", 25)), int(sample.get("sample_rate", 16000))
  audio = sample.get("audio")
  media.write_mp4(mp4_path, frames, fps, audio if audio_in_mp4 else None, sr, crf=crf)
  if audio is not None:
    media.write_wav(wav_path or stem + ".wav", audio, sr)
  if sample.get(other) is not None:
    media.write_mp4(f"{stem}_{other}.mp4", sample[other], fps, crf=crf)
  if sample.get("pose") is not None:
    np.save(f"{stem}_pose.npy", np.asarray(sample["pose"], np.float32))
  if meta:
    extra = {k: _json_value(v) for k, v in sample.items() if k not in _NOT_META}
    extra["primary"] = primary
    with open(stem + ".json", "w", encoding="utf-8") as f:
      json.dump(extra, f, ensure_ascii=False)
  return int(np.asarray(frames).shape[0])


def _write_text(path: str, text: str):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text + "\n")


def _check_text(text: str, where: str):
  if "\t" in text or "\n" in text:
    raise _err("malformed", "transcript contains a tab or newline, which this layout cannot hold",
               where, "text")


def _code_points(text: str) -> list[int]:
  return [ord(c) for c in text]


def _from_code_points(ids: Iterable[int]) -> str:
  return "".join(chr(int(i)) for i in ids)


# ----------------------------------------------------------------------------- reader core

class _Entry(dict):
  """mp4, wav (or None), text, text_path, n_frames (or None), n_samples, plus layout fields."""


class LayoutReader:
  """Random-access reader over a list of entries built from a layout's manifest.

  `reader[i]` -> sample dict (None when skip=True and sample i is bad); `iter(reader)` -> good
  samples; `reader.skipped` Counter by kind (missing, undecodable, frame_count, sample_rate,
  empty_transcript, malformed); `reader.skipped_files` [(path, message)]; each skip is logged.
  Readers are grain-compatible random-access sources (len, getitem); with skip=True follow them with
  `.filter(lambda s: s is not None)`. Counts are per process (grain workers keep their own).

  Args: skip (drop and count bad samples instead of raising), sample_rate (audio returned at this
  rate), resample (False: a file at another rate is an error), load_video (also decode the side
  file holding the visual stream that is not the layout's main one).
  """
  chinese = False
  audio_from_mp4 = True     # without a wav, use the mp4's audio track
  require_audio = False

  def __init__(self, *, skip: bool = False, sample_rate: int = 16000, resample: bool = True,
               load_video: bool = True):
    self.skip = skip
    self.sample_rate = int(sample_rate)
    self.resample = resample
    self.load_video = load_video
    self.skipped: collections.Counter = collections.Counter()
    self.skipped_files: list[tuple[str, str]] = []
    self.entries: list[_Entry] = []

  def _bad(self, e: DataError):
    if not hasattr(e, "kind"):
      e.kind = "undecodable"  # raised by media I/O
    if not self.skip:
      raise e
    self.skipped[e.kind] += 1
    self.skipped_files.append((e.path, str(e)))
    log.warning("skipping bad sample (%s): %s", e.kind, e)

  def _add(self, make: Callable[[], _Entry]):
    try:
      entry = make()
      if not entry["text"].strip():
        row = f" in row {entry['row']}" if entry.get("row") else ""
        raise _err("empty_transcript", f"empty transcript{row}", entry["text_path"], "text")
      if not os.path.isfile(entry["mp4"]):
        raise _err("missing", "video file does not exist", entry["mp4"])
      if entry["wav"] is not None and not os.path.isfile(entry["wav"]):
        if not self.audio_from_mp4:
          raise _err("missing", "audio file does not exist", entry["wav"])
        entry["wav"] = None
      self.entries.append(entry)
    except DataError as e:
      self._bad(e)

  def __len__(self) -> int:
    return len(self.entries)

  def __getitem__(self, i: int) -> dict | None:
    try:
      return self._load(self.entries[int(i)])
    except DataError as e:
      self._bad(e)
      return None

  def __iter__(self) -> Iterator[dict]:
    for i in range(len(self)):
      s = self[i]
      if s is not None:
        yield s

  def _read_audio(self, entry: _Entry) -> tuple[np.ndarray | None, int | None]:
    if entry["wav"] is not None:
      import soundfile as sf
      try:
        sr = sf.info(entry["wav"]).samplerate
      except Exception as e:  # noqa: BLE001 - soundfile raises several types
        raise _err("undecodable", f"cannot read audio header: {e}", entry["wav"]) from e
      if sr != self.sample_rate and not self.resample:
        raise _err("sample_rate", f"sample rate {sr} Hz, expected {self.sample_rate} Hz "
                   "(resample=False)", entry["wav"])
      audio, sr = media.read_wav(entry["wav"], sample_rate=self.sample_rate)
      if entry.get("n_samples") is not None and sr == self.sample_rate and \
         abs(len(audio) - entry["n_samples"]) > 1:
        raise _err("frame_count", f"{len(audio)} audio samples, manifest says {entry['n_samples']}",
                   entry["wav"])
      return audio, sr
    if not self.audio_from_mp4:
      return None, None
    m = media.read_mp4(entry["mp4"], with_audio=True, sample_rate=None)
    if m.audio is None:
      if self.require_audio:
        raise _err("missing", "no .wav beside the video and no audio track in it", entry["mp4"])
      return None, None
    if m.sample_rate != self.sample_rate and not self.resample:
      raise _err("sample_rate", f"audio track at {m.sample_rate} Hz, expected {self.sample_rate} Hz",
                 entry["mp4"])
    return media.resample(m.audio, m.sample_rate, self.sample_rate), self.sample_rate

  def _load(self, entry: _Entry) -> dict:
    stem = entry["mp4"][:-4]
    meta: dict = {}
    if os.path.isfile(stem + ".json"):
      with open(stem + ".json", encoding="utf-8") as f:
        meta = {k: _from_json(v) for k, v in json.load(f).items()}
    primary = meta.pop("primary", entry.get("primary", "video"))
    other = "lip" if primary == "video" else "video"
    sample: dict = {"path": entry["mp4"], "text": entry["text"]}
    m = media.read_mp4(entry["mp4"], gray=(primary == "lip"), with_audio=False)
    t = m.frames.shape[0]
    if entry.get("n_frames") is not None and t != entry["n_frames"]:
      raise _err("frame_count", f"video has {t} frames, manifest says {entry['n_frames']}",
                 entry["mp4"])
    if entry.get("duration") is not None and abs(t / m.fps - entry["duration"]) > self.duration_tol:
      raise _err("frame_count", f"video lasts {t / m.fps:.2f} s, manifest says "
                 f"{entry['duration']:.2f} s", entry["mp4"])
    sample[primary] = m.frames
    side = f"{stem}_{other}.mp4"
    if self.load_video and os.path.isfile(side):
      s = media.read_mp4(side, gray=(other == "lip"), with_audio=False)
      if s.frames.shape[0] != t:
        raise _err("frame_count", f"{s.frames.shape[0]} frames, main video has {t}", side)
      sample[other] = s.frames
    pose_path = entry.get("pose_path") or f"{stem}_pose.npy"
    if os.path.isfile(pose_path):
      sample["pose"] = self._npy(pose_path, t)
    elif entry.get("pose_path"):
      raise _err("missing", "hand position file does not exist", pose_path)
    if entry.get("hand_path"):
      sample["hand_shape_frames"] = self._npy(entry["hand_path"], t)
    audio, sr = self._read_audio(entry)
    if audio is not None:
      sample["audio"] = audio
    sample["fps"] = float(m.fps)
    sample["sample_rate"] = int(sr or self.sample_rate)
    for k in ("words", "token_ids"):
      if k in entry:
        sample[k] = entry[k]
    sample["speaker"] = int(meta.pop("speaker", entry.get("speaker", -1)))
    sample["pinyin"] = meta.pop("pinyin", None)
    if sample["pinyin"] is None:
      sample["pinyin"] = self._pinyin(entry["text"])
    sample["gloss"] = meta.pop("gloss", "")
    for k, v in meta.items():
      sample.setdefault(k, v)
    return sample

  duration_tol = 0.25

  def _npy(self, path: str, t: int) -> np.ndarray:
    if not os.path.isfile(path):
      raise _err("missing", "file does not exist", path)
    try:
      x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
      raise _err("undecodable", f"cannot read .npy: {e}", path) from e
    if x.shape[0] != t:
      raise _err("frame_count", f"{x.shape[0]} frames, video has {t}", path)
    return x

  def _pinyin(self, text: str) -> str:
    if not self.chinese:
      return ""
    from shared.text.pinyin import to_pinyin
    return " ".join(to_pinyin(text))


def _speaker_from(name: str, ids: dict[str, int]) -> int:
  m = _SPEAKER.match(name)
  return int(m.group(1)) if m else ids.setdefault(name, len(ids))


# ----------------------------------------------------------------------------- LRS3

def _lrs3_words(sample: dict) -> list[tuple[str, float, float, float]]:
  if "words" in sample:
    return [tuple(w) + (0.0,) * (4 - len(w)) for w in sample["words"]]
  units = [c for c in sample["text"] if not c.isspace()]
  if "syllable_frames" in sample and len(units) == len(sample["syllable_frames"]):
    fps = float(sample.get("fps", 25))
    return [(u, s / fps, e / fps, 0.0) for u, (s, e) in zip(units, sample["syllable_frames"])]
  return []


def write_lrs3(root: str, split: str, samples: Iterable[dict], *, crf: int = 18, conf: int = 4
               ) -> list[str]:
  """Write samples as LRS3 ({split}/<ytid>/<NNNNN>.mp4 + .txt); ytid = sample['ytid'] or
  'spk<speaker>'. Returns the mp4 paths."""
  paths = []
  for s in samples:
    ytid = s.get("ytid") or f"spk{int(s.get('speaker', 0)):05d}"
    d = os.path.join(root, split, ytid)
    os.makedirs(d, exist_ok=True)
    k = len(glob.glob(os.path.join(d, "*.mp4"))) - len(glob.glob(os.path.join(d, "*_*.mp4")))
    mp4 = os.path.join(d, f"{k:05d}.mp4")
    _check_text(s["text"], mp4)
    write_clip(mp4, s)
    rows = "".join(f"{w} {a:.2f} {b:.2f} {c:.1f}\n" for w, a, b, c in _lrs3_words(s))
    with open(mp4[:-4] + ".txt", "w", encoding="utf-8") as f:
      f.write(f"Text:  {s['text']}\nConf:  {conf}\n\nWORD START END ASDSCORE\n{rows}")
    paths.append(mp4)
  return paths


def parse_lrs3_txt(path: str) -> tuple[str, list[tuple[str, float, float, float]]]:
  """(text, [(word, start, end, asd_score)]) from an LRS3 transcript file."""
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise _err("missing" if isinstance(e, OSError) else "undecodable", f"cannot read: {e}", path) from e
  if not lines or not lines[0].startswith("Text:"):
    raise _err("malformed", "first line must start with 'Text:'", path, "Text")
  text = lines[0][len("Text:"):].strip()
  words = []
  try:
    start = next(i for i, l in enumerate(lines) if l.startswith("WORD START END")) + 1
  except StopIteration:
    start = len(lines)
  for line in lines[start:]:
    p = line.split()
    if len(p) >= 3:
      try:
        words.append((p[0], float(p[1]), float(p[2]), float(p[3]) if len(p) > 3 else 0.0))
      except ValueError as e:
        raise _err("malformed", f"bad word-timing line {line!r}", path) from e
  return text, words


class LRS3Reader(LayoutReader):
  """LRS3: every {split}/<ytid>/<NNNNN>.txt with its .mp4."""
  require_audio = True

  def __init__(self, root: str, split: str = "test", **kw):
    super().__init__(**kw)
    ids: dict[str, int] = {}
    txts = sorted(glob.glob(os.path.join(root, split, "*", "*.txt")))
    if not txts:
      raise DataError(f"no LRS3 transcripts found (expected {split}/<ytid>/<NNNNN>.txt)",
                      path=os.path.join(root, split))

    def make(txt):
      text, words = parse_lrs3_txt(txt)
      ytid = os.path.basename(os.path.dirname(txt))
      return _Entry(mp4=txt[:-4] + ".mp4", wav=txt[:-4] + ".wav", text=text, text_path=txt,
                    words=words, speaker=_speaker_from(ytid, ids))
    for txt in txts:
      self._add(lambda txt=txt: make(txt))


# ----------------------------------------------------------------------------- How2Sign

H2S_COLUMNS = ("VIDEO_ID", "VIDEO_NAME", "SENTENCE_ID", "SENTENCE_NAME", "START_REALIGNED",
               "END_REALIGNED", "SENTENCE")


def _h2s_csv(root: str, split: str) -> str:
  return os.path.join(root, f"how2sign_realigned_{split}.csv")


def _h2s_clip(root: str, split: str, name: str) -> str:
  return os.path.join(root, "sentence_level", split, "rgb_front", "raw_videos", name + ".mp4")


def write_how2sign(root: str, split: str, samples: Iterable[dict], *, crf: int = 18) -> list[str]:
  """Write samples as How2Sign sentence clips + the realigned CSV (one video per sample)."""
  rows, paths = [], []
  for k, s in enumerate(samples):
    vid = s.get("video_id") or f"spk{int(s.get('speaker', 0)):04d}v{k:05d}"
    sid = f"{vid}_{k}"
    mp4 = _h2s_clip(root, split, f"{sid}-rgb_front")
    _check_text(s["text"], _h2s_csv(root, split))
    n = write_clip(mp4, s, primary="video", crf=crf)
    rows.append((vid, f"{vid}-rgb_front", sid, f"{sid}-rgb_front", "0.00",
                 f"{n / float(s.get('fps', 25)):.2f}", s["text"]))
    paths.append(mp4)
  os.makedirs(root, exist_ok=True)
  with open(_h2s_csv(root, split), "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, delimiter="\t", lineterminator="\n")
    w.writerow(H2S_COLUMNS)
    w.writerows(rows)
  return paths


class How2SignReader(LayoutReader):
  """How2Sign realigned CSV + sentence-level rgb_front clips; clip length checked against
  END_REALIGNED - START_REALIGNED within duration_tol seconds."""

  def __init__(self, root: str, split: str = "test", *, duration_tol: float = 0.25,
               csv_path: str | None = None, clips_dir: str | None = None, **kw):
    """csv_path / clips_dir override the default places (root/how2sign_realigned_{split}.csv,
    root/sentence_level/{split}/rgb_front/raw_videos) for re-organised copies."""
    super().__init__(**kw)
    self.duration_tol = duration_tol
    path = csv_path or _h2s_csv(root, split)
    if not os.path.isfile(path):
      raise DataError("How2Sign CSV does not exist", path=path)
    with open(path, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f, delimiter="\t")
      missing = [c for c in H2S_COLUMNS if c not in (reader.fieldnames or [])]
      if missing:
        raise DataError(f"How2Sign CSV lacks columns {missing} (has {reader.fieldnames})", path=path)
      rows = list(reader)
    ids: dict[str, int] = {}

    def make(i, r):
      try:
        dur = float(r["END_REALIGNED"]) - float(r["START_REALIGNED"])
      except (TypeError, ValueError) as e:
        raise _err("malformed", f"row {i + 2}: bad START_REALIGNED / END_REALIGNED", path) from e
      mp4 = (os.path.join(clips_dir, r["SENTENCE_NAME"] + ".mp4") if clips_dir
             else _h2s_clip(root, split, r["SENTENCE_NAME"]))
      return _Entry(mp4=mp4, wav=mp4[:-4] + ".wav", text=r["SENTENCE"] or "",
                    text_path=path, row=i + 2, duration=dur,
                    speaker=_speaker_from(r["VIDEO_ID"], ids))
    for i, r in enumerate(rows):
      self._add(lambda i=i, r=r: make(i, r))


# ----------------------------------------------------------------------------- CNVSRC / CN-CVS / cued

def _labels(root: str, dataset: str, split: str, suffix: str = "") -> str:
  return os.path.join(root, "labels", f"{dataset}_{split}{suffix}.csv")


def write_cnvsrc(root: str, split: str, samples: Iterable[dict], *, dataset: str = "cnvsrc",
                 tokenize: Callable[[str], list[int]] = _code_points, crf: int = 18) -> list[str]:
  """Write CNVSRC / CN-CVS style files plus the auto_avsr and VTS manifests (see module doc)."""
  rows, vts, paths, counts = [], [], [], collections.Counter()
  base = os.path.join(root, dataset)
  for s in samples:
    spk = f"s{int(s.get('speaker', 0)):05d}"
    name = f"{spk}/{counts[spk]:05d}"
    counts[spk] += 1
    rel = f"{split}/video/{name}.mp4"
    mp4, wav = os.path.join(base, rel), os.path.join(base, split, "audio", name + ".wav")
    _check_text(s["text"], _labels(root, dataset, split))
    n = write_clip(mp4, s, wav_path=wav, primary="lip" if s.get("lip") is not None else "video",
                   crf=crf)
    _write_text(os.path.join(base, split, "text", name + ".txt"), s["text"])
    rows.append((dataset, rel, n, " ".join(map(str, tokenize(s["text"])))))
    n_audio = len(s["audio"]) if s.get("audio") is not None else 0
    vts.append((os.path.relpath(mp4, root), os.path.relpath(wav, root), n, n_audio, s["text"]))
    paths.append(mp4)
  os.makedirs(os.path.join(root, "labels"), exist_ok=True)
  for path, data in ((_labels(root, dataset, split), rows), (_labels(root, dataset, split, "_vts"), vts)):
    with open(path, "w", encoding="utf-8", newline="") as f:
      csv.writer(f, lineterminator="\n").writerows(data)
  return paths


def write_cued(root: str, split: str, samples: Iterable[dict], *, dataset: str = "cued",
               tokenize: Callable[[str], list[int]] = _code_points, crf: int = 18) -> list[str]:
  """Write the Chinese cued-speech layout: mp4 + wav beside + pose / hand-shape .npy + manifest."""
  rows, paths, counts = [], [], collections.Counter()
  for s in samples:
    spk = f"s{int(s.get('speaker', 0)):05d}"
    rel = f"{split}/{spk}/{counts[spk]:05d}.mp4"
    counts[spk] += 1
    mp4 = os.path.join(root, dataset, rel)
    _check_text(s["text"], _labels(root, dataset, split))
    n = write_clip(mp4, s, primary="video", crf=crf)
    _write_text(mp4[:-4] + ".txt", s["text"])
    hand = _hand_shape_frames(s, n)
    hand_rel = ""
    if hand is not None:
      hand_rel = rel[:-4] + "_hand.npy"
      np.save(os.path.join(root, dataset, hand_rel), hand)
    pose_rel = rel[:-4] + "_pose.npy" if s.get("pose") is not None else ""
    rows.append((dataset, rel, n, " ".join(map(str, tokenize(s["text"]))), hand_rel, pose_rel))
    paths.append(mp4)
  os.makedirs(os.path.join(root, "labels"), exist_ok=True)
  with open(_labels(root, dataset, split), "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(("dataset", "rel_path", "n_frames", "token_ids", "hand_recog_path", "hand_position_path"))
    w.writerows(rows)
  return paths


def _read_rows(path: str) -> list[list[str]]:
  if not os.path.isfile(path):
    raise DataError("manifest CSV does not exist", path=path)
  with open(path, encoding="utf-8", newline="") as f:
    rows = [r for r in csv.reader(f) if r]
  if rows and not rows[0][2].strip().lstrip("-").isdigit():
    rows = rows[1:]  # header row
  return rows


class ManifestReader(LayoutReader):
  """auto_avsr-style CSV manifests: CNVSRC / CN-CVS (`fmt='auto_avsr'`), their VTS CSV
  (`fmt='vts'`) and the Chinese cued-speech CSV (`fmt='cued'`, hand files checked too).

  Paths: root/<dataset>/<rel_path>; audio at .../audio/... (CNVSRC) or the .wav beside the .mp4;
  transcript from .../text/<...>.txt or the .txt beside, else detokenize(token_ids).
  """
  chinese = True
  audio_from_mp4 = False
  require_audio = True

  def __init__(self, root: str, csv_path: str, *, fmt: str = "auto_avsr",
               detokenize: Callable[[list[int]], str] = _from_code_points, primary: str | None = None,
               **kw):
    super().__init__(**kw)
    # what the manifest's videos are when no side file says: mouth ROIs (auto_avsr) or full frames
    primary = primary or ("video" if fmt == "cued" else "lip")
    if fmt not in ("auto_avsr", "vts", "cued"):
      raise DataError(f"unknown manifest format {fmt!r} (auto_avsr, vts, cued)", path=csv_path)
    ids: dict[str, int] = {}
    rows = _read_rows(csv_path)
    want = {"auto_avsr": 4, "cued": 6, "vts": 5}[fmt]

    def make(i, r):
      if len(r) < want:
        raise _err("malformed", f"row {i + 1} has {len(r)} columns, expected {want}", csv_path)
      try:
        n_frames = int(r[2])
        n_samples = int(r[3]) if fmt == "vts" else None
        tokens = [] if fmt == "vts" else [int(x) for x in r[3].split()]
      except ValueError as e:
        raise _err("malformed", f"row {i + 1}: non-integer count or token id in {r}", csv_path) from e
      if fmt == "vts":
        mp4, wav = os.path.join(root, r[0]), os.path.join(root, r[1])
        entry = _Entry(mp4=mp4, wav=wav, text=r[4], text_path=csv_path, row=i + 1, n_frames=n_frames,
                       n_samples=n_samples or None)
      else:
        mp4 = os.path.join(root, r[0], r[1])
        wav = mp4.replace(f"{os.sep}video{os.sep}", f"{os.sep}audio{os.sep}")[:-4] + ".wav"
        if not os.path.isfile(wav):
          wav = mp4[:-4] + ".wav"
        txt = mp4.replace(f"{os.sep}video{os.sep}", f"{os.sep}text{os.sep}")[:-4] + ".txt"
        txt = txt if os.path.isfile(txt) else mp4[:-4] + ".txt"
        if os.path.isfile(txt):
          with open(txt, encoding="utf-8") as f:
            text, text_path = f.read().strip(), txt
        else:
          text, text_path = detokenize(tokens), csv_path
        entry = _Entry(mp4=mp4, wav=wav, text=text, text_path=text_path, row=i + 1, n_frames=n_frames,
                       token_ids=np.asarray(tokens, np.int64))
        if fmt == "cued":
          entry["hand_path"] = os.path.join(root, r[0], r[4]) if r[4] else ""
          entry["pose_path"] = os.path.join(root, r[0], r[5]) if r[5] else ""
          for key in ("hand_path", "pose_path"):
            if entry[key] and not os.path.isfile(entry[key]):
              raise _err("missing", "hand file listed in the manifest does not exist", entry[key])
      entry["speaker"] = _speaker_from(os.path.basename(os.path.dirname(mp4)), ids)
      entry["primary"] = primary
      return entry
    for i, r in enumerate(rows):
      self._add(lambda i=i, r=r: make(i, r))


def cnvsrc_reader(root: str, split: str, *, dataset: str = "cnvsrc", vts: bool = False, **kw
                  ) -> ManifestReader:
  return ManifestReader(root, _labels(root, dataset, split, "_vts" if vts else ""),
                        fmt="vts" if vts else "auto_avsr", **kw)


def cued_reader(root: str, split: str, *, dataset: str = "cued", **kw) -> ManifestReader:
  return ManifestReader(root, _labels(root, dataset, split), fmt="cued", **kw)


# ----------------------------------------------------------------------------- CMLR

CMLR_SPLITS = {"train": "train", "validation": "val", "val": "val", "dev": "val", "test": "test"}


def cmlr_split_csv(root: str, split: str) -> str:
  return os.path.join(root, f"{CMLR_SPLITS.get(split, split)}.csv")


def write_cmlr(root: str, split: str, samples: Iterable[dict], *, video_dir: str = "video", date: str = "20170121",
               crf: int = 18) -> list[str]:
  """Write the CMLR layout (module doc): the `lip` stream as the main clip when samples carry one (a mouth-ROI
  tree, as a lip reader reads it), the sentence as the text file's first line, the split list."""
  ids, paths, counts = [], [], collections.Counter()
  for s in samples:
    spk = f"s{int(s.get('speaker', 0)) + 1}"
    k = counts[spk]
    counts[spk] += 1
    t = len(s["lip"] if s.get("lip") is not None else s["video"]) / float(s.get("fps", 25))
    clip = f"{spk}/{date}/section_{k // 10 + 1}_{3.0 * k:06.2f}_{3.0 * k + t:06.2f}"
    mp4 = os.path.join(root, video_dir, clip + ".mp4")
    _check_text(s["text"], cmlr_split_csv(root, split))
    write_clip(mp4, s, wav_path=os.path.join(root, "audio", clip + ".wav"),
               primary="lip" if s.get("lip") is not None else "video", crf=crf)
    _write_text(os.path.join(root, "text", clip + ".txt"), s["text"])
    ids.append(clip)
    paths.append(mp4)
  with open(cmlr_split_csv(root, split), "w", encoding="utf-8") as f:
    f.write("".join(c + "\n" for c in ids))
  return paths


def read_cmlr_text(path: str) -> str:
  """The sentence of a CMLR .txt: its first non-empty line, whitespace removed ("" when there is none)."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        return "".join(line.split())
  return ""


class CMLRReader(LayoutReader):
  """CMLR: the clips of a split list, transcripts from text/<id>.txt, audio from audio/<id>.wav (or the mp4)."""
  chinese = True

  def __init__(self, root: str, split: str = "test", *, video_dir: str = "video", primary: str = "lip", **kw):
    super().__init__(**kw)
    csv_path = cmlr_split_csv(root, split)
    if not os.path.isfile(csv_path):
      raise DataError(f"CMLR split list does not exist (expected {os.path.basename(csv_path)} in the dataset "
                      f"root; splits {sorted(set(CMLR_SPLITS.values()))})", path=csv_path)
    with open(csv_path, encoding="utf-8", newline="") as f:
      rows = [r for r in csv.reader(f) if r and r[0].strip()]
    ids: dict[str, int] = {}

    def make(i, clip):
      if clip.count("/") < 1 or clip.endswith(".mp4"):
        raise _err("malformed", f"line {i + 1}: {clip!r} is not a clip id s<N>/<date>/<clip>", csv_path)
      txt = os.path.join(root, "text", clip + ".txt")
      if not os.path.isfile(txt):
        raise _err("missing", "transcript file does not exist", txt)
      e = _Entry(mp4=os.path.join(root, video_dir, clip + ".mp4"), wav=os.path.join(root, "audio", clip + ".wav"),
                 text=read_cmlr_text(txt), text_path=txt, row=i + 1)
      e["speaker"] = _speaker_from(clip.split("/")[0], ids)
      e["primary"] = primary
      return e
    for i, r in enumerate(rows):
      clip = r[0].strip()
      if i == 0 and not _SPEAKER.match(clip):
        continue   # a header line
      self._add(lambda i=i, clip=clip: make(i, clip))


def cmlr_reader(root: str, split: str, **kw) -> CMLRReader:
  return CMLRReader(root, split, **kw)
