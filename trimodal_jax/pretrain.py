"""Stand-in pretraining of the tri-modal tiny config's encoders and LLM on SynthCue (configs/trimodal/pretrain.py).

`python -m trimodal_jax.pretrain --config configs/trimodal/pretrain.py:sign|lip|audio|llm --workdir W`
then `python -m trimodal_jax.pretrain_export --workdir W --out DIR` and `--config.init.<name>.path=DIR` on
configs/trimodal/tiny.py. The paper's parts arrive pretrained; each stand-in here plays the same role, on the
train split only, over the very module configs of the tiny model section (TriModalConfig from cfg.model):

  sign   isolated gloss classification (the ISLR-pretrained Video Swin-T). A `sign` clip's glosses, sign order:
         gloss k is spoken syllable gloss_order[k], its frames syllable_frames[gloss_order[k]] = [start, end).
         Each gloss -> frames [L = data.gloss_frames] (sign_frames' block means; a longer gloss centre-cut, a
         shorter one clamped to its last frame) -> Swin clips of model.sign.clip_window frames every
         data.gloss_clip_stride frames (clip_index, indices clamped to the gloss's last frame as TriModal._sign;
         stride 1 = TriModal._sign's one clip per frame, 16x the cost: the default tiles the gloss with
         non-overlapping clips) pooled -> mean over the clips [Ds] -> head Linear(Ds, C),
         C = the world's characters (a gloss IS a character). The training clips come from
         data.sign_pretrain_signers signers of the same language (isolated_sign_source; 0 = the tiny world's
         six training signers), optionally with one random colour transform and one shift of up to
         data.sign_shift pixels per clip (data.sign_color_jitter; shared.data.augment's color_jitter,
         random_translate; gloss spans stay exact). Why other signers: SynthCue signers differ in skin, hand and
         background colour and in where they stand, and on six signers the stand-in learns them (held-out
         accuracy 7 % at 88 % training accuracy; 50 % with the held-out signers recoloured as training ones,
         87 % with their colours, place and rate); on 32 it reaches 69 % (configs/trimodal/pretrain.py). Glosses sharing a manual form
         (world.char_form) differ only in mouthing: indistinguishable from the hands alone, so the eval reports
         accuracy on unique-form glosses, on shared-form ones, overall and at the form level.
  lip    VSR-CTC (AV-HuBERT's role: a lip representation): `speech` mouth crops, random crop data.crop + flip
         (p 0.5) in training, centre crop in eval -> AV-HuBERT video path (padding mask; BatchNorm on batch
         statistics in training, its running statistics updated: Task.mutable) -> head Linear(Dv, C + 1) -> CTC.
  audio  ASR-CTC (Whisper's role): `speech` audio -> data.clip_mels (4 log-mel frames per video frame) ->
         Whisper encoder (padded keys masked) -> head Linear(Da, C + 1) -> CTC.
  llm    next-token LM on SynthCue sentences (LLaMA-3.2-3B's role): [bos, data.encode_target(tok, text)] (the
         sentence's tokens + eos; data.tokenizer(cfg)), the LLM without LoRA (tied embeddings).

CTC labels: world char id + 1 (0 = blank). Losses are SUMMED (the trainer's convention): sign = CE over the real
glosses (weight = their count), lip / audio = CTC NLL over utterances (weight = label characters), llm = CE over
the target tokens (weight = their count).

Batches (host numpy, fixed shapes but T of lip / audio):
  sign   clips [B, G, L, s, s, 3] uint8, lengths [B, G] int32 (0 = no gloss), labels [B, G] int32, mask [B, G]
         float32; G = 4 * data.clauses[1] (the most glosses a sentence has)
  lip    x [B, T, c, c] uint8, x_len [B] (frames);  audio  x [B, 4T, 80] float32, x_len [B] (mel frames);
         both: labels [B, Lc] int32 (char + 1, 0 after), label_len [B]; T = a data.frame_buckets entry,
         Lc = 4 * data.clauses[1]
  llm    ids [B, Lt] int32 (bos, tokens, eos, pad after), length [B]; Lt = the smallest data.label_buckets entry
         holding 2 + 4 * data.clauses[1]

Held-out metric (Task.eval_fn, data.eval_split = "test": held-out speakers; the first data.eval_samples clips,
or 4x as many sentences for the LM): sign `acc`, `acc_unique_form`, `acc_shared_form`, `form_acc`; lip / audio
greedy-CTC `cer` (characters) and `ser` (syllables: homophones merged, what lips / sound alone can tell);
llm `ppl` (exp of the mean token NLL, eos included) and `oracle_ppl` (the grammar's own: uniform over each
word class, S V O | S V A O at 1/2 each).

Param trees (prefixes are TriModal's, so the export is a subtree): sign_encoder/, lip_encoder/ (+
batch_stats/lip_encoder/resnet/...), audio_encoder/, llm/; heads under head/ (not exported).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from shared import config as config_lib
from shared import train as train_lib
from shared.data import augment
from shared.data.pipeline import bucket_length, make_iterator
from shared.data.synthcue import CLASSES, synthcue_source
from shared.errors import ConfigError
from shared.mesh import local_batch_size
from shared.models.avhubert import AVHubertVideo, normalise
from shared.models.llm import LLM
from shared.models.swin3d import SwinTransformer3d, clip_index
from shared.models.whisper import WhisperEncoder
from shared.nn.linear import Dense
from trimodal_jax import data as data_lib
from trimodal_jax.model import TriModalConfig
from trimodal_jax.task import normalise_sign

NAMES = ("sign", "lip", "audio", "llm")
PREFIX = {"sign": "sign_encoder", "lip": "lip_encoder", "audio": "audio_encoder", "llm": "llm"}
EVAL_BATCH = 8


# ----------------------------------------------------------------------------- config views

def model_config(cfg) -> TriModalConfig:
  """The tiny model section as TriModalConfig (strict)."""
  return config_lib.from_section(TriModalConfig, cfg.model, "model")


def world(cfg):
  from shared.data.synthcue import build_world
  d = cfg.data
  return build_world(int(d.seed), int(d.lexicon_size), int(d.max_homophones), int(d.n_speakers),
                     float(d.shared_sign_fraction))


def max_glosses(cfg) -> int:
  return 4 * int(cfg.data.clauses[1])      # S V A O per clause at most


def lm_length(cfg) -> int:
  return bucket_length(2 + max_glosses(cfg), [int(x) for x in cfg.data.label_buckets])


def check_config(cfg):
  name = cfg.get("pretrain")
  if name not in NAMES:
    raise ConfigError(f"pretrain={name!r}: expected one of {NAMES}")
  d = cfg.data
  if d.source != "synthcue":
    raise ConfigError(f"data.source={d.source!r}: the stand-in pretraining reads SynthCue only")
  if int(d.crop) > int(d.lip_size):
    raise ConfigError(f"data.crop={d.crop} is larger than data.lip_size={d.lip_size}")
  if int(d.sign_frame_size) % int(d.sign_size):
    raise ConfigError(f"data.sign_frame_size={d.sign_frame_size} is not a multiple of data.sign_size={d.sign_size}")
  if int(d.gloss_frames) < 1 or int(d.gloss_clip_stride) < 1:
    raise ConfigError(f"data.gloss_frames={d.gloss_frames}, data.gloss_clip_stride={d.gloss_clip_stride}: "
                      "expected >= 1 each")
  if int(d.eval_samples) < 0:
    raise ConfigError(f"data.eval_samples={d.eval_samples}: expected >= 0")
  m = model_config(cfg)
  if name == "audio" and data_lib.MELS_PER_FRAME * max(d.frame_buckets) > 2 * m.audio.max_source_positions:
    raise ConfigError(f"data.frame_buckets up to {max(d.frame_buckets)} frames exceed "
                      f"model.audio.max_source_positions={m.audio.max_source_positions} (x2 mel frames)")
  if name == "llm":
    data_lib.tokenizer(cfg)          # vocabulary vs model.llm.vocab_size
    if lm_length(cfg) > m.llm.max_position_embeddings:
      raise ConfigError(f"LM sequences of {lm_length(cfg)} tokens exceed model.llm.max_position_embeddings")


# ----------------------------------------------------------------------------- modules

def _valid(lengths, t):
  return jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]


class GlossClassifier(nn.Module):
  """clips [N, L, H, W, 3] normalised, lengths [N] -> logits [N, C] (module docstring, sign)."""
  config: TriModalConfig
  num_classes: int
  clip_stride: int = 1               # 1: every frame's clip (TriModal._sign); clip_window: the gloss tiled

  def setup(self):
    self.sign_encoder = SwinTransformer3d(self.config.sign)
    self.head = Dense(self.num_classes, True, ("embed", "vocab"), name="head")

  def features(self, clips, lengths, train: bool = False):
    """-> [N, Ds]: Swin clips every clip_stride frames (indices clamped to each gloss's last frame, as
    TriModal._sign) mean-pooled over the gloss."""
    c = self.config.sign
    n, t = clips.shape[:2]
    stride = int(self.clip_stride)
    lengths = jnp.maximum(jnp.asarray(lengths, jnp.int32), 1)
    idx = clip_index(t, c.clip_window, stride, c.clip_padding)                    # [T', W] static
    m, win = idx.shape
    idx = jnp.minimum(jnp.asarray(idx)[None], (lengths - 1)[:, None, None]).reshape(n, m * win)
    x = jax.vmap(lambda v, i: jnp.take(v, i, axis=0))(clips, idx).reshape(n * m, win, *clips.shape[2:])
    f = self.sign_encoder.pooled(x, deterministic=not train).reshape(n, m, -1).astype(jnp.float32)
    if c.clip_padding == "same":
      out = -(-lengths // stride)
    else:
      out = jnp.maximum((lengths - c.clip_window) // stride + 1, 1)
    w = _valid(out, m).astype(jnp.float32)[..., None]
    return jnp.sum(f * w, axis=1) / jnp.sum(w, axis=1)

  def __call__(self, clips, lengths, train: bool = False):
    return self.head(self.features(clips, lengths, train)).astype(jnp.float32)


class LipCTC(nn.Module):
  """x [B, T, H, W] uint8 mouth crops, x_len [B] -> (logits [B, T, C + 1], lengths [B])."""
  config: TriModalConfig
  vocab: int

  def setup(self):
    self.lip_encoder = AVHubertVideo(self.config.lip)
    self.head = Dense(self.vocab, True, ("embed", "vocab"), name="head")

  def __call__(self, x, x_len, train: bool = False):
    v = normalise(x) if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(jnp.float32)
    pad = jnp.logical_not(_valid(x_len, x.shape[1]))
    f = self.lip_encoder(v, pad, train=train, deterministic=not train)
    return self.head(f).astype(jnp.float32), jnp.asarray(x_len, jnp.int32)


class AudioCTC(nn.Module):
  """x [B, Ta, 80] log-mels, x_len [B] mel frames -> (logits [B, ceil(Ta / 2), C + 1], ceil(x_len / 2))."""
  config: TriModalConfig
  vocab: int

  def setup(self):
    self.audio_encoder = WhisperEncoder(self.config.audio)
    self.head = Dense(self.vocab, True, ("embed", "vocab"), name="head")

  def __call__(self, x, x_len, train: bool = False):
    out = (jnp.asarray(x_len, jnp.int32) + 1) // 2
    f = self.audio_encoder(x, attention_mask=_valid(out, WhisperEncoder.output_length(x.shape[1])),
                           deterministic=not train)
    return self.head(f).astype(jnp.float32), out


class SentenceLM(nn.Module):
  """ids [B, L] -> logits [B, L, V]: the tiny LLM without LoRA."""
  config: TriModalConfig

  def setup(self):
    self.llm = LLM(self.config.llm.replace(lora=None))

  def __call__(self, ids, length, train: bool = False):
    return self.llm(jnp.asarray(ids, jnp.int32), attention_mask=_valid(length, ids.shape[1]),
                    deterministic=not train)


def make_model(cfg) -> nn.Module:
  name, m = cfg.pretrain, model_config(cfg)
  n_chars = len(world(cfg).chars)
  return {"sign": lambda: GlossClassifier(m, n_chars, int(cfg.data.gloss_clip_stride)),
          "lip": lambda: LipCTC(m, n_chars + 1), "audio": lambda: AudioCTC(m, n_chars + 1), "llm": lambda: SentenceLM(m)}[name]()


# ----------------------------------------------------------------------------- data

def source(cfg, split: str):
  """The SynthCue split each stand-in reads (data.sources' settings; lip skips the audio it never reads)."""
  d, name = cfg.data, cfg.pretrain
  if name == "sign" and split == "train" and int(d.get("sign_pretrain_signers", 0)):
    return isolated_sign_source(cfg)
  if name == "sign":
    return data_lib.sources(d, split)["sign"]
  return synthcue_source(d, split, "speech", render_video=False, render_audio=name == "audio")


def isolated_sign_source(cfg):
  """The sign stand-in's training clips from data.sign_pretrain_signers signers of the same language: the tiny
  world's seed, lexicon and manual forms, its own signers (all of them train; none is one of the tiny world's
  held-out signers), as the paper's Swin learns isolated signs from other signers than How2Sign's."""
  d = cfg.data
  src = synthcue_source(d, "train", "sign", frame_size=int(d.sign_frame_size), render_audio=False,
                        n_speakers=int(d.sign_pretrain_signers), n_test_speakers=0)
  w, own = src.world, world(cfg)
  if w.chars != own.chars or not np.array_equal(w.char_form, own.char_form) or \
      any(not np.array_equal(w.forms[k], own.forms[k]) for k in own.forms):
    raise ConfigError(f"data.sign_pretrain_signers={d.sign_pretrain_signers}: that SynthCue world's lexicon or "
                      "manual forms differ from data.n_speakers's (shared.data.synthcue.build_world must draw the "
                      "speakers after the language)")
  return src


def gloss_example(index, rng, *, cfg, src) -> dict:
  """Sign clip `index` -> its glosses (module docstring, sign batch without B)."""
  d = cfg.data
  s = src[int(index)]
  video = data_lib.sign_frames(np.asarray(s["video"], np.uint8), int(d.sign_size))
  if rng is not None:                        # training: one colour transform and one shift per clip
    if d.sign_color_jitter:
      video = augment.color_jitter(video, rng)
    video = augment.random_translate(video, rng, int(d.sign_shift))
  g, length, size = max_glosses(cfg), int(d.gloss_frames), int(d.sign_size)
  spans = np.asarray(s["syllable_frames"])[np.asarray(s["gloss_order"])]          # [G, 2] sign order
  out = {"clips": np.zeros((g, length, size, size, 3), np.uint8), "lengths": np.zeros((g,), np.int32),
         "labels": np.zeros((g,), np.int32), "mask": np.zeros((g,), np.float32)}
  for k, ((a, b), gid) in enumerate(zip(spans, np.asarray(s["gloss_ids"]))):
    n = int(b) - int(a)
    a = int(a) + max(0, (n - length) // 2)
    n = min(n, length)
    idx = a + np.minimum(np.arange(length), n - 1)
    out["clips"][k] = video[idx]
    out["lengths"][k], out["labels"][k], out["mask"][k] = n, int(gid), 1.0
  return out


def speech_example(index, rng, *, cfg, src) -> dict | None:
  """Speech clip `index` -> {x, n_frames, labels} (lip: crop (+ flip); audio: log-mels); None when longer than
  the largest frame bucket."""
  d = cfg.data
  s = src[int(index)]
  lip = np.asarray(s["lip"])
  t = int(lip.shape[0])
  labels = np.asarray(s["char_ids"], np.int32) + 1
  if t > max(d.frame_buckets) or len(labels) > max_glosses(cfg):
    return None
  if cfg.pretrain == "lip":
    c = int(d.crop)
    if rng is None:
      x = augment.center_crop(lip, c)
    else:
      x = augment.random_crop(lip, rng, c)
      if d.flip:
        x = augment.horizontal_flip(x, rng)
    x = np.ascontiguousarray(x, np.uint8)
  else:
    x = data_lib.clip_mels(np.asarray(s["audio"], np.float32), t)
  return {"x": x, "n_frames": t, "labels": labels}


def speech_collate(examples, *, cfg) -> dict:
  d = cfg.data
  t = bucket_length(max(e["n_frames"] for e in examples), [int(x) for x in d.frame_buckets])
  per = 1 if cfg.pretrain == "lip" else data_lib.MELS_PER_FRAME
  x = np.zeros((len(examples), per * t) + examples[0]["x"].shape[1:], examples[0]["x"].dtype)
  lab = np.zeros((len(examples), max_glosses(cfg)), np.int32)
  for i, e in enumerate(examples):
    x[i, :len(e["x"])] = e["x"]
    lab[i, :len(e["labels"])] = e["labels"]
  return {"x": x, "x_len": np.asarray([per * e["n_frames"] for e in examples], np.int32), "labels": lab,
          "label_len": np.asarray([len(e["labels"]) for e in examples], np.int32)}


def sentence_example(index, rng, *, cfg, src, tok) -> dict:
  """Sentence `index` (words only: SynthCue.sentence, no rendering) -> {ids [Lt], length}."""
  del rng
  chars, _ = src.sentence(int(index))
  text = "".join(src.world.chars[c] for c in chars)
  ids = np.concatenate([[int(tok.bos_token_id)], data_lib.encode_target(tok, text)]).astype(np.int32)
  lt = lm_length(cfg)
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  out = np.full((lt,), pad, np.int32)
  out[:len(ids)] = ids
  return {"ids": out, "length": np.int32(len(ids))}


def stack(examples) -> dict:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def example_fn(cfg, split: str):
  """-> (example(index, rng) -> example | None, collate, number of indices) for `split`."""
  name = cfg.pretrain
  if name == "llm":
    src = synthcue_source(cfg.data, split, "speech", render_video=False, render_audio=False)
    tok = data_lib.tokenizer(cfg)
    return functools.partial(sentence_example, cfg=cfg, src=src, tok=tok), stack, len(src)
  src = source(cfg, split)
  if name == "sign":
    return functools.partial(gloss_example, cfg=cfg, src=src), stack, len(src)
  return (functools.partial(speech_example, cfg=cfg, src=src), functools.partial(speech_collate, cfg=cfg),
          len(src))


def train_iterator(cfg, *, batch_size: int, seed: int):
  example, collate, n = example_fn(cfg, "train")
  return make_iterator(data_lib.Indices(n), collate, batch_size=batch_size, seed=seed, random_map_fn=example,
                       skip_none=True)


def eval_batches(cfg, n: int, split: str | None = None) -> list[dict]:
  """The first n usable examples of the eval split, unaugmented, in batches of EVAL_BATCH (the last may be
  smaller)."""
  example, collate, total = example_fn(cfg, split or str(cfg.data.eval_split))
  ex, i = [], 0
  while len(ex) < n and i < total:
    e = example(i, None)
    if e is not None:
      ex.append(e)
    i += 1
  return [collate(ex[j:j + EVAL_BATCH]) for j in range(0, len(ex), EVAL_BATCH)]


# ----------------------------------------------------------------------------- losses

def ctc_sums(logits, lengths, labels, label_len):
  """-> (summed CTC NLL, number of label characters) float32."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  frame_pad = 1.0 - _valid(lengths, logits.shape[1]).astype(jnp.float32)
  label_pad = 1.0 - _valid(label_len, labels.shape[1]).astype(jnp.float32)
  per = optax.ctc_loss(lp, frame_pad, jnp.asarray(labels, jnp.int32), label_pad, blank_id=0)
  return jnp.sum(per), jnp.sum(jnp.asarray(label_len, jnp.float32))


def make_loss_fn(cfg, model: nn.Module):
  name = cfg.pretrain
  if name == "sign":
    def loss_fn(params, batch, rng):
      b, g = batch["labels"].shape
      clips = normalise_sign(batch["clips"]).reshape(b * g, *batch["clips"].shape[2:])
      train = rng is not None
      logits = model.apply({"params": params}, clips, batch["lengths"].reshape(-1), train=train,
                           rngs={"dropout": rng} if train else None)
      labels, mask = jnp.asarray(batch["labels"]).reshape(-1), jnp.asarray(batch["mask"]).reshape(-1)
      nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
      hit = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
      weight = jnp.sum(mask)
      return jnp.sum(nll * mask), {"weight": weight, "gloss_acc": jnp.sum(hit * mask) / jnp.maximum(weight, 1.0)}
    return loss_fn
  if name == "lip":
    def loss_fn(params, batch, rng, model_state):
      train = rng is not None
      variables = {"params": params, **model_state}
      if train:
        (logits, n), new_state = model.apply(variables, batch["x"], batch["x_len"], train=True,
                                             rngs={"dropout": rng}, mutable=list(model_state))
      else:
        (logits, n), new_state = model.apply(variables, batch["x"], batch["x_len"]), model_state
      total, count = ctc_sums(logits, n, batch["labels"], batch["label_len"])
      return total, {"weight": count}, new_state
    return loss_fn
  if name == "audio":
    def loss_fn(params, batch, rng):
      train = rng is not None
      logits, n = model.apply({"params": params}, batch["x"], batch["x_len"], train=train,
                              rngs={"dropout": rng} if train else None)
      total, count = ctc_sums(logits, n, batch["labels"], batch["label_len"])
      return total, {"weight": count}
    return loss_fn

  def loss_fn(params, batch, rng):
    train = rng is not None
    ids = jnp.asarray(batch["ids"], jnp.int32)
    logits = model.apply({"params": params}, ids, batch["length"], train=train,
                         rngs={"dropout": rng} if train else None)
    lg, tgt = logits[:, :-1], ids[:, 1:]
    mask = _valid(jnp.asarray(batch["length"]) - 1, tgt.shape[1]).astype(jnp.float32)
    nll = jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, tgt[..., None], -1)[..., 0]
    hit = (jnp.argmax(lg, -1) == tgt).astype(jnp.float32)
    weight = jnp.sum(mask)
    return jnp.sum(nll * mask), {"weight": weight, "token_acc": jnp.sum(hit * mask) / jnp.maximum(weight, 1.0)}
  return loss_fn


# ----------------------------------------------------------------------------- held-out metrics

def _syllable_rep(w) -> np.ndarray:
  """[C] char id -> the first char id of its syllable (homophones merged)."""
  first = {}
  return np.asarray([first.setdefault(int(s), c) for c, s in enumerate(w.char_syllable)], np.int32)


def oracle_ppl(cfg, batches) -> float:
  """The grammar's own perplexity on the batches' sentences: each word uniform over its class's characters,
  the clause shape (S V O | S V A O) 1/2 each (revealed by the third word's class), eos certain."""
  w = world(cfg)
  tok = data_lib.tokenizer(cfg)
  char_of = {int(tok.convert_tokens_to_ids(ch)): i for i, ch in enumerate(w.chars)}
  n_cls = [len(x) for x in w.class_chars]
  nll, count = 0.0, 0
  for b in batches:
    for ids, n in zip(b["ids"], b["length"]):
      body = [char_of[int(t)] for t in ids[1:int(n) - 1]]
      count += len(body) + 1
      pos = 0
      while pos < len(body):
        cls = [int(w.char_class[c]) for c in body[pos:pos + 4]]
        size = 4 if len(cls) >= 3 and cls[2] == CLASSES.index("A") else 3
        nll += sum(math.log(n_cls[k]) for k in cls[:size]) + math.log(2.0)
        pos += size
  return float(math.exp(nll / max(count, 1)))


def make_eval_fn(cfg, model: nn.Module):
  """Task.eval_fn: the held-out metric (module docstring) on the first data.eval_samples examples of
  data.eval_split; batches built on first use and kept."""
  name = cfg.pretrain
  n = int(cfg.data.eval_samples) * (4 if name == "llm" else 1)
  held: list = []
  w = world(cfg)
  loss_fn = make_loss_fn(cfg, model)

  @jax.jit
  def forward(variables, batch):
    if name == "sign":
      b, g = batch["labels"].shape
      clips = normalise_sign(batch["clips"]).reshape(b * g, *batch["clips"].shape[2:])
      return jnp.argmax(model.apply(variables, clips, batch["lengths"].reshape(-1)), -1).reshape(b, g)
    if name in ("lip", "audio"):
      from shared.decoding.ctc import ctc_greedy
      logits, lengths = model.apply(variables, batch["x"], batch["x_len"])
      return ctc_greedy(jax.nn.log_softmax(logits, -1), lengths, blank=0)
    params = variables["params"]
    total, aux = loss_fn(params, batch, None)
    return total, aux["weight"]

  def eval_fn(variables, step=None) -> dict:
    del step
    if not held:
      held.extend(eval_batches(cfg, n))
    if name == "sign":
      pred, lab, msk = [], [], []
      for b in held:
        pred.append(np.asarray(forward(variables, b)).reshape(-1))
        lab.append(b["labels"].reshape(-1))
        msk.append(b["mask"].reshape(-1) > 0)
      p, y = np.concatenate(pred)[np.concatenate(msk)], np.concatenate(lab)[np.concatenate(msk)]
      form = np.asarray(w.char_form)
      unique = np.bincount(form, minlength=form.max() + 1)[form[y]] == 1
      return {"acc": float(np.mean(p == y)), "acc_unique_form": float(np.mean(p[unique] == y[unique])),
              "acc_shared_form": float(np.mean(p[~unique] == y[~unique])) if (~unique).any() else float("nan"),
              "form_acc": float(np.mean(form[p] == form[y])), "n_glosses": float(len(y)),
              "n_unique_form": float(unique.sum())}
    if name in ("lip", "audio"):
      from shared.metrics.text import char_errors
      rep = _syllable_rep(w)
      refs, hyps, srefs, shyps = [], [], [], []
      for b in held:
        toks, lens = (np.asarray(a) for a in forward(variables, b))
        for i in range(len(lens)):
          hyp = [int(t) - 1 for t in toks[i, :int(lens[i])]]
          ref = [int(t) - 1 for t in b["labels"][i, :int(b["label_len"][i])]]
          refs.append("".join(w.chars[c] for c in ref))
          hyps.append("".join(w.chars[c] for c in hyp))
          srefs.append("".join(w.chars[rep[c]] for c in ref))
          shyps.append("".join(w.chars[rep[c]] for c in hyp))
      return {"cer": float(char_errors(refs, hyps).rate), "ser": float(char_errors(srefs, shyps).rate),
              "n_utterances": float(len(refs))}
    total = count = 0.0
    for b in held:
      s, c = forward(variables, b)
      total, count = total + float(s), count + float(c)
    return {"ppl": float(math.exp(total / max(count, 1.0))), "oracle_ppl": oracle_ppl(cfg, held),
            "n_tokens": count}

  return eval_fn


# ----------------------------------------------------------------------------- the task

def example_inputs(cfg, batch) -> tuple:
  """The model's positional inputs for a (host) batch."""
  name = cfg.pretrain
  if name == "sign":
    b, g = batch["labels"].shape
    return normalise_sign(batch["clips"]).reshape(b * g, *batch["clips"].shape[2:]), \
        jnp.asarray(batch["lengths"]).reshape(-1)
  if name in ("lip", "audio"):
    return jnp.asarray(batch["x"]), jnp.asarray(batch["x_len"])
  return jnp.asarray(batch["ids"]), jnp.asarray(batch["length"])


def make_task(cfg, model: nn.Module | None = None) -> train_lib.Task:
  check_config(cfg)
  model = model or make_model(cfg)
  per_host = local_batch_size(cfg.trainer.batch_size)
  mutable = ("batch_stats",) if cfg.pretrain == "lip" else ()

  def init_params(rng, batch):
    r_p, r_d = jax.random.split(rng)
    out = model.init({"params": r_p, "dropout": r_d}, *example_inputs(cfg, batch), train=False)
    return out if mutable else out["params"]

  def make_iter():
    return train_iterator(cfg, batch_size=per_host, seed=int(cfg.trainer.seed))

  task = train_lib.Task(init_params=init_params, loss_fn=make_loss_fn(cfg, model), make_train_iter=make_iter,
                        mutable=mutable, check_config=functools.partial(check_config, cfg))
  task.eval_fn = make_eval_fn(cfg, model) if int(cfg.data.eval_samples) > 0 else None
  task.model = model
  return task


def evaluate(cfg, variables) -> dict:
  """The held-out metric (make_eval_fn) of trained variables {"params": ..., **model_state}."""
  return make_eval_fn(cfg, make_model(cfg))(variables)


def main():
  from shared import cli
  cli.train_main(make_task)


if __name__ == "__main__":
  from shared import cli
  cli.define_flags()
  cli.run(main)
