"""Tri-modal data: SynthCue clips -> per-task examples (SLT / VSR / ASR / AVSR) -> one mixed, fixed-shape batch.

Source (`data.source`): "synthcue" (below), or "how2sign+lrs3" (the paper's data: How2Sign sentence clips for SLT,
LRS3 utterances for VSR / ASR / AVSR, read by trimodal_jax/real_data.py into the same sample dicts; the sign
clip is centre-cropped and resized to data.sign_frame_size, the lips are data.lip_size mouth-ROI crops, the
audio 16 kHz: see that module).
  SLT   SynthCue `sign` mode (both hands sign the glosses in sign order, the mouth mouths the words; pairs of
        glosses share a manual form and differ only in mouthing): sign = the frames (data.sign_frame_size,
        block-averaged to data.sign_size), lip = the clip's mouth crop; target = the SPOKEN sentence (text order
        differs from the sign order: a translation)
  VSR   SynthCue `speech` mode: lip = the mouth crop; target = the sentence
  ASR   SynthCue `speech` mode: audio = Whisper log-mels of the clip's 16 kHz audio (4 per video frame)
  AVSR  lip + audio
The task of an example is drawn from `cfg.tasks` (ratios; stage 1 VSR + SLT, stage 2 all four) by the example's
augmentation rng, so a batch mixes tasks (the model takes per-example task ids).

Augmentation (training; rng None = evaluation: centre crop, clean audio, full target):
  lip      random crop data.crop (of data.lip_size) + horizontal flip (p 0.5) for VSR / AVSR; centre crop else
  target   SLT: 0-20 % of the words (characters) dropped (data.word_drop; shared.data.augment.drop_words)
  audio    stage 2 only (cfg.stage == "stage2"), ASR / AVSR: babble noise (3 other utterances of a fixed pool of
           BABBLE_POOL validation clips) with probability data.babble_p at an SNR drawn from data.babble_snr dB

Example (`prepare`, host numpy): n_frames int, task int32 (TASKS index), sign [T, s, s, 3] uint8, lip [T, c, c]
uint8, audio [4T, n_mels] float32, instr_ids [Li] int32 (bos + the task's PROMPTS instruction), target_ids [Lt]
int32 (the sentence + eos); a modality the task does not use is an exact zero array of its shape.
Batch (`collate`; keys `batch_keys(cfg)`: only the modalities some task of the stage uses):
  sign [B, T, s, s, 3] uint8, sign_len [B] | lip [B, T, c, c] uint8, lip_len [B] | audio [B, 4T, n_mels] float32,
  audio_len [B] (mel frames); task [B] int32; instr_ids [B, Li] int32, instr_len [B]; target_ids [B, Lt] int32,
  target_len [B] (eos included). T = the smallest data.frame_buckets entry holding the batch's longest clip,
  Li = the longest instruction, Lt = the smallest data.label_buckets entry holding the longest target.
  A present modality's length is the clip's frame count (x 4 for mels); an absent one is all zeros with length
  T (the encoder sees a valid all-zero clip; the task's masking replaces its features by zeros).
Sign frames stay uint8 here: the task normalises them on device (shared.models.swin3d KINETICS_MEAN / STD).

Precomputed sign features (`data.sign_features` = FEAT; "" = frames, the default). The paper's sign encoder is
frozen, so its features can be extracted once, offline (`python -m trimodal_jax.extract`, which runs the model's
own sign path: TriModal._sign, one pooled Swin clip per frame) and read instead of the frames; at paper size
this removes the Swin (9,600 224 x 224 frames per 600-frame example) from the training step. Layout:
  FEAT/<split>/index.json      the encoder's identity (model.sign section, weights sha256), dim, dtype, count
  FEAT/<split>/<name>.npy      one clip's features [T', Ds] float16 | float32 (T' = the clip's sign feature
                               frames, `sign_steps`: T at clip stride 1, "same" padding; Ds = model.sign's width)
  <name> = `clip_name(source, index)`: the How2Sign clip's file stem, or the SynthCue index (6 digits).
With it the config must have "sign" in model.precomputed (and the other way round: ConfigError naming both keys);
the SLT sources then neither render nor decode the sign video (the lips and text are read as before), and
  example sign [T', Ds] float32 (an absent sign: zeros of that shape)    batch sign [B, T', Ds] float32,
  sign_len [B] = the feature count (= the frame count at stride 1)
A missing file, or one whose shape is not [T', Ds] for the clip's T frames, is a DataError naming the file and
shape (never zeros); FEAT/<split>/index.json missing or of another width: DataError naming it.

Tokenizer (`tokenizer(cfg)`): cfg.tokenizer.path = a local tokenizer (the LLaMA directory at paper size), or ""
= the SynthCue sentence tokenizer: word level over <pad> <s> </s> <unk>, the words of the four instructions and
the world's characters (each CJK character is one token), within the tiny LLM's vocabulary.
"""
from __future__ import annotations

import functools
import logging
import os
import re

import numpy as np

from shared.data import augment
from shared.data.features import whisper_log_mel
from shared.data.pipeline import bucket_length, make_iterator
from shared.data.synthcue import synthcue_source
from shared.errors import ConfigError, DataError
from trimodal_jax.model import MODALITIES, PROMPTS, TASK_MODALITIES, TASKS, instruction_ids

log = logging.getLogger(__name__)
SOURCES = ("synthcue", "how2sign+lrs3")
BABBLE_POOL = 16            # validation clips whose audio makes the babble
MELS_PER_FRAME = 4          # 16 kHz / hop 160 / 25 fps
_CJK = re.compile(r"[^\x00-\x7f]")


# ----------------------------------------------------------------------------- config views

def ratios(cfg) -> dict:
  """{task: probability} from cfg.tasks (normalised; ConfigError for unknown tasks or bad values)."""
  raw = {k: cfg.tasks[k] for k in cfg.tasks}
  bad = sorted(set(raw) - set(TASKS))
  if bad:
    raise ConfigError(f"tasks has {bad}; expected ratios for {TASKS}")
  for k, v in raw.items():
    if not (isinstance(v, (int, float)) and v >= 0):
      raise ConfigError(f"tasks.{k}={v!r}: expected a ratio >= 0")
  total = float(sum(raw.values()))
  if total <= 0:
    raise ConfigError(f"tasks={raw}: at least one task needs a ratio > 0")
  return {t: float(raw.get(t, 0.0)) / total for t in TASKS}


def active_tasks(cfg) -> tuple[str, ...]:
  return tuple(t for t, p in ratios(cfg).items() if p > 0)


def modalities(cfg) -> tuple[str, ...]:
  """The modalities the stage's tasks read (the batch holds only these)."""
  used = {m for t in active_tasks(cfg) for m in TASK_MODALITIES[t]}
  return tuple(m for m in MODALITIES if m in used)


def batch_keys(cfg) -> tuple[str, ...]:
  keys = []
  for m in modalities(cfg):
    keys += [m, f"{m}_len"]
  return tuple(keys) + ("task", "instr_ids", "instr_len", "target_ids", "target_len")


def check_data(cfg):
  d = cfg.data
  if d.source not in SOURCES:
    raise ConfigError(f"data.source={d.source!r}: expected one of {SOURCES}")
  if d.source != "synthcue":
    from trimodal_jax import real_data
    real_data.check(d)
  ratios(cfg)
  if int(d.crop) > int(d.lip_size):
    raise ConfigError(f"data.crop={d.crop} is larger than data.lip_size={d.lip_size}")
  if int(d.sign_frame_size) % int(d.sign_size):
    raise ConfigError(f"data.sign_frame_size={d.sign_frame_size} is not a multiple of data.sign_size={d.sign_size} "
                      "(frames are block-averaged)")
  lo, hi = (float(x) for x in d.word_drop)
  if not 0.0 <= lo <= hi <= 1.0:
    raise ConfigError(f"data.word_drop={tuple(d.word_drop)}: expected (low, high) with 0 <= low <= high <= 1")
  if not 0.0 <= float(d.babble_p) <= 1.0:
    raise ConfigError(f"data.babble_p={d.babble_p}: expected a probability in [0, 1]")
  if (d.source != "synthcue" and cfg.get("stage") == "stage2" and float(d.babble_p) > 0
      and not str(d.get("babble_path", "") or "")):
    raise ConfigError(f"data.source={d.source!r}, stage 2 with data.babble_p={d.babble_p}: set data.babble_path (a "
                      "local 16 kHz babble recording, e.g. NOISEX-92's) or data.babble_p=0")
  if not len(d.babble_snr):
    raise ConfigError("data.babble_snr is empty: expected SNRs in dB, e.g. (-5, 0, 5, 10, 15, 20)")
  if d.sample_rate != 16000 or d.sample_rate // d.fps != 160 * MELS_PER_FRAME:
    raise ConfigError(f"data.sample_rate={d.sample_rate}, data.fps={d.fps}: Whisper log-mels need 16 kHz and "
                      f"{MELS_PER_FRAME} mel frames (hop 160) per video frame (25 fps)")
  if int(d.n_mels) != 80:
    raise ConfigError(f"data.n_mels={d.n_mels}: Whisper log-mels have 80 bins")
  if not len(d.frame_buckets) or not len(d.label_buckets):
    raise ConfigError("data.frame_buckets and data.label_buckets need at least one length each")
  feat = sign_features_dir(d)
  pre = tuple(cfg.model.get("precomputed", ()) or ())
  if bool(feat) != ("sign" in pre):
    raise ConfigError(f"data.sign_features={feat!r} and model.precomputed={pre}: precomputed sign features need "
                      "both (data.sign_features=FEAT from trimodal_jax.extract and 'sign' in model.precomputed) or "
                      "neither (frames)")
  frames_only = [m for m in pre if m != "sign"]
  if frames_only:
    raise ConfigError(f"model.precomputed={pre}: the data pipeline reads {frames_only} as frames / audio; only "
                      "sign features can be read precomputed (data.sign_features)")


# ----------------------------------------------------------------------------- tokenizer

def sentence_tokenizer(chars, specials=("<pad>", "<s>", "</s>", "<unk>")):
  """Word-level tokenizer over specials + the instructions' words + `chars` (a CJK character is one token)."""
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  words = []
  for w in [w for t in TASKS for w in PROMPTS[t].split()] + list(chars):
    if w not in words and w not in specials:
      words.append(w)
  vocab = {w: i for i, w in enumerate(list(specials) + words)}
  tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[3]))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Split(Regex(_CJK.pattern), behavior="isolated")])
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials[0], bos_token=specials[1],
                                 eos_token=specials[2], unk_token=specials[3])


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str, seed: int, lexicon_size: int, max_homophones: int, n_speakers: int, fraction: float):
  if path:
    from shared.text.tokenizers import load_tokenizer
    return load_tokenizer(path)
  from shared.data.synthcue import build_world
  return sentence_tokenizer(build_world(seed, lexicon_size, max_homophones, n_speakers, fraction).chars)


def tokenizer(cfg):
  """The target / instruction tokenizer (module docstring); cached per setting."""
  d = cfg.data
  path = str(cfg.tokenizer.path or "")
  if not path and d.source != "synthcue":
    raise ConfigError(f"tokenizer.path is empty: data.source={d.source!r} needs a tokenizer directory (the LLM's)")
  if path:   # a real data section has no SynthCue world fields
    tok = _tokenizer(path, 0, 0, 0, 0, 0.0)
  else:
    tok = _tokenizer(path, int(d.seed), int(d.lexicon_size), int(d.max_homophones), int(d.n_speakers),
                     float(d.shared_sign_fraction))
  if tok.eos_token_id is None:
    raise ConfigError(f"tokenizer.path={path!r}: the tokenizer has no eos token (targets end with it)")
  n = len(tok)
  if n > int(cfg.model.llm.vocab_size):
    raise ConfigError(f"the tokenizer has {n} tokens; model.llm.vocab_size={cfg.model.llm.vocab_size} is smaller")
  return tok


def encode_target(tok, text: str) -> np.ndarray:
  """text -> ids + eos [N + 1] int32."""
  ids = list(tok.encode(text, add_special_tokens=False)) + [int(tok.eos_token_id)]
  return np.asarray(ids, np.int32)


def decode_text(tok, ids) -> str:
  """Generated ids (cut at the first eos / pad) -> text; spaces between CJK characters removed."""
  out = []
  for i in (int(i) for i in ids):
    if i == tok.eos_token_id or (tok.pad_token_id is not None and i == tok.pad_token_id):
      break
    out.append(i)
  text = tok.decode(out, skip_special_tokens=True)
  return re.sub(r"(?<=[^\x00-\x7f]) (?=[^\x00-\x7f])", "", text).strip()


@functools.lru_cache(maxsize=8)
def _instructions(tok) -> dict:
  return {t: np.asarray(instruction_ids(tok, t), np.int32) for t in TASKS}


def instructions(tok) -> dict:
  """{task: bos + instruction ids [Li_t] int32}."""
  return _instructions(tok)


def instr_len(tok) -> int:
  return max(len(v) for v in instructions(tok).values())


# ----------------------------------------------------------------------------- sources

def sources(data, split: str) -> dict:
  """{"sign": sign-mode clips (video, no audio), "speech": speech-mode clips (audio, no video)}: SynthCue, or How2Sign
  / LRS3 (trimodal_jax/real_data.py; equal len(), indices wrap over the smaller dataset)."""
  if data.source != "synthcue":
    from trimodal_jax import real_data
    return real_data.sources(data, split)
  return {"sign": synthcue_source(data, split, "sign", frame_size=int(data.sign_frame_size), render_audio=False,
                                  render_video=not sign_features_dir(data)),
          "speech": synthcue_source(data, split, "speech", render_video=False)}


def sign_source(data, split: str):
  """The SLT clips of `split` with their frames ("video"), alone (trimodal_jax.extract): SynthCue `sign` mode, or
  How2Sign without its mouth crops (real_data.how2sign_source(lips=False); LRS3 is not opened)."""
  if data.source != "synthcue":
    from trimodal_jax import real_data
    src = real_data.how2sign_source(data, split, lips=False)
    src.load_video = True
    return src
  return synthcue_source(data, split, "sign", frame_size=int(data.sign_frame_size), render_audio=False)


def sources_for(cfg, split: str) -> dict:
  """`sources` of cfg.data, the SLT clips reading their precomputed sign features (SignFeatures) when
  data.sign_features is set."""
  srcs = sources(cfg.data, split)
  feat = sign_features_dir(cfg.data)
  if feat:
    srcs = {**srcs, "sign": SignFeatures(srcs["sign"], os.path.join(feat, split), sign_dim(cfg),
                                         functools.partial(sign_steps, cfg))}
  return srcs


# ----------------------------------------------------------------------------- precomputed sign features

FEATURE_INDEX = "index.json"


def sign_features_dir(data) -> str:
  """data.sign_features (expanded; "" = frames; a config without the key reads frames)."""
  return os.path.expanduser(str(data.get("sign_features", "") or ""))


def sign_dim(cfg) -> int:
  """Ds: the sign encoder's feature width (TriModalConfig.widths()["sign"])."""
  from trimodal_jax.model import model_from_config
  return int(model_from_config(cfg).config.widths()["sign"])


def sign_steps(cfg, n_frames: int) -> int:
  """Sign feature frames of an n_frames clip (TriModal._sign's output length: ceil(T / stride) with "same"
  clip padding, floor((T - window) / stride) + 1 with "valid")."""
  c = cfg.model.sign
  w, st, n = int(c.clip_window), int(c.clip_stride), int(n_frames)
  return -(-n // st) if c.clip_padding == "same" else max((n - w) // st + 1, 0)


def clip_name(src, index: int) -> str:
  """The feature file name (no extension) of SLT clip `index` of `src`: the source's own clip_name (How2Sign:
  the clip's file stem) or the index, 6 digits (SynthCue)."""
  if hasattr(src, "clip_name"):
    return str(src.clip_name(int(index)))
  return f"{int(index):06d}"


def read_index(directory: str) -> dict:
  """FEAT/<split>/index.json -> dict (DataError naming it when missing or unreadable)."""
  import json
  path = os.path.join(directory, FEATURE_INDEX)
  if not os.path.isfile(path):
    raise DataError("no feature index: extract the split's sign features first (python -m trimodal_jax.extract "
                    f"--split {os.path.basename(directory)} --out {os.path.dirname(directory)})", path=path)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"unreadable feature index: {e}", path=path) from e


def read_sign_features(path: str, steps: int, dim: int) -> np.ndarray:
  """One clip's feature file -> [steps, dim] float32; DataError naming the file (and both shapes) when it is
  missing, unreadable or of another shape."""
  if not os.path.isfile(path):
    raise DataError(f"sign feature file does not exist (expected [{steps}, {dim}]: run trimodal_jax.extract for "
                    "this split)", path=path, key="sign")
  try:
    x = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataError(f"unreadable sign feature file: {e}", path=path, key="sign") from e
  if x.shape != (steps, dim) or x.dtype not in (np.float16, np.float32):
    raise DataError(f"sign features have shape {x.shape} {x.dtype}; the clip needs [{steps}, {dim}] float16 / "
                    "float32 (model.sign's width; one feature per frame)", path=path, key="sign")
  return x.astype(np.float32)


class SignFeatures:
  """An SLT source whose samples carry "sign_features" [T', Ds] float32 (read from directory/<clip_name>.npy)
  instead of the video (the wrapped source renders / decodes none). Checks directory/index.json's width."""

  def __init__(self, src, directory: str, dim: int, steps):
    self.src, self.directory, self.dim, self.steps = src, directory, int(dim), steps
    index = read_index(directory)
    if int(index.get("dim", -1)) != self.dim:
      raise DataError(f"features of width {index.get('dim')}; model.sign gives {self.dim}",
                      path=os.path.join(directory, FEATURE_INDEX))
    self.index = index

  def __len__(self) -> int:
    return len(self.src)

  def __getattr__(self, name):        # n_clips, entries, ... of the wrapped source
    if name == "src":
      raise AttributeError(name)
    return getattr(self.src, name)

  def path(self, index: int) -> str:
    return os.path.join(self.directory, clip_name(self.src, index) + ".npy")

  def __getitem__(self, index: int) -> dict:
    s = dict(self.src[index])
    lip = s.get("lip")
    t = int(np.shape(lip)[0]) if lip is not None else 0
    s["sign_features"] = read_sign_features(self.path(index), self.steps(t), self.dim)
    return s


@functools.lru_cache(maxsize=4)
def _babble_pool(seed, lexicon_size, max_homophones, n_speakers, n_test, clauses, fraction):
  src = synthcue_source(dict(seed=seed, lexicon_size=lexicon_size, max_homophones=max_homophones,
                             n_speakers=n_speakers, n_test_speakers=n_test, clauses=clauses,
                             shared_sign_fraction=fraction, num_samples=BABBLE_POOL),
                        "validation", "speech", render_video=False)
  return tuple(src[i]["audio"] for i in range(BABBLE_POOL))


@functools.lru_cache(maxsize=2)
def _babble_file(path: str) -> tuple:
  from shared.data.media import read_wav
  if not os.path.isfile(path):
    raise ConfigError(f"data.babble_path={path!r} does not exist (a 16 kHz babble recording, e.g. NOISEX-92's)")
  wav, _ = read_wav(path, sample_rate=16000)
  wav = np.asarray(wav, np.float32).reshape(-1)
  n = len(wav) // BABBLE_POOL
  if n < 16000:
    raise DataError(f"babble recording has {len(wav)} samples; expected at least {BABBLE_POOL} s at 16 kHz",
                    path=path)
  return tuple(wav[i * n:(i + 1) * n] for i in range(BABBLE_POOL))


def babble_pool(data) -> tuple:
  """The babble's talkers: data.babble_path (a local 16 kHz recording such as NOISEX-92 babble, the paper's; cut
  into BABBLE_POOL equal segments, mixed 3 at a time) when set, else BABBLE_POOL SynthCue validation clips."""
  path = str(data.get("babble_path", "") or "")
  if path:
    return _babble_file(os.path.expanduser(path))
  if data.source != "synthcue":
    raise ConfigError(f"data.source={data.source!r} with babble noise (data.babble_p > 0 in stage 2, or --snr) "
                      "needs data.babble_path (a local babble recording, e.g. NOISEX-92)")
  return _babble_pool(int(data.seed), int(data.lexicon_size), int(data.max_homophones), int(data.n_speakers),
                      int(data.n_test_speakers), tuple(int(c) for c in data.clauses), float(data.shared_sign_fraction))


# ----------------------------------------------------------------------------- examples

def _where(sample) -> str:
  return str(sample.get("path", f"SynthCue sample {sample.get('index', '?')}"))


def sign_frames(video: np.ndarray, size: int) -> np.ndarray:
  """[T, F, F, 3] uint8 -> [T, size, size, 3] uint8, F / size x F / size block means (rounded)."""
  t, f = video.shape[0], video.shape[1]
  k = f // size
  if k * size != f or video.shape[2] != f:
    raise DataError(f"sign frames {video.shape[1:3]} are not a multiple of data.sign_size={size}", key="video")
  if k == 1:
    return np.asarray(video, np.uint8)
  x = video.reshape(t, size, k, size, k, 3).astype(np.float32).mean((2, 4))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def sign_input(sample, size: int) -> np.ndarray:
  """An SLT sample's video -> the sign encoder's input frames [T, size, size, 3] uint8 (`sign_frames`)."""
  video = sample.get("video")
  if video is None or np.ndim(video) != 4:
    raise DataError(f"expected sign frames 'video' [T, H, W, 3] uint8, got "
                    f"{None if video is None else np.shape(video)}", path=_where(sample), key="video")
  return sign_frames(np.asarray(video, np.uint8), size)


def clip_mels(audio: np.ndarray, n_frames: int) -> np.ndarray:
  """16 kHz audio of an n_frames clip -> Whisper log-mels [4 n_frames, 80] float32."""
  mel = whisper_log_mel(np.asarray(audio, np.float32), n_samples=None)
  m = MELS_PER_FRAME * n_frames
  if mel.shape[0] < m:
    mel = np.pad(mel, ((0, m - mel.shape[0]), (0, 0)))
  return mel[:m]


def draw_task(cfg, rng: np.random.Generator) -> str:
  r = ratios(cfg)
  return TASKS[int(rng.choice(len(TASKS), p=[r[t] for t in TASKS]))]


def prepare(index: int, task: str, rng: np.random.Generator | None, *, cfg, srcs: dict, tok,
            snr: float | None = None) -> dict | None:
  """Clip `index` as an example of `task` (module docstring); rng None = evaluation. None drops the clip (longer
  than the largest frame bucket, or a target longer than the largest label bucket). snr (dB, evaluation): ASR /
  AVSR audio mixed with babble (babble_pool) at exactly that SNR, drawn from default_rng(index): the same noise
  for the clip in every run (None: clean audio; training noise is the stage-2 augmentation above)."""
  d = cfg.data
  mods = TASK_MODALITIES[task]
  s = srcs["sign" if task == "slt" else "speech"][int(index)]
  lip = s.get("lip")
  if lip is None or np.ndim(lip) != 3:
    raise DataError(f"expected a mouth crop 'lip' [T, H, W] uint8, got {None if lip is None else np.shape(lip)}",
                    path=_where(s), key="lip")
  t = int(lip.shape[0])
  text = str(s.get("text", ""))
  if not text.strip():
    raise DataError("empty transcript", path=_where(s), key="text")
  if task == "slt" and rng is not None:
    text = augment.drop_words(text, rng, tuple(float(x) for x in d.word_drop), chinese=True)
  target = encode_target(tok, text)
  if t > max(d.frame_buckets) or len(target) > max(d.label_buckets):
    log.warning("dropping %s: %d frames / %d target tokens exceed the largest bucket (%d frames, %d tokens)",
                _where(s), t, len(target), max(d.frame_buckets), max(d.label_buckets))
    return None
  c, size = int(d.crop), int(d.sign_size)
  out = {"n_frames": t, "task": np.int32(TASKS.index(task)), "instr_ids": instructions(tok)[task],
         "target_ids": target}
  used = modalities(cfg)
  if "sign" in used and sign_features_dir(d):
    if "sign" in mods:
      if "sign_features" not in s:
        raise DataError("data.sign_features is set but the SLT source gave no features (build it with "
                        "sources_for)", path=_where(s), key="sign")
      out["sign"] = np.asarray(s["sign_features"], np.float32)
    else:
      out["sign"] = np.zeros((sign_steps(cfg, t), sign_dim(cfg)), np.float32)
  elif "sign" in used:
    out["sign"] = sign_input(s, size) if "sign" in mods else np.zeros((t, size, size, 3), np.uint8)
  if "lip" in used:
    if "lip" not in mods:
      out["lip"] = np.zeros((t, c, c), np.uint8)
    elif rng is None or task == "slt":
      out["lip"] = np.ascontiguousarray(augment.center_crop(lip, c), np.uint8)
    else:
      x = augment.random_crop(lip, rng, c)
      if d.flip:
        x = augment.horizontal_flip(x, rng)
      out["lip"] = np.ascontiguousarray(x, np.uint8)
  if "audio" in used:
    if "audio" not in mods:
      out["audio"] = np.zeros((MELS_PER_FRAME * t, int(d.n_mels)), np.float32)
    else:
      wav = np.asarray(s["audio"], np.float32)
      if rng is not None and cfg.stage == "stage2" and rng.random() < float(d.babble_p):
        snr = float(rng.choice(np.asarray(d.babble_snr, np.float32)))
        wav = augment.add_babble(wav, babble_pool(d), rng, snr)
      elif rng is None and snr is not None:
        wav = augment.add_babble(wav, babble_pool(d), np.random.default_rng(int(index)), float(snr))
      out["audio"] = clip_mels(wav, t)
  return out


def _pad(arrays, length: int, dtype) -> np.ndarray:
  out = np.zeros((len(arrays), length) + arrays[0].shape[1:], dtype)
  for i, a in enumerate(arrays):
    out[i, :a.shape[0]] = a
  return out


def collate(examples, *, cfg, tok) -> dict:
  """Examples -> the batch of the module docstring (fixed keys per stage; padded to the buckets)."""
  d = cfg.data
  t = bucket_length(max(e["n_frames"] for e in examples), list(d.frame_buckets))
  n = np.asarray([e["n_frames"] for e in examples], np.int32)
  task = np.asarray([e["task"] for e in examples], np.int32)
  b = len(examples)
  out = {}
  features = bool(sign_features_dir(d))
  for m in modalities(cfg):
    present = np.asarray([m in TASK_MODALITIES[TASKS[k]] for k in task])
    if m == "sign" and features:      # [T', Ds] float32 features: padded to the bucket's feature count
      out[m] = _pad([e[m] for e in examples], sign_steps(cfg, t), np.float32)
      steps = np.asarray([sign_steps(cfg, k) for k in n], np.int32)
      out[f"{m}_len"] = np.where(present, steps, sign_steps(cfg, t)).astype(np.int32)
      continue
    per = MELS_PER_FRAME if m == "audio" else 1
    dtype = np.float32 if m == "audio" else np.uint8
    out[m] = _pad([e[m] for e in examples], per * t, dtype)
    out[f"{m}_len"] = np.where(present, per * n, per * t).astype(np.int32)
  out["task"] = task
  li = instr_len(tok)
  out["instr_ids"] = _pad([e["instr_ids"] for e in examples], li, np.int32)
  out["instr_len"] = np.asarray([len(e["instr_ids"]) for e in examples], np.int32)
  lt = bucket_length(max(len(e["target_ids"]) for e in examples), list(d.label_buckets))
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  tgt = np.full((b, lt), pad, np.int32)
  for i, e in enumerate(examples):
    tgt[i, :len(e["target_ids"])] = e["target_ids"]
  out["target_ids"] = tgt
  out["target_len"] = np.asarray([len(e["target_ids"]) for e in examples], np.int32)
  return out


class Indices:
  """grain source of clip indices 0..n-1 (the clip is built in the random map, where the task is drawn)."""

  def __init__(self, n: int):
    self.n = int(n)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i):
    return int(i)


def train_iterator(cfg, tok, *, batch_size: int, seed: int):
  """Checkpointable grain iterator of mixed-task training batches (host-local batch_size)."""
  srcs = sources_for(cfg, "train")

  def example(index, rng):
    return prepare(index, draw_task(cfg, rng), rng, cfg=cfg, srcs=srcs, tok=tok)

  return make_iterator(Indices(len(srcs["speech"])), functools.partial(collate, cfg=cfg, tok=tok),
                       batch_size=batch_size, seed=seed, random_map_fn=example, skip_none=True)


def eval_examples(cfg, tok, split: str, n: int, tasks=None, snr: float | None = None) -> list[tuple[dict, str]]:
  """The first n usable clips of `split`, example i of task tasks[i % len(tasks)] (default: the stage's tasks),
  unaugmented (snr: babble at that SNR in ASR / AVSR audio, see `prepare`): [(example, reference text)]."""
  srcs = sources_for(cfg, split)
  tasks = tuple(tasks or active_tasks(cfg))
  out, i = [], 0
  while len(out) < n and i < len(srcs["speech"]):
    task = tasks[len(out) % len(tasks)]
    ex = prepare(i, task, None, cfg=cfg, srcs=srcs, tok=tok, snr=snr)
    if ex is not None:
      out.append((ex, decode_text(tok, ex["target_ids"])))
    i += 1
  return out
