"""Tri-modal task: mixed-task batches (data.py) -> the summed next-token loss over the targets, and decoding.

Loss (model.loss): cross-entropy SUMMED over target tokens (the sentence + eos; labels -100 elsewhere), aux
"weight" = the number of target tokens (the trainer divides once), "token_acc" (teacher-forced argmax hits).
Sign frames arrive uint8 and are normalised here, on device: (x / 255 - KINETICS_MEAN) / KINETICS_STD.
Per-example task ids (batch["task"]) pick each row's modality mask; LoRA dropout draws from the step's rng.

Trainable leaves (Task.trainable; cfg.train): the length adapters and the mapping network always; inside the LLM
only the LoRA factors (lora_a / lora_b: the paper freezes LLaMA but for LoRA) unless train.llm = "all"; the
encoders named in train.encoders ("sign", "lip", "audio": the tiny config trains its fresh stand-ins; paper
size freezes the pretrained ones). The lip ResNet's BatchNorm statistics are model state (Task.mutable), updated
only with model.lip_bn_train.

Decoding (`Decoder`): the generation prompt [instruction, modality tokens] (TriModal.prefix, left-padded) into
shared.decoding.search.generate over the LLM's params: greedy for SLT (cfg.decode.slt), beam search for VSR /
ASR / AVSR (cfg.decode.speech: beam 5, temperature 0.3 as the paper); one task per call.

Precomputed inputs (model.precomputed; data.sign_features for sign, trimodal_jax/data.py): such a modality's
encoder is not built and its batch entry is the encoder's features [B, T_m, D_m] float32 (D_m the encoder's width
from the model config: sign [B, T', Ds] with T' = data.sign_steps of the T frames (T at clip stride 1), lip
[B, T, Dv], audio [B, 2T, Da] (Whisper's 50 Hz frames of 4T mels); *_len counts those feature frames).
`batch_spec` and `complete` give these shapes, so `python -m shared.scaling compile --config
configs/trimodal/paper.py:stage1 --config.model.precomputed='("sign",)' --config.data.sign_features=FEAT ...`
lowers the step without the Swin (no feature file is read for it). The sign encoder's weights then do not
enter training: init.sign.path must stay empty (ConfigError: they are read by trimodal_jax.extract).

For shared.scaling: `Task.val_loss_fn` = the held-out token loss (no dropout, no augmentation) on the first
data.eval_samples clips of data.eval_split (tasks in turn: the stage's tasks; none when 0; `task.val_token_acc` the
teacher-forced next-token accuracy on them, the eval hook's "val_token_acc"), `batch_spec(cfg)` =
the global batch at the largest buckets. No `scale_config` (a width rule over three encoders and the LLM is not
one line).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from shared import train as train_lib
from shared.decoding import search
from shared.errors import ConfigError
from shared.mesh import local_batch_size
from shared.models.swin3d import KINETICS_MEAN, KINETICS_STD
from trimodal_jax import data as data_lib
from trimodal_jax.model import MODALITIES, TASKS, TriModal, llm_module, loss, model_from_config

DECODE_METHODS = ("greedy", "beam", "sample")
LLM_TRAIN = ("lora", "all")


def check_config(cfg):
  if cfg.get("stage") not in ("stage1", "stage2"):
    raise ConfigError(f"stage={cfg.get('stage')!r}: expected 'stage1' or 'stage2' (babble noise is stage 2's)")
  data_lib.check_data(cfg)
  enc = tuple(cfg.train.encoders)
  bad = sorted(set(enc) - set(MODALITIES))
  if bad:
    raise ConfigError(f"train.encoders has {bad}; expected a subset of {MODALITIES}")
  if cfg.train.llm not in LLM_TRAIN:
    raise ConfigError(f"train.llm={cfg.train.llm!r}: expected one of {LLM_TRAIN} (lora: only the LoRA factors)")
  if cfg.train.llm == "lora" and int(cfg.model.lora.rank) == 0:
    raise ConfigError("train.llm='lora' with model.lora.rank=0: nothing in the LLM would train (set a rank or "
                      "train.llm='all')")
  for name in ("slt", "speech"):
    d = cfg.decode[name]
    if d.method not in DECODE_METHODS:
      raise ConfigError(f"decode.{name}.method={d.method!r}: expected one of {DECODE_METHODS}")
    if int(d.num_beams) < 1 or float(d.temperature) <= 0:
      raise ConfigError(f"decode.{name}: num_beams={d.num_beams}, temperature={d.temperature}: expected >= 1, > 0")
  if int(cfg.decode.max_new_tokens) < 1:
    raise ConfigError(f"decode.max_new_tokens={cfg.decode.max_new_tokens}: expected >= 1")
  pre = tuple(cfg.model.get("precomputed", ()) or ())
  if "sign" in pre and "init" in cfg and "sign" in cfg.init and str(cfg.init.sign.get("path", "") or ""):
    raise ConfigError(f"init.sign.path={cfg.init.sign.path!r} with 'sign' in model.precomputed: no sign encoder "
                      "is built (its features come from data.sign_features); give the weights to "
                      "trimodal_jax.extract and leave init.sign.path empty here")
  a = cfg.model.audio
  if _mels_needed(cfg) > 2 * int(a.max_source_positions):
    raise ConfigError(f"data.frame_buckets up to {max(cfg.data.frame_buckets)} frames give {_mels_needed(cfg)} mel "
                      f"frames; model.audio.max_source_positions={a.max_source_positions} holds "
                      f"{2 * int(a.max_source_positions)}")


def _mels_needed(cfg) -> int:
  return data_lib.MELS_PER_FRAME * int(max(cfg.data.frame_buckets))


def normalise_sign(x):
  """uint8 [..., 3] -> float32 (x / 255 - mean) / std (Kinetics, per channel)."""
  mean = jnp.asarray(KINETICS_MEAN, jnp.float32)
  std = jnp.asarray(KINETICS_STD, jnp.float32)
  return (jnp.asarray(x).astype(jnp.float32) / 255.0 - mean) / std


def model_inputs(batch) -> dict:
  """The model's batch: sign normalised, everything else as given (jnp)."""
  out = {k: jnp.asarray(v) for k, v in batch.items()}
  if "sign" in out and jnp.issubdtype(out["sign"].dtype, jnp.integer):
    out["sign"] = normalise_sign(out["sign"])
  return out


def input_shapes(cfg, b: int, t: int) -> dict:
  """{modality: (shape, dtype)} of a batch of b clips padded to t video frames: frames / log-mels, or for a
  modality in model.precomputed its encoder's features [b, T_m, D_m] float32 (module docstring)."""
  d = cfg.data
  pre = tuple(cfg.model.get("precomputed", ()) or ())
  w = model_from_config(cfg).config.widths()
  out = {"sign": ((b, t, int(d.sign_size), int(d.sign_size), 3), jnp.uint8),
         "lip": ((b, t, int(d.crop), int(d.crop)), jnp.uint8),
         "audio": ((b, data_lib.MELS_PER_FRAME * t, int(d.n_mels)), jnp.float32)}
  feats = {"sign": data_lib.sign_steps(cfg, t), "lip": t, "audio": -(-data_lib.MELS_PER_FRAME * t // 2)}
  for m in pre:
    out[m] = ((b, feats[m], int(w[m])), jnp.float32)
  return out


def _frames(cfg, m: str, length: int) -> int:
  """Video frames of a batch whose modality-m entry has `length` steps (the inverse of input_shapes)."""
  pre = tuple(cfg.model.get("precomputed", ()) or ())
  if m == "audio":
    return length // (2 if "audio" in pre else data_lib.MELS_PER_FRAME)
  if m == "sign" and "sign" in pre:
    return length * int(cfg.model.sign.clip_stride)     # (stride 1: the same; batches always carry lip anyway)
  return length


def complete(batch, cfg) -> dict:
  """The batch with zero inputs for modalities the stage never reads (init builds every encoder, so a stage-1
  checkpoint holds the audio encoder too); a precomputed modality's zeros are features (input_shapes)."""
  out = dict(batch)
  b = np.shape(batch["task"])[0]
  some = next(m for m in ("lip", "audio", "sign") if m in batch)
  t = _frames(cfg, some, np.shape(batch[some])[1])
  shapes = input_shapes(cfg, b, t)
  for m in MODALITIES:
    if m not in out:
      shape, dt = shapes[m]
      out[m] = jnp.zeros(shape, dt)
      out[f"{m}_len"] = jnp.full((b,), shape[1], jnp.int32)
  return out


def make_trainable(cfg):
  enc = tuple(f"{m}_encoder/" for m in cfg.train.encoders)
  full_llm = cfg.train.llm == "all"

  def trainable(path: str) -> bool:
    if path.startswith(("mapping/", "sign_adapter/", "lip_adapter/", "audio_adapter/")):
      return True
    if path.startswith("llm/"):
      return full_llm or path.rsplit("/", 1)[-1] in ("lora_a", "lora_b")
    return path.startswith(enc) if enc else False

  return trainable


def make_loss_fn(model: TriModal):
  bn = model.config.lip_bn_train

  def loss_fn(params, batch, rng, model_state):
    variables = {"params": params, **model_state}
    x = model_inputs(batch)
    train = rng is not None
    kw = dict(train=train, rngs={"dropout": rng} if train else None)
    if bn and train:
      out, new_state = model.apply(variables, x, mutable=list(model_state), **kw)
    else:
      out, new_state = model.apply(variables, x, **kw), model_state
    total, count, correct = loss(out["logits"], out["labels"])
    return total, {"weight": count, "token_acc": correct / jnp.maximum(count, 1.0)}, new_state

  return loss_fn


def batch_spec(cfg) -> dict:
  """The GLOBAL training batch (cfg.trainer.batch_size) at the largest buckets as jax.ShapeDtypeStruct, exactly
  as data.collate yields it (keys: data.batch_keys(cfg)); no data built. With one frame bucket and one label
  bucket it is every batch's shape. A modality in model.precomputed: its features [B, T_m, D_m] float32
  (input_shapes), e.g. sign [B, T, Ds] at clip stride 1."""
  d, b = cfg.data, int(cfg.trainer.batch_size)
  t, lt = int(max(d.frame_buckets)), int(max(d.label_buckets))
  li = data_lib.instr_len(data_lib.tokenizer(cfg))
  i32 = jnp.int32
  full = {**input_shapes(cfg, b, t), "sign_len": ((b,), i32), "lip_len": ((b,), i32), "audio_len": ((b,), i32),
          "task": ((b,), i32), "instr_ids": ((b, li), i32), "instr_len": ((b,), i32),
          "target_ids": ((b, lt), i32), "target_len": ((b,), i32)}
  return {k: jax.ShapeDtypeStruct(*full[k]) for k in data_lib.batch_keys(cfg)}


def tokens_per_example(cfg) -> int:
  """LLM positions of one example at the largest buckets: instruction + modality tokens (12.5 Hz) + target."""
  d = cfg.data
  li = data_lib.instr_len(data_lib.tokenizer(cfg))
  return int(li + int(max(d.frame_buckets)) // int(cfg.model.lip_stride) + int(max(d.label_buckets)))


def make_validation(cfg, model: TriModal, tok):
  """-> (val_loss, val_token_acc): Task.val_loss_fn (module docstring) and the held-out teacher-forced next-token
  accuracy (the paper's checkpoint selection: trainer.checkpoint.best = "val_token_acc"), over the same held-out
  batches, built on first use and kept."""
  held: list = []
  loss_fn = make_loss_fn(model)

  def batches():
    from shared.scaling.validation import fixed_batches
    if not held:
      ex = [e for e, _ in data_lib.eval_examples(cfg, tok, str(cfg.data.eval_split), int(cfg.data.eval_samples))]
      held.extend(fixed_batches(ex, functools.partial(data_lib.collate, cfg=cfg, tok=tok),
                                min(8, int(cfg.trainer.batch_size))))
    return held

  def forward(variables, batch):
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    total, aux, _ = loss_fn(params, batch, None, state)
    return total, aux

  def loss_sums(variables, batch):
    total, aux = forward(variables, batch)
    return total, aux["weight"]

  def hit_sums(variables, batch):
    _, aux = forward(variables, batch)
    return aux["token_acc"] * aux["weight"], aux["weight"]

  def val_loss(variables) -> float:
    from shared.scaling.validation import mean_loss
    return mean_loss(loss_sums, variables, batches())

  def val_token_acc(variables) -> float:
    from shared.scaling.validation import mean_loss
    return mean_loss(hit_sums, variables, batches())

  return val_loss, val_token_acc


class Decoder:
  """`decode(variables, batch, task) -> [B] texts`: every row of `batch` is an example of `task` (a name)."""

  def __init__(self, model: TriModal, cfg, tok):
    self.model, self.tok = model, tok
    self.max_new = int(cfg.decode.max_new_tokens)
    self.settings = {t: cfg.decode["slt" if t == "slt" else "speech"] for t in TASKS}
    self.llm = llm_module(model.config)
    self.eos = (int(tok.eos_token_id),)
    self.pad = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
    self._prefix = {t: jax.jit(functools.partial(_prefix, model, t)) for t in TASKS}

  def tokens(self, variables, batch, task: str) -> np.ndarray:
    """-> generated ids [B, max_new_tokens] (pad after eos; the best beam)."""
    if task not in TASKS:
      raise ConfigError(f"task {task!r}: expected one of {TASKS}")
    p = self._prefix[task](variables, model_inputs(batch))
    s = self.settings[task]
    kw = {}
    if s.method == "beam":
      kw = dict(num_beams=int(s.num_beams), temperature=float(s.temperature))
    elif s.method == "sample":
      kw = dict(temperature=float(s.temperature))
    out = search.generate(self.llm, variables["params"]["llm"], inputs_embeds=p["inputs_embeds"],
                          attention_mask=p["attention_mask"], max_new_tokens=self.max_new, method=str(s.method),
                          eos_ids=self.eos, pad_id=self.pad, **kw)
    if s.method == "beam":
      out = out[0][:, 0]
    return np.asarray(jax.device_get(out))

  def decode(self, variables, batch, task: str) -> list[str]:
    return [data_lib.decode_text(self.tok, row) for row in self.tokens(variables, batch, task)]


def _prefix(model, task, variables, batch):
  return model.apply(variables, batch, task=task, method=TriModal.prefix)


def make_task(cfg, model: TriModal | None = None) -> train_lib.Task:
  check_config(cfg)
  tok = data_lib.tokenizer(cfg)
  model = model or model_from_config(cfg)
  per_host = local_batch_size(cfg.trainer.batch_size)

  def init_params(rng, batch):
    r_p, r_d = jax.random.split(rng)
    return model.init({"params": r_p, "dropout": r_d}, model_inputs(complete(batch, cfg)), train=False)

  def make_iter():
    return data_lib.train_iterator(cfg, tok, batch_size=per_host, seed=int(cfg.trainer.seed))

  task = train_lib.Task(init_params=init_params, loss_fn=make_loss_fn(model), make_train_iter=make_iter,
                        trainable=make_trainable(cfg), mutable=("batch_stats",),
                        check_config=functools.partial(check_config, cfg),
                        tokens_per_example=tokens_per_example(cfg))
  task.val_loss_fn = task.val_token_acc = None
  if int(cfg.data.eval_samples) > 0:
    task.val_loss_fn, task.val_token_acc = make_validation(cfg, model, tok)
  task.model, task.tokenizer, task.decoder = model, tok, Decoder(model, cfg, tok)
  return task
