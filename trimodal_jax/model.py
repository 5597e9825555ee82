"""Tri-modal sign / lip / audio -> text (papers/trimodal_sign_lip_audio.txt, Fig. 1; SPECS.md § Tri-modal).

  sign  [B, Ts, H, W, 3] normalised RGB, 25 fps --Video Swin (shared.models.swin3d; one 16-frame clip per
        frame, clamped to each example's length)-->                          F_s [B, Ts, Ds]    25 Hz (Ds 768)
  lip   [B, Tv, H, W] uint8 (or normalised float) mouth crops, 25 fps --AV-HuBERT video path
        (shared.models.avhubert)-->                                          F_v [B, Tv, Dv]    25 Hz (Dv 1024)
  audio [B, Ta, 80] Whisper log-mels, 100 Hz --Whisper encoder (shared.models.whisper; stride-2 conv)-->
                                                                             F_a [B, Ta/2, Da]  50 Hz (Da 1024)
  length adapters LA_m = Conv1d(D_m, D_m, kernel = stride = k_m, no padding): k 2 (sign, lip), 4 (audio)
                                                                             F~_m [B, T, D_m]   12.5 Hz
  task-adaptive modality masking (paper eqs. in § III-D-1), ON THE ADAPTER OUTPUTS:
      SLT  U = Map([F~_s, F~_v, 0])     VSR  U = Map([0, F~_v, 0])
      ASR  U = Map([0, 0, F~_a])        AVSR U = Map([0, F~_v, F~_a])
      (0: exact zeros of the modality's width; an absent modality's encoder and adapter are not run for a
      static task, and its inputs are never read)
      config.slt_lip = False: SLT U = Map([F~_s, 0, 0]) (the sign stream alone: the paper's ablation)
  mapping network Map = Linear(Ds+Dv+Da -> H) -> act -> Linear(H -> E), H = floor((in + E) / 2) (MMS-LLaMA's
      projector; 2816 -> 2944 -> 3072 at paper size)                         U [B, T, E]        "linguistic tokens"
  LLM (shared.models.llm, LLaMA-3.2-3B with LoRA r 16 / alpha 32 on q, k, v, o) over
      [instruction, U, target] (shared.text.prompts.assemble; labels -100 outside the target).

Lengths. T video frames at 25 Hz -> T sign / lip features -> floor(T / 2) tokens; the clip's audio (T * 640
samples at 16 kHz) -> 4T Whisper mel frames (hop 160) -> ceil(4T / 2) = 2T encoder frames -> floor(2T / 4) =
floor(T / 2) tokens: the same count. Per-example lengths (sign_len / lip_len in frames, audio_len in mel
frames) are carried through every stage; the token count of an example is the minimum over its present
modalities (as MMS-LLaMA truncates Whisper's to the video's), the static token axis the minimum over the
modalities computed. Padded frames: the lip encoder masks them (AV-HuBERT's padding mask: exact), the sign
clips are gathered with indices clamped to each example's last real frame (exact), Whisper masks padded keys
but its stride-2 conv lets the last real frame see one padded mel frame (as transformers does on padded input).

Tasks: a static name ("slt" | "vsr" | "asr" | "avsr", e.g. one task per batch) or per-example ids [B] int32
(TASKS order; mixed batches: every given encoder runs, absent modalities are zeroed by jnp.where, exactly).

Param tree (names are Task.trainable prefixes):
  sign_encoder/...   SwinTransformer3d (swin3d_family names)     absent when "sign" in config.precomputed
  lip_encoder/...    AVHubertVideo (+ batch_stats/lip_encoder/resnet/...)    absent when precomputed
  audio_encoder/...  WhisperEncoder                               absent when precomputed
  sign_adapter|lip_adapter|audio_adapter/{kernel [k, D, D], bias [D]}       (torch Conv1d weight [D, D, k])
  mapping/{fc1, fc2}/{kernel, bias}
  llm/...            shared.models.llm.LLM (llm_family names; lora_a / lora_b on the LoRA targets)

Batch (what task.py feeds; `__call__` / `encode`):
  sign [B, Ts, H, W, 3] float | sign features [B, Ts, Ds] when precomputed;  sign_len [B] int32 (frames)
  lip [B, Tv, H, W] uint8/float | [B, Tv, Dv] when precomputed;               lip_len [B]
  audio [B, Ta, n_mels] log-mels | [B, Ta', Da] when precomputed;             audio_len [B] (mel / feature frames)
  task [B] int32 (or the static `task=` argument)
  instr_ids [B, Li], instr_len [B]   (the task's instruction, tokenised: PROMPTS)
  target_ids [B, Lt], target_len [B] (the transcription / translation + eos)
A missing *_len means every frame is real.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared.errors import ConfigError, DataError
from shared.models.avhubert import AVHubertConfig, AVHubertVideo, normalise
from shared.models.llm import LLM, LLMConfig
from shared.models.swin3d import SwinConfig, SwinTransformer3d, clip_index
from shared.models.whisper import WhisperEncoder, WhisperEncoderConfig
from shared.nn.conv import Conv
from shared.nn.linear import Dense
from shared.nn.lora import LoraConfig
from shared.nn.mlp import ACTIVATIONS
from shared.text.prompts import IGNORE, assemble

MODALITIES = ("sign", "lip", "audio")
TASKS = ("slt", "vsr", "asr", "avsr")                       # task ids = indices
TASK_MODALITIES = {"slt": ("sign", "lip"), "vsr": ("lip",), "asr": ("audio",), "avsr": ("lip", "audio")}
# [task id, modality] -> present (the paper's masking table)
PRESENT = np.array([[m in TASK_MODALITIES[t] for m in MODALITIES] for t in TASKS], bool)
# one instruction per task (the paper: "task-adaptive instructions (e.g., prompt-based task identifiers)"; its
# wording is not published: ours, in the style of MMS-LLaMA / Llama-AVSR prompts)
PROMPTS = {
    "slt": "Translate the sign language video into English text.",
    "vsr": "Transcribe the lip movements into English text.",
    "asr": "Transcribe the speech audio into English text.",
    "avsr": "Transcribe the speech from the audio and the lip movements into English text.",
}


def llama32_3b(**overrides) -> LLMConfig:
  """LLaMA-3.2-3B (SPECS): hidden 3072, ffn 8192, 28 layers, 24 heads / 8 KV, head_dim 128, vocab 128256, rope
  5e5 with llama3 scaling (32, 1, 4, 8192), rms eps 1e-5, tied embeddings; bos 128000, eos 128001."""
  return LLMConfig(**{**dict(
      vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_layers=28, num_heads=24, num_kv_heads=8,
      head_dim=128, rms_eps=1e-5, rope_theta=500000.0,
      rope_scaling=(("factor", 32.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
                    ("original_max_position_embeddings", 8192), ("rope_type", "llama3")),
      tie_embeddings=True, max_position_embeddings=131072, family="llama", bos_token_id=128000,
      eos_token_id=(128001,)), **overrides})


@dataclasses.dataclass(frozen=True)
class TriModalConfig:
  sign: SwinConfig = SwinConfig(clip_window=16, clip_stride=1, clip_padding="same")   # Video Swin-T
  lip: AVHubertConfig = AVHubertConfig()                                              # AV-HuBERT Large
  audio: WhisperEncoderConfig = WhisperEncoderConfig()                                # Whisper-medium encoder
  llm: LLMConfig = llama32_3b()
  # LoRA on the LLM (rank 0 = none); it replaces llm.lora (leave that None). MMS-LLaMA: dropout 0.05
  lora: LoraConfig = LoraConfig(rank=16, alpha=32.0, dropout=0.05, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
  sign_stride: int = 2            # length adapters: kernel = stride (25 Hz -> 12.5 Hz)
  lip_stride: int = 2
  audio_stride: int = 4           # 50 Hz -> 12.5 Hz
  mapping_hidden: int = 0         # 0 = floor((Ds + Dv + Da + E) / 2) (MMS-LLaMA's projector)
  mapping_act: str = "relu"       # between the two Linear layers (MMS-LLaMA / Llama-AVSR projector; unverified)
  # modalities whose encoder is not built: their inputs are the encoder's features (e.g. sign features extracted
  # once with the frozen Swin: its per-frame clips are 16x a plain video pass)
  precomputed: tuple = ()
  lip_bn_train: bool = False      # True: the lip ResNet's BatchNorm uses batch statistics in training (mutable)
  # False: SLT reads the sign stream alone (its lip features are masked to zeros like an absent modality): the
  # paper's "SLT without lips" ablation; the data still carries the lips
  slt_lip: bool = True
  dtype: str = "float32"          # compute dtype of adapters and mapping
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "precomputed", tuple(self.precomputed))
    bad = sorted(set(self.precomputed) - set(MODALITIES))
    if bad:
      raise ConfigError(f"model.precomputed has {bad}; expected a subset of {MODALITIES}")
    for key in ("sign_stride", "lip_stride", "audio_stride"):
      if int(getattr(self, key)) < 1:
        raise ConfigError(f"model.{key}={getattr(self, key)!r}: expected a positive integer")
    if self.mapping_hidden < 0:
      raise ConfigError(f"model.mapping_hidden={self.mapping_hidden}: expected >= 0 (0 = floor((in + E) / 2))")
    if self.mapping_act not in ACTIVATIONS:
      raise ConfigError(f"model.mapping_act={self.mapping_act!r}: expected one of {sorted(ACTIVATIONS)}")
    if self.sign.num_classes:
      raise ConfigError(f"model.sign.num_classes={self.sign.num_classes}: the sign encoder gives features (0)")
    if self.lora.rank < 0:
      raise ConfigError(f"model.lora.rank={self.lora.rank}: expected >= 0 (0 = no LoRA)")
    lora = self.lora if self.lora.rank > 0 else None
    if self.llm.lora is not None and self.llm.lora != lora:
      raise ConfigError(f"model.llm.lora={self.llm.lora!r} differs from model.lora={self.lora!r}: set model.lora "
                        "only (llm.lora stays None)")
    # (LLMConfig itself makes rope_scaling / eos_token_id read back from JSON hashable)
    object.__setattr__(self, "llm", self.llm.replace(lora=lora))

  def replace(self, **kw) -> "TriModalConfig":
    return dataclasses.replace(self, **kw)

  def widths(self) -> dict:
    """Per-modality feature width D_m (kept by the adapters)."""
    return {"sign": self.sign.num_features, "lip": self.lip.dim, "audio": self.audio.d_model}

  def strides(self) -> dict:
    return {"sign": self.sign_stride, "lip": self.lip_stride, "audio": self.audio_stride}

  def task_modalities(self) -> dict:
    """{task: the modalities it reads}: TASK_MODALITIES, SLT without the lips when slt_lip is False."""
    return {**TASK_MODALITIES, "slt": TASK_MODALITIES["slt"] if self.slt_lip else ("sign",)}

  def present(self) -> np.ndarray:
    """[task id, modality] -> read (the masking table; PRESENT unless slt_lip is False)."""
    tm = self.task_modalities()
    return np.array([[m in tm[t] for m in MODALITIES] for t in TASKS], bool)

  @property
  def concat_dim(self) -> int:
    return sum(self.widths().values())

  @property
  def hidden_dim(self) -> int:
    return self.mapping_hidden or (self.concat_dim + self.llm.hidden_size) // 2


def task_ids(names) -> np.ndarray:
  """["slt", "asr", ...] -> int32 ids (TASKS order)."""
  try:
    return np.array([TASKS.index(n) for n in names], np.int32)
  except ValueError:
    raise ConfigError(f"unknown task in {list(names)}; expected names from {TASKS}") from None


def _check_task(task):
  if isinstance(task, str) and task not in TASKS:
    raise ConfigError(f"task {task!r}: expected one of {TASKS} (or per-example ids [B])")


class MappingNetwork(nn.Module):
  """x [..., Ds+Dv+Da] -> fc2(act(fc1(x))) [..., E]."""
  hidden: int
  features: int
  act: str = "relu"
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=jnp.dtype(self.dtype), param_dtype=jnp.dtype(self.param_dtype))
    h = ACTIVATIONS[self.act](Dense(self.hidden, True, ("embed", "mlp"), name="fc1", **kw)(x))
    return Dense(self.features, True, ("mlp", "embed"), name="fc2", **kw)(h)


def _valid(lengths, t):
  """lengths [B] -> [B, t] bool (frame < length)."""
  return jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]


class TriModal(nn.Module):
  """See the module docstring. Methods: features (encoders + adapters), fuse (masking + mapping), encode (both),
  __call__ (teacher forcing), prefix (generation prompt); `loss` is a free function."""
  config: TriModalConfig

  def setup(self):
    c = self.config
    kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype))
    if "sign" not in c.precomputed:
      self.sign_encoder = SwinTransformer3d(c.sign)
    if "lip" not in c.precomputed:
      self.lip_encoder = AVHubertVideo(c.lip)
    if "audio" not in c.precomputed:
      self.audio_encoder = WhisperEncoder(c.audio)
    w, s = c.widths(), c.strides()
    self.sign_adapter = Conv(w["sign"], (s["sign"],), strides=(s["sign"],), padding="VALID", **kw)
    self.lip_adapter = Conv(w["lip"], (s["lip"],), strides=(s["lip"],), padding="VALID", **kw)
    self.audio_adapter = Conv(w["audio"], (s["audio"],), strides=(s["audio"],), padding="VALID", **kw)
    self.mapping = MappingNetwork(c.hidden_dim, c.llm.hidden_size, c.mapping_act, c.dtype, c.param_dtype)
    self.llm = LLM(c.llm)

  # ---------------------------------------------------------------- encoders

  def _sign(self, video, lengths, train):
    """[B, T, H, W, C] -> (F_s [B, T', Ds], lengths [B]): one pooled Swin clip per output frame; clip indices
    clamped to each example's last real frame, so padding never enters a real frame's clip."""
    c = self.config.sign
    b, t = video.shape[:2]
    idx = clip_index(t, c.clip_window, c.clip_stride, c.clip_padding)            # [T', W] (static)
    n, win = idx.shape
    last = jnp.maximum(jnp.asarray(lengths, jnp.int32) - 1, 0)
    idx = jnp.minimum(jnp.asarray(idx)[None], last[:, None, None]).reshape(b, n * win)
    clips = jax.vmap(lambda v, i: jnp.take(v, i, axis=0))(video, idx)            # [B, T' * W, H, W, C]
    clips = clips.reshape(b * n, win, *video.shape[2:])
    f = self.sign_encoder.pooled(clips, deterministic=not train).reshape(b, n, -1)
    lengths = jnp.asarray(lengths, jnp.int32)
    if c.clip_padding == "same":
      out = -(-lengths // c.clip_stride)
    else:
      out = jnp.maximum((lengths - c.clip_window) // c.clip_stride + 1, 0)
    return f, out

  def _lip(self, video, lengths, train):
    """[B, T, H, W(, 1)] -> (F_v [B, T, Dv], lengths)."""
    c = self.config
    x = normalise(video) if jnp.issubdtype(video.dtype, jnp.integer) else video.astype(jnp.float32)
    pad = jnp.logical_not(_valid(lengths, x.shape[1]))
    f = self.lip_encoder(x, pad, train=train and c.lip_bn_train, deterministic=not train)
    return f, jnp.asarray(lengths, jnp.int32)

  def _audio(self, mels, lengths, train):
    """[B, Ta, n_mels] -> (F_a [B, ceil(Ta / 2), Da], ceil(lengths / 2))."""
    out = (jnp.asarray(lengths, jnp.int32) + 1) // 2
    t_out = WhisperEncoder.output_length(mels.shape[1])
    f = self.audio_encoder(mels, attention_mask=_valid(out, t_out), deterministic=not train)
    return f, out

  def features(self, sign=None, lip=None, audio=None, *, sign_len=None, lip_len=None, audio_len=None, task="slt",
               train: bool = False):
    """Encoders + length adapters -> {modality: (F~_m [B, T_m, D_m], lengths [B] int32)} for the modalities
    computed: those of a static `task` (others are neither encoded nor read), or every given one for per-example
    task ids [B] (or while initialising)."""
    _check_task(task)
    c = self.config
    inputs = {"sign": (sign, sign_len), "lip": (lip, lip_len), "audio": (audio, audio_len)}
    enc = {"sign": self._sign, "lip": self._lip, "audio": self._audio}
    adapters = {"sign": self.sign_adapter, "lip": self.lip_adapter, "audio": self.audio_adapter}
    wanted = c.task_modalities()[task] if isinstance(task, str) and not self.is_initializing() else MODALITIES
    out = {}
    for m in MODALITIES:
      x, n = inputs[m]
      if m not in wanted:
        continue
      if x is None:
        if isinstance(task, str) and not self.is_initializing():
          raise DataError(f"task {task!r} needs the {m} input; got None", key=m)
        continue
      if n is None:
        n = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
      if m in c.precomputed:
        if x.ndim != 3 or x.shape[-1] != c.widths()[m]:
          raise DataError(f"{m} has shape {tuple(x.shape)}; model.precomputed holds {m!r}: expected encoder "
                          f"features [B, T, {c.widths()[m]}]", key=m)
        f, n = x, jnp.asarray(n, jnp.int32)
      else:
        f, n = enc[m](x, n, train)
      k = c.strides()[m]
      out[m] = (adapters[m](f), n // k)       # VALID conv: floor(T / k) outputs, each from real frames only
    if not out:
      raise DataError("no modality input given (sign, lip or audio)", key="inputs")
    return out

  # ---------------------------------------------------------------- fusion

  def fuse(self, adapted: dict, task="slt"):
    """Task-adaptive modality masking + mapping: {m: (F~_m, len)} -> (U [B, T, E], lengths [B] int32).
    Absent modalities (by `task`: a name, or ids [B]) enter the concatenation as exact zeros; T = the minimum
    static length over the given modalities, lengths = the minimum over each example's present ones."""
    _check_task(task)
    c = self.config
    some = next(iter(adapted.values()))[0]
    b, t = some.shape[0], min(f.shape[1] for f, _ in adapted.values())
    dt = jnp.result_type(*[f.dtype for f, _ in adapted.values()])
    dynamic = not isinstance(task, str)
    present = jnp.asarray(c.present())[jnp.asarray(task, jnp.int32)] if dynamic else None   # [B, 3]
    parts, big = [], jnp.iinfo(jnp.int32).max
    lengths = jnp.full((b,), big, jnp.int32)
    for i, m in enumerate(MODALITIES):
      zeros = jnp.zeros((b, t, c.widths()[m]), dt)
      if dynamic:
        if m in adapted:
          f, n = adapted[m]
          parts.append(jnp.where(present[:, i, None, None], f[:, :t].astype(dt), zeros))
          lengths = jnp.where(present[:, i], jnp.minimum(lengths, n), lengths)
        else:
          parts.append(zeros)
      elif m in c.task_modalities()[task]:
        if m not in adapted:
          raise DataError(f"task {task!r} needs the {m} features; got {sorted(adapted)}", key=m)
        f, n = adapted[m]
        parts.append(f[:, :t].astype(dt))
        lengths = jnp.minimum(lengths, n)
      else:
        parts.append(zeros)
    lengths = jnp.minimum(jnp.where(lengths == big, 0, lengths), t)
    return self.mapping(jnp.concatenate(parts, axis=-1)), lengths

  def encode(self, sign=None, lip=None, audio=None, *, sign_len=None, lip_len=None, audio_len=None, task="slt",
             train: bool = False):
    """-> (modality tokens U [B, T, E] (E = the LLM width), lengths [B] int32)."""
    adapted = self.features(sign, lip, audio, sign_len=sign_len, lip_len=lip_len, audio_len=audio_len, task=task,
                            train=train)
    return self.fuse(adapted, task)

  # ---------------------------------------------------------------- LLM

  def _tokens(self, batch, task, train):
    task = batch["task"] if task is None else task
    return self.encode(batch.get("sign"), batch.get("lip"), batch.get("audio"), sign_len=batch.get("sign_len"),
                       lip_len=batch.get("lip_len"), audio_len=batch.get("audio_len"), task=task, train=train)

  def __call__(self, batch, task=None, train: bool = False):
    """Teacher forcing over [instruction, modality tokens, target] (right-padded). task: a static name, or None
    for batch["task"] ids [B]. -> {"logits" [B, L, V] float32, "labels" [B, L] int32 (-100 outside the target),
    "attention_mask" [B, L], "mod_len" [B]}; logits[:, i] predicts labels[:, i + 1] (see `loss`)."""
    u, mod_len = self._tokens(batch, task, train)
    instr = self.llm.embed(jnp.asarray(batch["instr_ids"], jnp.int32))
    target = self.llm.embed(jnp.asarray(batch["target_ids"], jnp.int32))
    seq = assemble(instr, batch["instr_len"], u, mod_len, target, batch["target_ids"], batch["target_len"],
                   pad_side="right")
    logits = self.llm(inputs_embeds=seq["inputs_embeds"], attention_mask=seq["attention_mask"],
                      positions=seq["positions"], deterministic=not train)
    return {"logits": logits, "labels": seq["labels"], "attention_mask": seq["attention_mask"], "mod_len": mod_len}

  def prefix(self, batch, task=None):
    """Generation prompt [instruction, modality tokens], LEFT-padded: -> {"inputs_embeds" [B, P, E],
    "attention_mask" [B, P]} for shared.decoding.search.generate(llm_module(config), params["llm"], ...)."""
    u, mod_len = self._tokens(batch, task, False)
    instr = self.llm.embed(jnp.asarray(batch["instr_ids"], jnp.int32))
    seq = assemble(instr, batch["instr_len"], u, mod_len, pad_side="left")
    return {"inputs_embeds": seq["inputs_embeds"], "attention_mask": seq["attention_mask"]}


def llm_module(config: TriModalConfig) -> LLM:
  """The decoder alone (its params are params["llm"]): for shared.decoding's LLMDecoder / generate."""
  return LLM(config.llm)


def loss(logits, labels):
  """Next-token cross-entropy SUMMED over label positions != -100 (logits[:, :-1] vs labels[:, 1:]) ->
  (loss_sum, count, correct) float32: the trainer's convention (weight = count); correct = argmax hits."""
  lg = logits[:, :-1].astype(jnp.float32)
  lb = jnp.asarray(labels)[:, 1:]
  mask = lb != IGNORE
  safe = jnp.where(mask, lb, 0)
  nll = jax.nn.logsumexp(lg, axis=-1) - jnp.take_along_axis(lg, safe[..., None], -1)[..., 0]
  correct = (jnp.argmax(lg, -1) == safe) & mask
  return (jnp.sum(jnp.where(mask, nll, 0.0)), jnp.sum(mask).astype(jnp.float32),
          jnp.sum(correct).astype(jnp.float32))


def model_from_config(cfg) -> TriModal:
  """TriModal(from_section(TriModalConfig, cfg.model)): strict (a missing / unknown key fails naming it)."""
  from shared import config as config_lib
  return TriModal(config_lib.from_section(TriModalConfig, cfg.model, "model"))


def instruction_ids(tokenizer, task: str, *, bos: bool = True) -> list[int]:
  """PROMPTS[task] tokenised (with the tokenizer's bos first when it has one and `bos`)."""
  _check_task(task)
  ids = list(tokenizer.encode(PROMPTS[task], add_special_tokens=False))
  bos_id = getattr(tokenizer, "bos_token_id", None)
  return ([int(bos_id)] if bos and bos_id is not None else []) + [int(i) for i in ids]


def param_counts(params) -> dict:
  """{top-level part: parameter count} (+ "lora": the LoRA leaves inside llm) of a params tree (arrays or
  ShapeDtypeStructs)."""
  from flax import traverse_util
  flat = traverse_util.flatten_dict(nn.meta.unbox(params))
  out: dict = {}
  for k, v in flat.items():
    n = int(math.prod(v.shape))
    out[k[0]] = out.get(k[0], 0) + n
    if k[-1] in ("lora_a", "lora_b"):
      out["lora"] = out.get("lora", 0) + n
  return out
