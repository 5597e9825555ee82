"""SynthCue: a procedural audio-visual speech world (DESIGN.md § SynthCue), cheap enough for a CPU.

Everything is a pure function of (config, index): `SynthCue(cfg)[i]` builds sample i of split
`cfg.split` from `np.random.default_rng([cfg.seed, split code, i])`; the world (lexicon, grammar,
speakers, sign forms) is a pure function of `cfg.seed` and the size fields, so all splits share it.

World:
- Lexicon: `lexicon_size` toneless pinyin syllables (round-robin over the 22 initials, so every
  lip-identical group is present), each with 1..`max_homophones` real homophone characters
  (`synthcue_lexicon.SYLLABLE_CHARS`). Each character of a syllable has a different word class:
  subject noun S, verb V, adjective A or object noun O.
- Grammar: an utterance is 1..k clauses `S V O` or `S V A O` (spoken order). Which homophone is
  meant follows from the class its position needs, so a decoder without context picks the wrong
  character for a measurable share of syllables and a bigram decoder repairs it.
- Sign: glosses are the words in sign order (object first, adjective after its noun, verb last:
  `O [A] S V`); each gloss has a two-hand manual form (trajectory + hand shapes); pairs of glosses
  share a manual form (`shared_sign_fraction`) and differ only in mouthing (their syllables look
  different on the lips).
- Speakers: face/background colours, lip greys, pitch, vocal-tract scale, speaking rate, cueing lead
  and speed. Splits: `train`/`validation`/`test_seen` use the first n_speakers - n_test_speakers,
  `test` the held-out rest; each split has its own sample seeds.

Modes: `cued` (face + a cueing hand: 8 shapes code the initial, 5 positions the final; the hand
arrives `lead` frames before the lips), `sign` (both hands sign glosses in sign order while the
mouth mouths, and the voice speaks, each gloss's syllable), `speech` (face only).

A sample is DESIGN.md's dict (video [T,H,W,3] uint8, lip [T,h,w] uint8 grey mouth ROI, pose
[T,20,3] float32, audio [S=T*sample_rate/fps] float32 16 kHz, text, pinyin (space-separated),
gloss (space-separated, sign order), speaker, fps, sample_rate) plus `index` and ground truth:
- per syllable, spoken order [N]: char_ids (into `world.chars`), syllable_ids (into
  shared/text/pinyin_vocab.txt), initial_ids (`INITIALS`), final_ids (`FINAL_NAMES`), viseme_ids,
  syllable_frames / syllable_samples [N,2] (start, end), vowel_frames (first vowel frame; the
  consonant occupies [start, vowel)), hand_shape, hand_position and hand_frames (the frame the cue
  hand reaches its position = start - the speaker's lead). The cue fields are given in every mode
  (what a cuer would show); only `cued` mode draws them.
- per gloss, sign order [G]: gloss_ids (char ids), gloss_order (spoken index of each gloss),
  gloss_form (manual form id; equal ids = same hands).
- per frame [T]: mouth_open, lip_params [T,3] (opening, width, rounding).
Pose keypoints (x, y in [0,1] frame units, confidence): 0-3 eyes L/R, nose, chin; 4-7 mouth
corners L/R, upper and lower lip; 8-13 right (cueing/dominant) hand wrist + 5 fingertips;
14-19 left hand. Absent points have confidence 0 and coordinates 0. `synthcue_render.pose_map`
draws them as skeleton images (UniCUE's pose stream).

Speed (benchmarks/synthcue.py, one core of the 2-core dev box): 19-26 ms per cued sample with
video and audio (40-50 samples/s, ~70-90x real time; audio is about half of it), 2-4 ms without
video and audio; reading the same samples back from tfds array_record shards: ~4 ms.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from grain import sources as grain_sources

from shared.data import synthcue_phonology as ph
from shared.data import synthcue_render as rd
from shared.data.synthcue_audio import synthesize
from shared.data.synthcue_lexicon import SYLLABLE_CHARS
from shared.errors import ConfigError

SPLITS = {"train": 0, "validation": 1, "test": 2, "test_seen": 3}
MODES = ("cued", "sign", "speech")
CLASSES = ("S", "V", "A", "O")  # subject noun, verb, adjective, object noun
N_KEYPOINTS = 20
FACE_KP = np.array([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.25], [0.0, 1.3]], np.float32)
MOUTH_CENTRE = np.array([0.0, 0.62], np.float32)
MOUTH_HALF_WIDTH = 0.36   # face units per mouth unit
FACE_UNIT = 0.15          # frame units per face unit


@dataclasses.dataclass(frozen=True)
class SynthCueConfig:
  seed: int = 0
  split: str = "train"
  num_samples: int = 10_000
  mode: str = "cued"
  lexicon_size: int = 44
  max_homophones: int = 3
  n_speakers: int = 8
  n_test_speakers: int = 2
  clauses: tuple[int, int] = (1, 2)
  frame_size: int = 64
  lip_size: int = 40
  fps: int = 25
  sample_rate: int = 16000
  render_video: bool = True
  render_audio: bool = True
  shared_sign_fraction: float = 0.3

  def validate(self) -> "SynthCueConfig":
    def bad(key, want):
      raise ConfigError(f"SynthCue config {key}={getattr(self, key)!r}: expected {want}")
    if self.split not in SPLITS:
      bad("split", f"one of {sorted(SPLITS)}")
    if self.mode not in MODES:
      bad("mode", f"one of {MODES}")
    if not len(CLASSES) <= self.lexicon_size <= len(SYLLABLE_CHARS):
      bad("lexicon_size", f"{len(CLASSES)}..{len(SYLLABLE_CHARS)}")
    if not 1 <= self.max_homophones <= 3:
      bad("max_homophones", "1..3")
    if not 0 <= self.n_test_speakers < self.n_speakers:
      bad("n_test_speakers", f"0..n_speakers-1 ({self.n_speakers - 1})")
    if self.split == "test" and self.n_test_speakers == 0:
      bad("n_test_speakers", ">= 1 for the held-out-speaker split 'test'")
    if not 1 <= self.clauses[0] <= self.clauses[1]:
      bad("clauses", "(min, max) with 1 <= min <= max")
    if self.frame_size < 16 or self.lip_size < 8:
      bad("frame_size", "frame_size >= 16 and lip_size >= 8")
    if self.sample_rate % self.fps:
      bad("sample_rate", f"a multiple of fps={self.fps}")
    if self.num_samples < 1:
      bad("num_samples", ">= 1")
    return self


@dataclasses.dataclass(frozen=True)
class World:
  """What every split of one seed shares."""
  syllables: tuple[str, ...]          # lexicon syllables
  chars: tuple[str, ...]              # all characters
  char_syllable: np.ndarray           # [C] index into syllables
  char_class: np.ndarray              # [C] index into CLASSES
  class_chars: tuple[np.ndarray, ...]  # char ids per class
  char_form: np.ndarray               # [C] manual form id of the char's gloss
  forms: dict    # per manual form: start, end [F,2], arc [F], shapes [F,2], two [F], reps [F]
  speakers: dict                      # per speaker arrays


@functools.lru_cache(maxsize=16)
def build_world(seed: int, lexicon_size: int, max_homophones: int, n_speakers: int,
                shared_sign_fraction: float) -> World:
  """The lexicon, word classes, sign forms and speakers of one seed (cached; do not mutate)."""
  rng = np.random.default_rng([seed, 1_000_003])
  by_initial: dict[str, list[str]] = {i: [] for i in ph.INITIALS}
  for syl in SYLLABLE_CHARS:
    by_initial[ph.split_syllable(syl)[0]].append(syl)
  pools = [list(rng.permutation(by_initial[i])) for i in ph.INITIALS]
  syllables = []
  while len(syllables) < lexicon_size:
    for pool in pools:
      if pool and len(syllables) < lexicon_size:
        syllables.append(str(pool.pop()))
  chars, char_syl, char_cls = [], [], []
  for si, syl in enumerate(syllables):
    m = int(min(max_homophones, rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35])))
    for k, cls in enumerate(rng.permutation(len(CLASSES))[:m]):
      chars.append(SYLLABLE_CHARS[syl][k])
      char_syl.append(si)
      char_cls.append(int(cls))
  char_syl, char_cls = np.array(char_syl, np.int32), np.array(char_cls, np.int32)
  for c in range(len(CLASSES)):  # every class needs a character: take one from the largest class
    if not (char_cls == c).any():
      big = np.bincount(char_cls, minlength=len(CLASSES)).argmax()
      movable = [k for k in np.nonzero(char_cls == big)[0]
                 if not ((char_syl == char_syl[k]) & (char_cls == c)).any()]
      char_cls[movable[0]] = c
  class_chars = tuple(np.nonzero(char_cls == c)[0].astype(np.int32) for c in range(len(CLASSES)))
  # sign forms: pair characters whose syllables look different on the lips
  n = len(chars)
  sig = [ph.syllable_lip_signature(syllables[s]) for s in char_syl]
  form = np.arange(n, dtype=np.int32)
  free = list(rng.permutation(n))
  n_pairs = int(round(shared_sign_fraction * n / 2))
  while n_pairs > 0 and len(free) > 1:
    a = free.pop()
    for j, b in enumerate(free):
      if sig[a] != sig[b]:
        form[b] = form[a]
        free.pop(j)
        n_pairs -= 1
        break
  _, form = np.unique(form, return_inverse=True)
  nf = int(form.max()) + 1
  forms = dict(
      start=np.stack([rng.uniform(-1.2, 1.6, nf), rng.uniform(1.3, 2.6, nf)], -1),
      end=np.stack([rng.uniform(-1.2, 1.6, nf), rng.uniform(1.3, 2.6, nf)], -1),
      arc=rng.uniform(-0.6, 0.6, nf).astype(np.float32),
      shapes=rng.integers(0, 8, (nf, 2)).astype(np.int32),
      two=rng.random(nf) < 0.5,
      reps=rng.integers(0, 3, nf).astype(np.int32))
  palette = np.array([[224, 172, 140], [198, 134, 96], [141, 85, 56], [236, 192, 160],
                      [176, 120, 90], [250, 214, 180]], np.float32)
  p = n_speakers
  face = palette[rng.integers(0, len(palette), p)] + rng.uniform(-12, 12, (p, 3))
  speakers = dict(
      face=np.clip(face, 0, 255).astype(np.float32),
      bg=rng.uniform(30, 220, (p, 3)).astype(np.float32),
      hand=np.clip(face * rng.uniform(0.55, 0.75, (p, 1)), 0, 255).astype(np.float32),
      lip_rgb=np.clip(face * [0.75, 0.45, 0.45] + rng.uniform(-10, 10, (p, 3)), 0, 255),
      skin_gray=rng.uniform(150, 200, p).astype(np.float32),
      lip_gray=rng.uniform(80, 120, p).astype(np.float32),
      f0=np.exp(rng.uniform(np.log(95), np.log(230), p)).astype(np.float32),
      vt=rng.uniform(0.88, 1.15, p).astype(np.float32),
      rate=rng.uniform(5.0, 7.5, p).astype(np.float32),    # mean frames per syllable
      lead=rng.integers(2, 5, p).astype(np.int32),         # cue hand lead (frames)
      move=rng.integers(2, 4, p).astype(np.int32),         # cue transition (frames)
      offset=rng.uniform(-0.04, 0.04, (p, 2)).astype(np.float32))
  forms = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in forms.items()}
  speakers = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in speakers.items()}
  return World(tuple(syllables), tuple(chars), char_syl, char_cls, class_chars,
               form.astype(np.int32), forms, speakers)


class SynthCue(grain_sources.RandomAccessDataSource):
  """grain random-access source: `len(src)`, `src[i]` -> sample dict (see module docstring)."""

  def __init__(self, config: SynthCueConfig | None = None, **overrides):
    cfg = dataclasses.replace(config or SynthCueConfig(), **overrides).validate()
    self.config = cfg
    self.world = build_world(cfg.seed, cfg.lexicon_size, cfg.max_homophones, cfg.n_speakers,
                             float(cfg.shared_sign_fraction))
    n_train = cfg.n_speakers - cfg.n_test_speakers
    self.speakers = (np.arange(n_train, cfg.n_speakers) if cfg.split == "test"
                     else np.arange(n_train))
    from shared.text.pinyin import load_pinyin_vocab
    vocab = {s: i for i, s in enumerate(load_pinyin_vocab())}
    self._syl_vocab_id = np.array([vocab[s] for s in self.world.syllables], np.int32)

  def __len__(self) -> int:
    return self.config.num_samples

  def __repr__(self) -> str:
    return f"SynthCue({self.config})"

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"SynthCue index {index} out of range [0, {len(self)})")
    return make_sample(self, index)

  def char_vocab(self):
    """`shared.text.pinyin.Vocab` of this world's characters: id = char_id + len(specials)."""
    from shared.text.pinyin import Vocab
    return Vocab(self.world.chars)

  def sentence(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Only the words of sample `index` (cheap): char ids [N] in spoken order, sign order [N]."""
    rng = np.random.default_rng([self.config.seed, SPLITS[self.config.split], int(index)])
    rng.choice(self.speakers)
    return _sentence(self.world, rng, self.config.clauses)


def synthcue_source(data, split: str = "train", mode: str | None = None, **overrides) -> SynthCue:
  """Split `split` of the SynthCue that a config's `data` section (or a SynthCueConfig) describes.

  Every SynthCueConfig field the section holds is read (seed, num_samples, lexicon_size, n_speakers,
  n_test_speakers, clauses, frame_size, ...; other keys, e.g. batch buckets, are not SynthCue's and are
  ignored); fields it lacks keep SynthCueConfig's defaults. `mode` and `overrides` (e.g.
  render_video=False) win over the section.
  """
  if not isinstance(data, SynthCueConfig):
    data = SynthCueConfig(**{f.name: tuple(data[f.name]) if isinstance(data[f.name], (list, tuple))
                             else data[f.name]
                             for f in dataclasses.fields(SynthCueConfig) if f.name in data})
  if mode is not None:
    overrides["mode"] = mode
  return SynthCue(data, split=split, **overrides)


def _sentence(world: World, rng: np.random.Generator, clauses: tuple[int, int]):
  """Characters in spoken order and the sign-order permutation."""
  cls_seq, order = [], []
  for _ in range(rng.integers(clauses[0], clauses[1] + 1)):
    base = len(cls_seq)
    if rng.random() < 0.5:          # S V O  -> sign O S V
      cls_seq += [0, 1, 3]
      order += [base + 2, base, base + 1]
    else:                           # S V A O -> sign O A S V
      cls_seq += [0, 1, 2, 3]
      order += [base + 3, base + 2, base, base + 1]
  chars = np.array([rng.choice(world.class_chars[c]) for c in cls_seq], np.int32)
  return chars, np.array(order, np.int32)


def make_sample(src: SynthCue, index: int) -> dict:
  """Sample `index` of `src` (the only place randomness is drawn, in a fixed order)."""
  cfg, world = src.config, src.world
  rng = np.random.default_rng([cfg.seed, SPLITS[cfg.split], index])
  spk = int(rng.choice(src.speakers))
  sp = {k: v[spk] for k, v in world.speakers.items()}
  chars, sign_order = _sentence(world, rng, cfg.clauses)
  n = len(chars)
  syl = world.char_syllable[chars]
  names = [world.syllables[s] for s in syl]
  ini_fin = [ph.split_syllable(s) for s in names]
  # timeline: spoken order, or sign order in sign mode; frames[j] = (start, end) of syllable j
  timeline = sign_order if cfg.mode == "sign" else np.arange(n, dtype=np.int32)
  rate = sp["rate"] * (1.7 if cfg.mode == "sign" else 1.0)
  dur = np.clip(np.round(rng.normal(rate, 0.8, n)), 4, rate + 4).astype(np.int32)
  lead, move = int(sp["lead"]), int(sp["move"])
  ends = int(lead + move + rng.integers(2, 5)) + np.cumsum(dur)
  frames = np.zeros((n, 2), np.int32)
  frames[timeline] = np.stack([ends - dur, ends], -1)
  t_len = int(ends[-1] + rng.integers(3, 6))
  vowel = np.array([s + (0 if ini_fin[j][0] == "" else max(2, int(round(0.3 * (e - s)))))
                    for j, (s, e) in enumerate(frames)], np.int32)
  lip = _lip_track(ini_fin, frames, vowel, t_len)
  centre = np.array([0.5, 0.3], np.float32) + sp["offset"]
  shape_ids = np.array([ph.INITIAL_SHAPE[i] for i, _ in ini_fin], np.int32)
  pos_ids = np.array([ph.FINAL_POSITION[f] for _, f in ini_fin], np.int32)
  arrive = (frames[:, 0] - lead).astype(np.int32)
  hands = np.zeros((t_len, 2, 6, 2), np.float32)      # face units until _pose
  visible = np.zeros((t_len, 2), np.float32)
  if cfg.mode == "cued":
    jitter = rng.normal(0.0, 0.04, (n, 2)).astype(np.float32)
    hands[:, 0] = _cue_hand(shape_ids, pos_ids, jitter, arrive, frames[-1, 1], move, t_len)
    visible[:, 0] = 1.0
  elif cfg.mode == "sign":
    hands[:] = _sign_hands(world, chars, timeline, frames, t_len)
    visible[:] = 1.0
  hands = centre + hands * FACE_UNIT                   # -> frame units
  out = dict(
      text="".join(world.chars[c] for c in chars),
      pinyin=" ".join(names),
      gloss=" ".join(world.chars[chars[j]] for j in sign_order),
      speaker=spk, fps=cfg.fps, sample_rate=cfg.sample_rate, index=index,
      char_ids=chars, syllable_ids=src._syl_vocab_id[syl],
      initial_ids=np.array([ph.INITIALS.index(i) for i, _ in ini_fin], np.int32),
      final_ids=np.array([ph.FINAL_NAMES.index(f) for _, f in ini_fin], np.int32),
      viseme_ids=np.array([ph.INITIAL_VISEME.get(i, -1) for i, _ in ini_fin], np.int32),
      syllable_frames=frames, vowel_frames=vowel,
      syllable_samples=frames * np.int32(cfg.sample_rate // cfg.fps),
      hand_shape=shape_ids, hand_position=pos_ids, hand_frames=arrive,
      gloss_ids=chars[sign_order], gloss_order=sign_order,
      gloss_form=world.char_form[chars[sign_order]],
      mouth_open=lip[:, 0].copy(), lip_params=lip, pose=_pose(lip, hands, visible, centre))
  out["lip"] = rd.mouth_gray(lip, (cfg.lip_size, cfg.lip_size), float(sp["skin_gray"]),
                             float(sp["lip_gray"]))
  if cfg.render_video:
    out["video"] = _video(cfg, sp, lip, hands, visible, centre, FACE_UNIT)
  if cfg.render_audio:
    hop = cfg.sample_rate // cfg.fps
    units = [(ini_fin[j][0], ini_fin[j][1], int(frames[j, 0]) * hop, int(vowel[j]) * hop,
              int(frames[j, 1]) * hop) for j in timeline]
    f0 = float(sp["f0"]) * float(rng.uniform(0.95, 1.05))
    out["audio"] = synthesize(units, t_len * hop, f0=f0, vt_scale=float(sp["vt"]), rng=rng,
                              sr=cfg.sample_rate)
  return out


def _lip_track(ini_fin, frames, vowel, t_len) -> np.ndarray:
  """[T, 3] (opening, width, rounding): consonant then vowel targets, coarticulation-smoothed."""
  lip = np.tile(ph.VISEME_LIPS[0], (t_len, 1))         # rest = lips closed
  for j, (ini, fin) in enumerate(ini_fin):
    s, v, e = int(frames[j, 0]), int(vowel[j]), int(frames[j, 1])
    if v > s:
      lip[s:v] = ph.VISEME_LIPS[ph.INITIAL_VISEME[ini]]
    phones = ph.FINALS[fin]
    which = (np.arange(e - v) * len(phones)) // (e - v)
    lip[v:e] = np.array([ph.PHONES[p][1] for p in phones], np.float32)[which]
  padded = np.concatenate([lip[:1], lip, lip[-1:]])
  return (0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]).astype(np.float32)


def _cue_hand(shape_ids, pos_ids, jitter, arrive, end, move, t_len) -> np.ndarray:
  """Cueing hand keypoints [T, 6, 2] in face units.

  The hand reaches syllable j's position at `arrive[j]` (= lip onset - lead), travelling during the
  `move` frames before; its shape switches half-way through the move; it rests off-face before
  the first and after the last syllable.
  """
  key_t, key_p = [arrive[0] - move], [ph.HAND_REST]
  for j in range(len(arrive)):
    if j:
      key_t.append(arrive[j] - move)
      key_p.append(key_p[-1])
    key_t.append(arrive[j])
    key_p.append(ph.HAND_POSITIONS[pos_ids[j]] + jitter[j])
  key_t += [end, end + move]
  key_p = np.stack(key_p + [key_p[-1], ph.HAND_REST])
  tt = np.arange(t_len, dtype=np.float32)
  anchor = np.stack([np.interp(tt, key_t, key_p[:, d]) for d in range(2)], -1)
  which = np.clip(np.searchsorted(arrive - move // 2, tt, side="right") - 1, 0, len(arrive) - 1)
  return rd.hand_keypoints(anchor, rd.shape_fingers(shape_ids[which]), 1.0)


def _sign_hands(world: World, chars, timeline, frames, t_len) -> np.ndarray:
  """Both hands [T, 2, 6, 2] in face units: each gloss's manual form over its frames."""
  fm = world.forms
  dom = np.tile(np.array([1.3, 2.9], np.float32), (t_len, 1))
  weak = np.tile(np.array([-1.3, 2.9], np.float32), (t_len, 1))
  dshape, wshape = np.zeros(t_len, np.int32), np.zeros(t_len, np.int32)
  for j in timeline:
    f = world.char_form[chars[j]]
    s, e = int(frames[j, 0]), int(frames[j, 1])
    u = (np.arange(e - s, dtype=np.float32) + 0.5) / (e - s)
    d = fm["end"][f] - fm["start"][f]
    perp = np.array([-d[1], d[0]], np.float32) / (np.linalg.norm(d) + 1e-6)
    bend = fm["arc"][f] * np.sin(np.pi * u) + 0.15 * np.sin(2 * np.pi * fm["reps"][f] * u)
    path = fm["start"][f] + d * u[:, None] + perp * bend[:, None]
    dom[s:e] = path
    weak[s:e] = (path * [-1.0, 1.0]) if fm["two"][f] else np.array([-1.0, 2.5], np.float32)
    dshape[s:e], wshape[s:e] = fm["shapes"][f]
  return np.stack([rd.hand_keypoints(dom, rd.shape_fingers(dshape), 1.0),
                   rd.hand_keypoints(weak, rd.shape_fingers(wshape), 1.0, mirror=True)], 1)


def _pose(lip, hands, visible, centre) -> np.ndarray:
  """[T, 20, 3] keypoints (frame units, confidence) from the face, mouth and hand geometry."""
  t_len = lip.shape[0]
  o, w, r = lip[:, 0], lip[:, 1], lip[:, 2]
  a_out = (0.55 + 0.5 * w) * (1.0 - 0.3 * r) * MOUTH_HALF_WIDTH     # as rd.mouth_layers draws it
  b_out = (0.26 + 0.5 * o + 0.12 * r) * MOUTH_HALF_WIDTH
  zero = np.zeros_like(a_out)
  mouth = MOUTH_CENTRE + np.stack([np.stack([-a_out, zero], -1), np.stack([a_out, zero], -1),
                                   np.stack([zero, -b_out], -1), np.stack([zero, b_out], -1)], 1)
  pose = np.zeros((t_len, N_KEYPOINTS, 3), np.float32)
  pose[:, 0:4, :2] = centre + FACE_KP * FACE_UNIT
  pose[:, 4:8, :2] = centre + mouth * FACE_UNIT
  pose[:, 0:8, 2] = 1.0
  pose[:, 8:20, :2] = (hands * visible[:, :, None, None]).reshape(t_len, 12, 2)
  pose[:, 8:20, 2] = np.repeat(visible, 6, axis=1)
  return pose


def _video(cfg, sp, lip, hands, visible, centre, unit) -> np.ndarray:
  size = cfg.frame_size
  base = rd.face_base(size, centre, unit, sp["face"], sp["bg"])
  frames = np.repeat(base[None], lip.shape[0], axis=0)
  # mouth, in a window around its centre
  mc = (centre + MOUTH_CENTRE * unit) * size
  mu = MOUTH_HALF_WIDTH * unit * size          # pixels per mouth unit
  half = int(np.ceil(1.3 * mu)) + 1
  x0, y0 = int(mc[0]) - half, int(mc[1]) - half
  xs = (np.arange(2 * half + 1, dtype=np.float32) + x0 + 0.5 - mc[0]) / mu
  ys = (np.arange(2 * half + 1, dtype=np.float32) + y0 + 0.5 - mc[1]) / mu
  gx, gy = np.meshgrid(xs, ys)
  lips, cav, teeth = (a[..., None] for a in rd.mouth_layers(lip, gx, gy, mu))
  reg = frames[:, y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1].astype(np.float32)
  reg += (sp["lip_rgb"] - reg) * lips
  reg += (np.float32(20.0) - reg) * cav
  reg += (np.float32(230.0) - reg) * teeth
  frames[:, y0:y0 + 2 * half + 1, x0:x0 + 2 * half + 1] = np.clip(reg + 0.5, 0, 255)
  if visible.any():
    for h in range(hands.shape[1]):
      if visible[:, h].any():
        rd.draw_hands(frames, hands[:, h:h + 1], visible[:, h:h + 1], unit, sp["hand"])
  return frames
