"""VALLR-Pin stage I task: batch -> loss (paper eqs. 10-12), and decoding (N-best characters, greedy pinyin).

Loss per utterance (ESPnet / FunASR convention: CTC and CE summed over the utterance's labels, averaged over
utterances; the trainer divides the batch sum by aux["weight"] = the number of utterances):
  L_char = λ_ctc CTC(char) + (1 − λ_ctc) CE(char decoder, teacher forced, label smoothing ε)
  L_py   = λ_ctc CTC(pinyin) + (1 − λ_ctc) CE(pinyin decoder)
  L      = α L_char + (1 − α) L_py          (char-only model: α = 1)
Teacher forcing: decoder input <bos> y_1 .. y_n, target y_1 .. y_n <eos> (CE over n + 1 positions).
Label smoothing puts 1 − ε on the target and ε / (V − 1) on every other token (ESPnet's LabelSmoothingLoss up
to its constant entropy term).

Decoding (`Recognizer`): one encoder pass; characters by joint attention + CTC beam search (N-best with
scores; `decode.ctc_weight` 0 = attention only) through the causal SANM decoder's FSMN cache; pinyin greedy
through the Transformer decoder's KV cache; CTC greedy characters beside them.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from shared import train as train_lib
from shared.config import from_section
from shared.decoding import search
from shared.decoding.ctc import ctc_greedy
from shared.errors import ConfigError
from shared.mesh import local_batch_size
from shared.models.mbart import MBart, MBartGenerator
from shared.models.sanm import SANMDecoder, SANMDecoderSearch
from vsr_pin_jax import data as data_lib
from vsr_pin_jax.model import VallrPin, VallrPinConfig


def model_config(cfg, vocab: data_lib.Vocabs | None = None) -> VallrPinConfig:
  """The model a config builds; vocabulary sizes come from the data (SynthCue world / char_units file)."""
  vocab = vocab or data_lib.vocabs(cfg.data)
  nc, npy = len(vocab.chars), len(vocab.pinyin)
  return from_section(VallrPinConfig, cfg.model, char_vocab=nc, pinyin_vocab=npy, decoder=dict(vocab_size=nc))


def check_config(cfg):
  lo = cfg.loss
  if not 0.0 <= lo.ctc_weight <= 1.0:
    raise ConfigError(f"loss.ctc_weight={lo.ctc_weight}: expected 0..1 (λ_ctc)")
  if not 0.0 <= lo.alpha <= 1.0:
    raise ConfigError(f"loss.alpha={lo.alpha}: expected 0..1 (weight of the character loss)")
  if not cfg.model.pinyin and lo.alpha != 1.0:
    raise ConfigError(f"model.pinyin=False (char-only) needs loss.alpha=1.0, got {lo.alpha}")
  if not 0.0 <= lo.label_smoothing < 1.0:
    raise ConfigError(f"loss.label_smoothing={lo.label_smoothing}: expected 0 <= ε < 1")
  d = cfg.decode
  if d.beam < 1 or d.nbest < 1 or d.nbest > d.beam:
    raise ConfigError(f"decode.beam={d.beam}, decode.nbest={d.nbest}: expected 1 <= nbest <= beam")
  if not 0.0 <= d.ctc_weight < 1.0:
    raise ConfigError(f"decode.ctc_weight={d.ctc_weight}: expected 0 <= w < 1")


def teacher_forcing(labels, mask, bos: int, eos: int):
  """labels [B, L] int32 (padded), mask [B, L] -> (inputs [B, L+1] = <bos> y, targets [B, L+1] = y <eos>,
  target mask [B, L+1])."""
  b, l = labels.shape
  lengths = jnp.sum(mask.astype(jnp.int32), axis=1)
  inputs = jnp.concatenate([jnp.full((b, 1), bos, labels.dtype), jnp.where(mask, labels, 0)], axis=1)
  pos = jnp.arange(l + 1)[None, :]
  targets = jnp.concatenate([jnp.where(mask, labels, 0), jnp.zeros((b, 1), labels.dtype)], axis=1)
  targets = jnp.where(pos == lengths[:, None], eos, targets)
  return inputs, targets, pos <= lengths[:, None]


def smoothed_ce(logits, targets, mask, eps: float):
  """Per-utterance summed CE [B] with label smoothing eps (float32)."""
  v = logits.shape[-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  onehot = jax.nn.one_hot(targets, v, dtype=jnp.float32)
  dist = onehot * (1.0 - eps) + (1.0 - onehot) * (eps / (v - 1))
  tok = -jnp.sum(dist * logp, axis=-1)
  return jnp.sum(tok * mask, axis=1)


def ctc_per_utterance(logp, frame_mask, labels, label_mask):
  """CTC negative log-likelihood per utterance [B] (float32)."""
  return optax.ctc_loss(logp, 1.0 - frame_mask.astype(jnp.float32), labels,
                        1.0 - label_mask.astype(jnp.float32), blank_id=0)


def make_loss_fn(model: VallrPin, cfg, vocab: data_lib.Vocabs):
  lo, pinyin = cfg.loss, model.config.pinyin
  lam, alpha, eps = float(lo.ctc_weight), float(lo.alpha), float(lo.label_smoothing)

  def loss_fn(params, batch, rng, model_state):
    del rng
    c_in, c_tgt, c_m = teacher_forcing(batch["chars"], batch["chars_mask"], vocab.chars.bos_id, vocab.chars.eos_id)
    kw = {}
    if pinyin:
      p_in, p_tgt, p_m = teacher_forcing(batch["pinyin"], batch["pinyin_mask"], vocab.pinyin.bos_id,
                                         vocab.pinyin.eos_id)
      kw = dict(pinyin_in=p_in, pinyin_mask=p_m)
    out, new_state = model.apply({"params": params, **model_state}, batch["lips"], batch["lips_lengths"], c_in,
                                 c_m, train=True, mutable=list(model_state), **kw)
    ctc_c = ctc_per_utterance(out["char_ctc"], out["mask"], batch["chars"], batch["chars_mask"])
    ce_c = smoothed_ce(out["char_logits"], c_tgt, c_m, eps)
    per_utt = alpha * (lam * ctc_c + (1 - lam) * ce_c)
    n_tok = jnp.sum(c_m.astype(jnp.float32))
    acc = jnp.sum((jnp.argmax(out["char_logits"], -1) == c_tgt) * c_m) / n_tok
    aux = {"char_ctc": jnp.mean(ctc_c), "char_ce_per_token": jnp.sum(ce_c) / n_tok, "char_acc": acc}
    if pinyin:
      ctc_p = ctc_per_utterance(out["pinyin_ctc"], out["mask"], batch["pinyin"], batch["pinyin_mask"])
      ce_p = smoothed_ce(out["pinyin_logits"], p_tgt, p_m, eps)
      per_utt = per_utt + (1 - alpha) * (lam * ctc_p + (1 - lam) * ce_p)
      p_tok = jnp.sum(p_m.astype(jnp.float32))
      aux.update(pinyin_ctc=jnp.mean(ctc_p), pinyin_ce_per_token=jnp.sum(ce_p) / p_tok,
                 pinyin_acc=jnp.sum((jnp.argmax(out["pinyin_logits"], -1) == p_tgt) * p_m) / p_tok)
    weight = jnp.asarray(per_utt.shape[0], jnp.float32)
    return jnp.sum(per_utt), {"weight": weight, **aux}, new_state

  return loss_fn


@dataclasses.dataclass
class Hypotheses:
  """Decoded batch (host numpy): nbest [B, K] str (best first), scores [B, K], pinyin [B] str, ctc [B] str."""
  nbest: list
  scores: np.ndarray
  pinyin: list
  ctc: list


class Recognizer:
  """Jitted decoding for one VallrPin: `recognize(variables, batch) -> Hypotheses`."""

  def __init__(self, model: VallrPin, cfg, vocab: data_lib.Vocabs):
    self.model, self.vocab, self.d = model, vocab, cfg.decode
    self.max_chars = int(max(cfg.data.label_buckets)) + 1
    self._run = jax.jit(self._decode)

  def _decode(self, variables, lips, lengths):
    m, c, d, v = self.model, self.model.config, self.d, self.vocab
    h, mask = m.apply(variables, lips, lengths, method=VallrPin.encode)
    p = variables["params"]
    ctc_logp = m.apply(variables, h, method=VallrPin.char_ctc)
    dec = SANMDecoderSearch(SANMDecoder(c.decoder))
    logits, cache = dec.prefill(p["decoder"], h, mask, sos_id=v.chars.bos_id)
    tokens, scores = search.joint_ctc_beam_search(
        dec, p["decoder"], logits, cache, ctc_logp, lengths, ctc_weight=float(d.ctc_weight),
        num_beams=int(d.beam), max_new_tokens=self.max_chars, eos_id=v.chars.eos_id, blank_id=0, pad_id=0,
        length_penalty=float(d.length_penalty))
    greedy_ctc, greedy_len = ctc_greedy(ctc_logp, lengths, blank=0)
    out = {"nbest": tokens[:, :int(d.nbest)], "scores": scores[:, :int(d.nbest)], "ctc": greedy_ctc,
           "ctc_len": greedy_len}
    if c.pinyin:
      gen = MBartGenerator(MBart(c.pinyin_mbart()))
      pl, pc = gen.prefill(p["pinyin_decoder"], encoder_hidden_states=h, attention_mask=mask,
                           max_new_tokens=self.max_chars)
      out["pinyin"] = search.greedy(gen, p["pinyin_decoder"], pl, pc, max_new_tokens=self.max_chars,
                                    eos_ids=(v.pinyin.eos_id,), pad_id=0)
    return out

  def _chars(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self.vocab.chars.eos_id in ids:
      ids = ids[:ids.index(self.vocab.chars.eos_id)]
    return "".join(self.vocab.chars.decode(ids))

  def recognize(self, variables, batch) -> Hypotheses:
    out = jax.device_get(self._run(variables, jnp.asarray(batch["lips"]), jnp.asarray(batch["lips_lengths"])))
    nbest = [[self._chars(seq) for seq in row] for row in out["nbest"]]
    ctc = ["".join(self.vocab.chars.decode(r[:n])) for r, n in zip(out["ctc"], out["ctc_len"])]
    pinyin = [""] * len(nbest)
    if "pinyin" in out:
      eos = self.vocab.pinyin.eos_id
      pinyin = [" ".join(self.vocab.pinyin.decode(list(r[:list(r).index(eos)] if eos in r else r)))
                for r in out["pinyin"].tolist()]
    return Hypotheses(nbest=nbest, scores=np.asarray(out["scores"]), pinyin=pinyin, ctc=ctc)


def make_task(cfg, model: VallrPin | None = None) -> train_lib.Task:
  check_config(cfg)
  vocab = data_lib.vocabs(cfg.data)
  model = model or VallrPin(model_config(cfg, vocab))
  per_host = local_batch_size(cfg.trainer.batch_size)

  def init_params(rng, batch):
    c_in, _, c_m = teacher_forcing(jnp.asarray(batch["chars"]), jnp.asarray(batch["chars_mask"]),
                                   vocab.chars.bos_id, vocab.chars.eos_id)
    kw = {}
    if model.config.pinyin:
      p_in, _, p_m = teacher_forcing(jnp.asarray(batch["pinyin"]), jnp.asarray(batch["pinyin_mask"]),
                                     vocab.pinyin.bos_id, vocab.pinyin.eos_id)
      kw = dict(pinyin_in=p_in, pinyin_mask=p_m)
    return model.init(rng, jnp.asarray(batch["lips"]), jnp.asarray(batch["lips_lengths"]), c_in, c_m, **kw)

  def make_iter():
    return data_lib.train_iterator(cfg.data, vocab, batch_size=per_host, seed=cfg.trainer.seed)

  task = train_lib.Task(init_params=init_params, loss_fn=make_loss_fn(model, cfg, vocab), make_train_iter=make_iter,
                        mutable=("batch_stats",), check_config=functools.partial(check_config, cfg))
  task.model, task.vocab, task.recognizer = model, vocab, Recognizer(model, cfg, vocab)
  return task
