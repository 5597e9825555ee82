"""VALLR-Pin stage 2: the error-aware LLM refiner (a Qwen3-architecture LM + LoRA) for shared.train.

Two stages, chosen by `cfg.stage`:

  "pretrain"  the stand-in for Qwen3's pretraining (no pretrained LLM exists here): a small Qwen3-architecture LM
              (shared.models.llm, family "qwen3") learns the SynthCue language from sentences rendered through the
              template's answer side ([bos] 正确句子： sentence eos, vsr_pin_jax/refine_data.py) and, a share
              data.pretrain_instruct of the examples, generic correction records built from synthetic noise (the
              template filled from refine_data.synthetic_records: what an Instruct LLM brings); every parameter
              trains. Export: `export_refiner` writes a transformers Qwen3ForCausalLM directory (+ tokenizer).
  "lora"      the paper's fine-tuning: LoRA (cfg.lora: rank, alpha, dropout, targets; paper r 8, α 32 on the
              attention projections, lr 1e-4) on error-aware records (cfg.data.train_records, .jsonl), the base
              weights entering through the config's `init.base` entry (a save_pretrained directory: the export of a
              pretrain run, or the local Qwen3-4B-Instruct-2507 directory); Task.trainable = the LoRA leaves only.
              Export: a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) over that base.

Loss: summed next-token cross-entropy over label positions != -100 (the answer: truth + eos), weight = their count.
Eval (eval_fn, every trainer.eval_every steps): on cfg.data.eval_records (the first refine.eval_max_records),
the corpus CER of the refined sentences (greedy or beam search through shared.decoding.search.generate) next to
the CER of nbest[0] and of the oracle (the best hypothesis in the list), overall and per stage; the pretrain stage
adds the held-out token NLL of SynthCue validation sentences.

    task = make_task(cfg); task.refine(params, records) -> list[str]
    refine_workdir(workdir, rows) -> list[str]          (a trained refiner on records / stage-1 eval rows)
    python -m vsr_pin_jax.train_refiner --config configs/vsr_pin/refine_tiny.py:pretrain --workdir W
    python -m vsr_pin_jax.refiner --workdir W --out DIR [--step S] [--merge]        (export_refiner)
"""
from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from shared import config as config_lib
from shared import train as train_lib
from shared.data.pipeline import make_iterator
from shared.decoding.search import generate
from shared.errors import ConfigError
from shared.metrics.text import chinese_cer
from shared.models.llm import LLM, LLMConfig
from shared.nn import lora as lora_lib
from vsr_pin_jax import refine_data as rd

log = logging.getLogger(__name__)

STAGES = ("pretrain", "lora")
METHODS = ("greedy", "beam")
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# LLMConfig fields a base checkpoint's config.json must agree on (ours <- theirs)
_BASE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                "tie_embeddings", "qk_norm")


# --------------------------------------------------------------------------- config -> parts

def tokenizer_from_config(cfg):
  """cfg.tokenizer.path: "" = the SynthCue character tokenizer, else a local tokenizer directory."""
  path = cfg.tokenizer.path
  if path and not os.path.exists(os.path.expanduser(path)):
    raise ConfigError(f"config key tokenizer.path={path!r} does not exist (a local tokenizer directory, e.g. the "
                      "Qwen3 model directory; '' = the SynthCue character tokenizer)")
  return rd.load_refiner_tokenizer(os.path.expanduser(path) if path else "")


def lora_config(cfg) -> lora_lib.LoraConfig:
  lc = cfg.lora
  return lora_lib.LoraConfig(rank=int(lc.rank), alpha=float(lc.alpha), dropout=float(lc.dropout),
                             targets=tuple(lc.targets))


def model_from_config(cfg, tokenizer=None) -> LLM:
  """The LLM of cfg.model (LLMConfig fields; model.vocab_size 0 = the tokenizer's size; unset bos / eos / pad ids
  from the tokenizer) with LoRA from cfg.lora in the lora stage."""
  tokenizer = tokenizer if tokenizer is not None else tokenizer_from_config(cfg)
  m = cfg.model
  runtime = {"lora": lora_config(cfg) if cfg.stage == "lora" else None}
  if not m.vocab_size:
    runtime["vocab_size"] = len(tokenizer)
  if m.bos_token_id is None and tokenizer.bos_token_id is not None:
    runtime["bos_token_id"] = int(tokenizer.bos_token_id)
  if not m.eos_token_id:
    runtime["eos_token_id"] = (rd.eos_id(tokenizer),)
  if m.pad_token_id is None and tokenizer.pad_token_id is not None:
    runtime["pad_token_id"] = int(tokenizer.pad_token_id)
  return LLM(config_lib.from_section(LLMConfig, m, "model", **runtime))


def is_lora_leaf(path: str) -> bool:
  """'/'-joined param path -> True for lora_a / lora_b (Task.trainable of the lora stage)."""
  return lora_lib.is_lora_path(tuple(path.split("/")))


def check_config(cfg, tokenizer=None, model: LLM | None = None) -> None:
  """ConfigError naming the first bad key (stage, records, base checkpoint vs model sizes, LoRA targets, ...)."""
  def need(ok, key, value, expected):
    if not ok:
      raise ConfigError(f"config key {key}={value!r}: expected {expected}")

  need(cfg.stage in STAGES, "stage", cfg.stage, f"one of {STAGES}")
  if tokenizer is not None:
    n = len(tokenizer)
    if not cfg.tokenizer.path:
      need(int(cfg.model.vocab_size) in (0, n), "tokenizer.path", cfg.tokenizer.path,
           f"the model's tokenizer directory: '' is the SynthCue character tokenizer ({n} tokens), not one for "
           f"model.vocab_size={cfg.model.vocab_size}")
    if model is not None:
      need(model.config.vocab_size >= n, "model.vocab_size", model.config.vocab_size, f">= the tokenizer's {n} tokens")
  d, r = cfg.data, cfg.refine
  need(int(d.max_len) > int(r.max_new_tokens) > 0, "data.max_len", d.max_len,
       f"> refine.max_new_tokens ({r.max_new_tokens}) > 0")
  need(int(d.nbest) >= 1, "data.nbest", d.nbest, ">= 1 hypotheses in the prompt")
  need(r.method in METHODS, "refine.method", r.method, f"one of {METHODS}")
  need(r.method != "beam" or int(r.num_beams) >= 1, "refine.num_beams", r.num_beams, ">= 1")
  need(int(r.batch_size) >= 1, "refine.batch_size", r.batch_size, ">= 1")
  for key in ("train_records", "eval_records"):
    path = d[key]
    need(not path or os.path.isfile(os.path.expanduser(path)), f"data.{key}", path, "an existing .jsonl file")
  if cfg.stage == "lora":
    need(bool(d.train_records), "data.train_records", d.train_records,
         "the error-aware record file (.jsonl) the lora stage trains on")
    need(bool(d.eval_records) or not cfg.trainer.eval_every, "data.eval_records", d.eval_records,
         "a held-out record file when trainer.eval_every > 0 (or trainer.eval_every=0)")
    targets = tuple(cfg.lora.targets)
    need(targets and set(targets) <= set(LINEAR_NAMES), "lora.targets", targets, f"a subset of {LINEAR_NAMES}")
    need(int(cfg.lora.rank) >= 1, "lora.rank", cfg.lora.rank, ">= 1")
    base = cfg.init.base.path if "base" in cfg.get("init", {}) else ""
    need(bool(base), "init.base.path", base, "the base LLM directory (a save_pretrained directory: "
         "export_refiner of a pretrain run, or the local Qwen3 directory)")
    if model is not None:
      check_base(model, os.path.expanduser(base))


def check_base(model: LLM, path: str) -> None:
  """The base directory's config.json against the model's sizes: ConfigError listing what differs."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise ConfigError(f"config key init.base.path={path!r}: no config.json there (expected a save_pretrained / "
                      "transformers directory)")
  from shared.weights import io, llm_family
  raw = io.read_json(cfg_path)
  diff = []
  if raw.get("model_type") not in ("qwen3", "llama"):
    diff.append(f"model_type={raw.get('model_type')!r} (expected qwen3)")
  else:   # the family's own config translation (the one load_pretrained uses), not a second key map
    c, theirs = model.config, llm_family.from_config(raw).config
    diff = [f"model.{k}={getattr(c, k)!r} vs the base's {getattr(theirs, k)!r}" for k in _BASE_FIELDS
            if getattr(theirs, k) != getattr(c, k)]
  if diff:
    raise ConfigError(f"config key init.base.path={path!r}: the base does not match the model: " + "; ".join(diff))


# --------------------------------------------------------------------------- data

class _Sentences:
  """Random access over the pretraining examples of a SynthCue source (cheap: words only, no rendering). Per index
  one draw decides the kind: with probability `instruct` a generic correction record (refine_data.synthetic_records:
  the sentence with random homophone / look-alike substitutions - synthetic noise, never a stage-1 model's errors:
  the stand-in for the instruction following a pretrained Instruct LLM brings), else with probability `repeat` the
  sentence rendered twice, else the sentence once. -> {"text", "repeat"} or {"record"}."""

  def __init__(self, src, repeat: float = 0.0, instruct: float = 0.0, nbest: int = 3):
    self.src, self.repeat, self.instruct, self.nbest = src, float(repeat), float(instruct), int(nbest)

  def __len__(self):
    return len(self.src)

  def __getitem__(self, i):
    u = np.random.default_rng([self.src.config.seed, 31, int(i)]).random()
    if u < self.instruct:
      return {"record": rd.synthetic_records(self.src, 1, seed=self.src.config.seed, nbest=self.nbest,
                                             start=int(i))[0]}
    chars, _ = self.src.sentence(int(i))
    twice = u < self.instruct + self.repeat
    return {"text": "".join(self.src.world.chars[c] for c in chars), "repeat": 2 if twice else 1}


def sentence_source(cfg, split: str, repeat: float = 0.0, instruct: float = 0.0):
  from shared.data.synthcue import synthcue_source
  return _Sentences(synthcue_source(cfg.data, split, "speech", render_video=False, render_audio=False), repeat,
                    instruct, int(cfg.data.get("nbest", 3)))


def _encode_text(tokenizer, max_len: int, sample: dict, nbest: int | None = None) -> dict:
  if "record" in sample:
    return rd.encode_record(tokenizer, sample["record"], max_len, nbest=nbest)
  return rd.encode_sentence(tokenizer, sample["text"], max_len, sample.get("repeat", 1))


def stack(samples):
  """Batch function: equal-length arrays stacked."""
  return {k: np.stack([s[k] for s in samples]) for k in ("input_ids", "labels")}


def batch_spec(cfg) -> dict:
  """The global training batch as jax.ShapeDtypeStruct (shared.scaling compile: no records are read):
  input_ids, labels [trainer.batch_size, data.max_len] int32."""
  shape = (int(cfg.trainer.batch_size), int(cfg.data.max_len))
  return {k: jax.ShapeDtypeStruct(shape, jnp.int32) for k in ("input_ids", "labels")}


# --------------------------------------------------------------------------- loss, generation

def token_nll(model: LLM, params, batch, rng=None, deterministic: bool = True):
  """(summed next-token NLL over labels != -100, count, correct argmax count); float32."""
  rngs = {"dropout": rng} if rng is not None else {}
  logits = model.apply({"params": params}, batch["input_ids"], deterministic=deterministic, rngs=rngs)
  lg = logits[:, :-1].astype(jnp.float32)
  lb = batch["labels"][:, 1:]
  mask = lb != rd.IGNORE
  safe = jnp.where(mask, lb, 0)
  picked = jnp.take_along_axis(lg, safe[..., None], -1)[..., 0]
  nll = jax.nn.logsumexp(lg, axis=-1) - picked
  correct = (jnp.argmax(lg, -1) == safe) & mask
  return jnp.sum(nll * mask), jnp.sum(mask).astype(jnp.float32), jnp.sum(correct).astype(jnp.float32)


def refine_records(model: LLM, params, tokenizer, records, *, max_len: int, nbest: int, max_new_tokens: int,
                   method: str = "greedy", num_beams: int = 4, batch_size: int = 16) -> list[str]:
  """Batched generation: the refined sentence of each record (prompt = the template; fixed batch shapes)."""
  eos = tuple(sorted({rd.eos_id(tokenizer), *model.config.eos_token_id}))
  out = []
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    ids, mask = rd.prompt_batch(tokenizer, chunk, max_len - max_new_tokens, nbest=nbest, rows=batch_size)
    kw = dict(num_beams=int(num_beams)) if method == "beam" else {}
    got = generate(model, params, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                   max_new_tokens=int(max_new_tokens), method=method, eos_ids=eos, pad_id=rd.pad_id(tokenizer), **kw)
    toks = np.asarray(got[0][:, 0] if method == "beam" else got)
    out += [rd.decode_answer(tokenizer, toks[i], eos) for i in range(len(chunk))]
  return out


def cer_report(records, refined) -> dict:
  """Corpus CERs: refined, nbest[0] and the oracle (best hypothesis of the list), overall and per stage."""
  def group(recs, hyps, suffix=""):
    truths = [r["truth"] for r in recs]
    oracle = [min(r["nbest"], key=lambda h: chinese_cer([r["truth"]], [h])) for r in recs]
    return {f"cer_refined{suffix}": chinese_cer(truths, hyps),
            f"cer_nbest1{suffix}": chinese_cer(truths, [r["nbest"][0] for r in recs]),
            f"cer_oracle{suffix}": chinese_cer(truths, oracle)}
  out = group(records, refined)
  names = sorted({r["stage"] for r in records}, key=lambda n: (rd.STAGES.index(n) if n in rd.STAGES else 9, n))
  for stage in names:
    idx = [i for i, r in enumerate(records) if r["stage"] == stage]
    if idx and len(idx) < len(records):
      out.update(group([records[i] for i in idx], [refined[i] for i in idx], f"/{stage}"))
  out["records"] = float(len(records))
  return out


# --------------------------------------------------------------------------- the task

def make_task(cfg) -> train_lib.Task:
  """The refiner's Task (stage from cfg.stage). Extra attributes: model, tokenizer, refine(params, records),
  evaluate(params, records) -> CER dict."""
  tokenizer = tokenizer_from_config(cfg)
  model = model_from_config(cfg, tokenizer)
  check_config(cfg, tokenizer)
  lora_stage = cfg.stage == "lora"
  d, r = cfg.data, cfg.refine
  max_len, nbest = int(d.max_len), int(d.nbest)
  per_host = cfg.trainer.batch_size // jax.process_count()
  dropout = lora_stage and float(cfg.lora.dropout) > 0

  def init_params(rng, batch):
    return model.init(rng, jnp.asarray(batch["input_ids"][:1]))["params"]

  def loss_fn(params, batch, rng):
    """Summed token CE over the answer tokens; weight = their count (the trainer divides)."""
    nll, count, correct = token_nll(model, params, batch, rng if dropout else None, deterministic=not dropout)
    return nll, {"weight": count, "token_accuracy": correct / jnp.maximum(count, 1.0)}

  def make_iter():
    if lora_stage:
      src = rd.read_records(os.path.expanduser(d.train_records))
      fn = functools.partial(rd.encode_record, tokenizer, max_len=max_len, nbest=nbest)
    else:
      src = sentence_source(cfg, "train", float(d.get("pretrain_repeat", 0.0)),
                            float(d.get("pretrain_instruct", 0.0)))
      fn = functools.partial(_encode_text, tokenizer, max_len, nbest=nbest)
    return make_iterator(src, stack, batch_size=per_host, seed=cfg.trainer.seed, map_fn=fn,
                         workers=int(d.get("workers", 0)))

  def refine(params, records, *, method: str | None = None, num_beams: int | None = None) -> list[str]:
    return refine_records(model, params, tokenizer, list(records), max_len=max_len, nbest=nbest,
                          max_new_tokens=int(r.max_new_tokens), method=method or r.method,
                          num_beams=int(num_beams or r.num_beams), batch_size=int(r.batch_size))

  def evaluate(params, records) -> dict:
    records = list(records)
    return cer_report(records, refine(params, records))

  nll_fn = jax.jit(lambda p, b: token_nll(model, p, b))
  eval_cache: dict = {}

  def sentence_nll(params) -> float:
    n = int(d.get("eval_sentences", 0))
    src = sentence_source(cfg, "validation")
    tot = cnt = 0.0
    for start in range(0, n, per_host):
      rows = [rd.encode_sentence(tokenizer, src[i % len(src)]["text"], max_len)
              for i in range(start, start + per_host)]
      got = nll_fn(params, {k: jnp.asarray(v) for k, v in stack(rows).items()})
      tot, cnt = tot + float(got[0]), cnt + float(got[1])
    return tot / max(cnt, 1.0)

  def eval_fn(variables, step) -> dict:
    del step
    params = variables["params"]
    out = {}
    if not lora_stage and int(d.get("eval_sentences", 0)) > 0:
      out["sentence_nll"] = sentence_nll(params)
    if d.eval_records:
      if "records" not in eval_cache:
        eval_cache["records"] = rd.read_records(os.path.expanduser(d.eval_records))[:int(r.eval_max_records)]
      out.update(evaluate(params, eval_cache["records"]))
    return out

  task = train_lib.Task(
      init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter,
      trainable=is_lora_leaf if lora_stage else None,
      eval_fn=eval_fn if (d.eval_records or (not lora_stage and int(d.get("eval_sentences", 0)) > 0)) else None,
      tokens_per_example=max_len, check_config=lambda: check_config(cfg, tokenizer, model))
  task.model, task.tokenizer, task.refine, task.evaluate = model, tokenizer, refine, evaluate
  return task


def refine_workdir(workdir: str, rows, *, step: int | None = None, method: str | None = None) -> list[str]:
  """The refined sentence of each row ({"pinyin", "nbest", ...}: a record, or a stage-1 evaluation row) by the
  refiner of a training workdir (its newest checkpoint, or `step`); generation settings from its config's
  `refine` section (method overrides refine.method). Reads no record file and no base directory."""
  from shared.checkpoint import restore
  got = restore(workdir, step)
  cfg = got.config
  tokenizer = tokenizer_from_config(cfg)
  model = model_from_config(cfg, tokenizer)
  r = cfg.refine
  return refine_records(model, got.params, tokenizer, list(rows), max_len=int(cfg.data.max_len),
                        nbest=int(cfg.data.nbest), max_new_tokens=int(r.max_new_tokens), method=method or r.method,
                        num_beams=int(r.num_beams), batch_size=int(r.batch_size))


# --------------------------------------------------------------------------- export

def export_refiner(workdir: str, out: str, *, step: int | None = None, merge: bool = False) -> str:
  """A training workdir's checkpoint -> a directory PyTorch loads (with the tokenizer files):
  pretrain stage (or merge=True): save_pretrained -> transformers Qwen3ForCausalLM.from_pretrained(out);
  lora stage: save_adapter -> peft PeftModel.from_pretrained(base, out), base_model_name_or_path = init.base.path.
  Returns `out`."""
  from shared.checkpoint import restore
  from shared.weights import save_adapter, save_pretrained
  got = restore(workdir, step)
  cfg = got.config
  tokenizer = tokenizer_from_config(cfg)
  model = model_from_config(cfg, tokenizer)
  params = jax.device_get(got.params)
  os.makedirs(out, exist_ok=True)
  if cfg.stage == "pretrain" or merge:
    save_pretrained(model, params, out, lora="merge")
  else:
    base = os.path.abspath(os.path.expanduser(cfg.init.base.path))
    save_adapter(model, params, out, base_model_name_or_path=base)
  tokenizer.save_pretrained(out)
  log.info("exported %s step %d (%s) to %s", workdir, got.step,
           "adapter" if cfg.stage == "lora" and not merge else "model", out)
  return out


def main(argv=None) -> int:
  """python -m vsr_pin_jax.refiner --workdir W --out DIR [--step S] [--merge]"""
  import argparse

  from shared import cli
  ap = argparse.ArgumentParser(description="Export a VALLR-Pin refiner workdir: the base model (pretrain stage) "
                               "or a PEFT adapter (lora stage; --merge: the merged model).")
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--step", type=int, default=None)
  ap.add_argument("--merge", action="store_true")
  ap.add_argument("--verbose", action="store_true")
  a = ap.parse_args(argv)
  return cli.call(lambda: print(export_refiner(a.workdir, a.out, step=a.step, merge=a.merge)) or 0, a.verbose)


if __name__ == "__main__":
  raise SystemExit(main())
