"""Tri-modal speed, same CPU, same run (issue 14): train-step tokens/s and beam-5 decode utterances/s of ours
(trimodal_jax, configs/trimodal/tiny.py stage 2, shared.train's jitted step) vs a PyTorch reference built from
torch libraries at the same sizes.

  python benchmarks/trimodal_speed.py             # ~105 CPU s, ~70 of them compiling ours (the tiny regime's
                                                  # step alone ~45): 5.1-5.4 min wall on the 2-core box at load
                                                  # 14-15, less when it is quieter; JSON lines to stdout and
                                                  # benchmarks/results/trimodal_speed.jsonl
  python benchmarks/trimodal_speed.py --steps 5 --decode-repeats 3 --threads 2 --regimes paper --no-decode

Reference model (random weights; only the sizes are the same: the per-part parameter counts of both sides are
printed, "param_counts"):
  sign   torchvision.models.video.swin_transformer.SwinTransformer3d at the tiny widths (patch (2, 4, 4), embed 16,
         depths (1, 1), heads (2, 4), window (2, 4, 4), mlp 2, stochastic depth 0; head = Identity), one 4-frame
         clip per frame gathered with our clip indices (clamped to each example's length), pooled -> 32-d
  lip    tests/models/avhubert_torch.py AVHubertVideoTorch (2 layers, 64-d, ffn 128, 4 heads, conv pos 16 / 4
         groups) with its ResEncoder at width 8, layers (1, 1, 1, 1), PReLU; BatchNorm in eval (ours: running
         statistics, model.lip_bn_train False)
  audio  transformers WhisperEncoder (WhisperConfig 80 mels, d 64, 2 layers, 4 heads, ffn 128, 500 positions, no
         dropout): its own modules run by `whisper_forward` (transformers' forward minus its fixed 3000-frame
         length check: positions [:T]); Whisper ignores attention masks, ours masks padded keys (all real here)
  adapters nn.Conv1d(D, D, k = stride = 2 / 2 / 4); masking = the per-example PRESENT row (as ours: jnp.where)
  mapping  nn.Linear(160, 112) -> ReLU -> nn.Linear(112, 64)
  LLM    transformers LlamaForCausalLM (vocab 96, 64-d, ffn 128, 2 layers, 4 heads / 2 KV, head_dim 16, tied
         embeddings, rope 1e4) + peft LoRA (r 4, alpha 8, dropout 0.05, q/k/v/o), loss = its labels loss
Sequence: [instruction (padded to the longest, Li), modality tokens (T / 2), target (label bucket)] for both,
labels -100 outside the target.

(1) Train step ("bench": "train_step"): forward + backward + AdamW (lr 1e-3, weight decay 0, eps 1e-8, global
    grad-norm clip 1.0: the tiny config's trainer) on one fixed mixed stage-2 batch (default batch 8, 64 frames,
    label bucket 16; tasks SLT x4, VSR, ASR, AVSR x2: the stage-2 ratios; every encoder runs, absent modalities
    are zeroed per example). Two regimes, the same trainable set on both sides:
      "tiny"   the tiny config: everything trains (train.encoders = all three, train.llm = "all")
      "paper"  train.encoders = (), train.llm = "lora": adapters + mapping + LoRA train, encoders and LLaMA frozen
               (torch: requires_grad False; ours: shared.train differentiates the trainable leaves only)
    Ours: shared.train.build(cfg, make_task(cfg)).step_fn (jitted, state donated), the batch on device once;
    the parameters come from one jitted model.init shared by both regimes and the decode (`init_variables`;
    each regime's TrainState = those parameters + a fresh optimizer state over its trainable set); the steps
    are compiled ahead of time (lower().compile(); "compile_s": wall seconds; both regimes' steps and the
    decoder's first call are compiled before anything is timed). The first step of each side and
    --warmup steps untimed, then --steps timed steps alternating ours / torch step by step (a shared CPU then
    slows both alike), each blocked (block_until_ready / loss.item()).
    tokens/s = (Li + T / 2 + Lt) x B / median step seconds.
(2) Beam-5 decode ("bench": "decode_beam5"): AVSR utterances (lip + audio) end to end, batch --decode-batch.
    Ours: task.decoder.tokens (the jitted prefix = encoders + adapters + mapping + instruction, then
    shared.decoding.search.generate beam 5, temperature 0.3 as cfg.decode.speech). Reference: the torch model's
    prefix (same modules, inference_mode) then LlamaForCausalLM.generate(inputs_embeds=..., num_beams=5,
    do_sample=False) with the LoRA layers in place. Both generate exactly max_new_tokens (cfg.decode, 24): the
    eos is disabled on both sides (ours: decoder.eos = (); torch: generation_config.eos_token_id = None), since
    random weights would stop the two beams at unrelated lengths. Ours' first call (compilation) is untimed.

Every figure: median (and min) wall seconds, plus "cpu_s" (process CPU seconds, all threads: moves less than the
wall clock on a loaded CPU); "loadavg" = os.getloadavg() at start and end. "ratio" = ours / reference for
tokens/s and utterances/s: ABOVE 1, ours is faster. Threads: torch.set_num_threads(--threads, default
os.cpu_count()); JAX's XLA CPU backend uses its default intra-op pool (every core: os.cpu_count()).
OMP_WAIT_POLICY=PASSIVE unless set. JSON lines go to stdout and to --out (the file is rewritten each run).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:                         # configs/ and the packages, from any working directory
  sys.path.insert(0, ROOT)
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "trimodal_speed.jsonl")
# stage-2 ratios (SLT 1/2, VSR 1/8, ASR 1/8, AVSR 1/4) over 8 examples
MIX = ("slt", "slt", "slt", "slt", "vsr", "asr", "avsr", "avsr")
REGIMES = {"tiny": dict(encoders=("sign", "lip", "audio"), llm="all"), "paper": dict(encoders=(), llm="lora")}


# ----------------------------------------------------------------------------------------------- config / batch

def run_config(regime: str, batch: int, frames: int, labels: int):
  """configs/trimodal/tiny.py stage 2 with one frame / label bucket, the regime's trainable set, no eval."""
  from configs.trimodal import tiny
  cfg = tiny.get_config("stage2")
  cfg.trainer.batch_size = batch
  cfg.data.frame_buckets = (frames,)
  cfg.data.label_buckets = (labels,)
  cfg.data.eval_samples = 0
  cfg.train.encoders = REGIMES[regime]["encoders"]
  cfg.train.llm = REGIMES[regime]["llm"]
  return cfg


def make_batch(cfg, tok, tasks, seed: int = 0) -> dict:
  """A collate-shaped batch (trimodal_jax/data.py) of random content: every clip full length, the tasks' own
  instructions (bos + PROMPTS ids, right-padded to the longest), random targets filling the label bucket."""
  import numpy as np

  from trimodal_jax import data as data_lib
  from trimodal_jax.model import task_ids
  d = cfg.data
  b, t, lt = len(tasks), int(max(d.frame_buckets)), int(max(d.label_buckets))
  r = np.random.default_rng(seed)
  s, c, m = int(d.sign_size), int(d.crop), data_lib.MELS_PER_FRAME
  instr = data_lib.instructions(tok)
  li = data_lib.instr_len(tok)
  ids = np.zeros((b, li), np.int32)
  for i, k in enumerate(tasks):
    ids[i, :len(instr[k])] = instr[k]
  low = 4                                          # past <pad> <s> </s> <unk>
  return {"sign": r.integers(0, 256, (b, t, s, s, 3), dtype=np.uint8), "sign_len": np.full((b,), t, np.int32),
          "lip": r.integers(0, 256, (b, t, c, c), dtype=np.uint8), "lip_len": np.full((b,), t, np.int32),
          "audio": r.normal(size=(b, m * t, int(d.n_mels))).astype(np.float32),
          "audio_len": np.full((b,), m * t, np.int32), "task": task_ids(tasks),
          "instr_ids": ids, "instr_len": np.asarray([len(instr[k]) for k in tasks], np.int32),
          "target_ids": r.integers(low, len(tok), (b, lt)).astype(np.int32),
          "target_len": np.full((b,), lt, np.int32)}


def seq_tokens(cfg, tok) -> int:
  """LLM positions per example: Li + T / lip_stride + Lt."""
  from trimodal_jax import data as data_lib
  d = cfg.data
  return int(data_lib.instr_len(tok) + int(max(d.frame_buckets)) // int(cfg.model.lip_stride)
             + int(max(d.label_buckets)))


# ----------------------------------------------------------------------------------------------- torch reference

def whisper_forward(enc, mels):
  """transformers WhisperEncoder.forward without its fixed-length check: mels [B, n_mels, Ta] -> [B, Ta / 2, D]
  (positions [:Ta / 2], as ours)."""
  import torch.nn.functional as F
  h = F.gelu(enc.conv1(mels))
  h = F.gelu(enc.conv2(h)).permute(0, 2, 1)
  h = h + enc.embed_positions.weight[:h.shape[1]]
  for layer in enc.layers:
    h = layer(h, None)
    h = h[0] if isinstance(h, tuple) else h
  return enc.layer_norm(h)


def build_torch(cfg):
  """The reference at cfg.model's sizes (module docstring) -> torch.nn.Module with .features / .loss / .prefix."""
  import numpy as np
  import torch
  from torch import nn

  from shared.torch_compat import import_torchvision
  import_torchvision()
  from peft import LoraConfig, get_peft_model
  from torchvision.models.video.swin_transformer import SwinTransformer3d as TVSwin
  from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig
  from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder
  sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
  from avhubert_torch import AVHubertVideoTorch, ResEncoder

  from shared.models.swin3d import KINETICS_MEAN, KINETICS_STD, clip_index
  from shared.models.avhubert import PIXEL_MEAN, PIXEL_STD
  from trimodal_jax.model import PRESENT

  m = cfg.model
  sc, lc, ac, qc, lo = m.sign, m.lip, m.audio, m.llm, m.lora
  if lc.resnet.block != "basic":
    raise ValueError(f"model.lip.resnet.block={lc.resnet.block!r}: the torch reference has BasicBlock only")

  class Reference(nn.Module):
    def __init__(self):
      super().__init__()
      torch.manual_seed(0)
      self.sign = TVSwin(patch_size=list(sc.patch_size), embed_dim=sc.embed_dim, depths=list(sc.depths),
                         num_heads=list(sc.num_heads), window_size=list(sc.window_size), mlp_ratio=sc.mlp_ratio,
                         stochastic_depth_prob=0.0, num_classes=1)
      self.sign.head = nn.Identity()
      self.lip = AVHubertVideoTorch(layers=lc.layers, dim=lc.dim, ffn=lc.ffn, heads=lc.heads, conv_pos=lc.conv_pos,
                                    conv_pos_groups=lc.conv_pos_groups, width=lc.resnet.width,
                                    relu_type=lc.resnet.act)
      self.lip.feature_extractor_video.resnet = ResEncoder(lc.resnet.width, lc.resnet.act, tuple(lc.resnet.layers))
      self.audio = HFWhisperEncoder(WhisperConfig(
          num_mel_bins=ac.num_mel_bins, d_model=ac.d_model, encoder_layers=ac.encoder_layers,
          encoder_attention_heads=ac.encoder_attention_heads, encoder_ffn_dim=ac.encoder_ffn_dim,
          max_source_positions=ac.max_source_positions, dropout=0.0, attention_dropout=0.0,
          activation_dropout=0.0, decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=8))
      ws = {"sign": sc.embed_dim * 2 ** (len(sc.depths) - 1), "lip": lc.dim, "audio": ac.d_model}
      self.widths = ws
      self.strides = {"sign": m.sign_stride, "lip": m.lip_stride, "audio": m.audio_stride}
      self.adapters = nn.ModuleDict({k: nn.Conv1d(ws[k], ws[k], self.strides[k], stride=self.strides[k])
                                     for k in ("sign", "lip", "audio")})
      cat = sum(ws.values())
      hidden = int(m.mapping_hidden) or (cat + qc.hidden_size) // 2
      self.mapping = nn.Sequential(nn.Linear(cat, hidden), nn.ReLU(), nn.Linear(hidden, qc.hidden_size))
      llama = LlamaForCausalLM(LlamaConfig(
          vocab_size=qc.vocab_size, hidden_size=qc.hidden_size, intermediate_size=qc.intermediate_size,
          num_hidden_layers=qc.num_layers, num_attention_heads=qc.num_heads, num_key_value_heads=qc.num_kv_heads,
          head_dim=qc.head_dim, rms_norm_eps=qc.rms_eps, rope_theta=qc.rope_theta,
          tie_word_embeddings=bool(qc.tie_embeddings), max_position_embeddings=qc.max_position_embeddings,
          attention_dropout=0.0, pad_token_id=0))
      self.llm = get_peft_model(llama, LoraConfig(r=int(lo.rank), lora_alpha=float(lo.alpha),
                                                  lora_dropout=float(lo.dropout),
                                                  target_modules=list(lo.targets), bias="none"))
      self.present = torch.from_numpy(PRESENT.astype(np.float32))          # [task, modality]
      self.k_mean, self.k_std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)

    def train(self, mode: bool = True):
      super().train(mode)
      for mod in self.lip.modules():                                       # ours: running statistics
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)):
          mod.eval()
      return self

    # encoders ------------------------------------------------------------------------------------------
    def _sign(self, video, lengths):
      """uint8 [B, T, H, W, 3] -> [B, T, Ds]: one pooled clip per frame (our clip indices, clamped)."""
      b, t = video.shape[:2]
      idx = torch.from_numpy(clip_index(t, sc.clip_window, sc.clip_stride, sc.clip_padding)).long()   # [T', W]
      idx = torch.minimum(idx[None], (lengths.long() - 1).clamp(min=0)[:, None, None])               # [B, T', W]
      x = (video.float() / 255.0 - self.k_mean) / self.k_std
      n, w = idx.shape[1:]
      clips = torch.gather(x, 1, idx.reshape(b, n * w)[:, :, None, None, None].expand(-1, -1, *x.shape[2:]))
      clips = clips.reshape(b * n, w, *x.shape[2:]).permute(0, 4, 1, 2, 3)                          # [N, 3, W, H, W]
      return self.sign(clips).reshape(b, n, -1)

    def _lip(self, video, lengths):
      x = ((video.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD)[:, None]                               # [B, 1, T, H, W]
      pad = torch.arange(video.shape[1])[None] >= lengths[:, None]
      return self.lip(x, padding_mask=pad)

    def _audio(self, mels, lengths):
      return whisper_forward(self.audio, mels.transpose(1, 2))

    def tokens(self, batch, task=None):
      """-> U [B, T_tok, E]: encoders (those of a static task, or all for per-example ids), adapters, masking,
      mapping."""
      from trimodal_jax.model import MODALITIES, TASK_MODALITIES
      enc = {"sign": self._sign, "lip": self._lip, "audio": self._audio}
      run = MODALITIES if task is None else TASK_MODALITIES[task]
      feats = {}
      for k in run:
        f = enc[k](batch[k], batch[f"{k}_len"])
        feats[k] = self.adapters[k](f.transpose(1, 2)).transpose(1, 2)                              # [B, T_m, D]
      t_tok = min(f.shape[1] for f in feats.values())
      b = batch["task"].shape[0]
      parts = []
      for i, k in enumerate(MODALITIES):
        if k not in feats:
          parts.append(torch.zeros(b, t_tok, self.widths[k]))
          continue
        f = feats[k][:, :t_tok]
        if task is None:
          f = f * self.present[batch["task"].long(), i][:, None, None]
        parts.append(f)
      return self.mapping(torch.cat(parts, -1))

    def _embed(self, ids):
      return self.llm.get_input_embeddings()(ids.long())

    def loss(self, batch):
      """[instruction (padded), U, target] -> the labels loss (mean over target tokens)."""
      u = self.tokens(batch)
      instr, target = self._embed(batch["instr_ids"]), self._embed(batch["target_ids"])
      b, li, lt = instr.shape[0], instr.shape[1], target.shape[1]
      x = torch.cat([instr, u, target], 1)
      mask = torch.cat([torch.arange(li)[None] < batch["instr_len"][:, None], torch.ones(b, u.shape[1], dtype=bool),
                        torch.arange(lt)[None] < batch["target_len"][:, None]], 1).long()
      labels = torch.cat([torch.full((b, li + u.shape[1]), -100),
                          torch.where(mask[:, -lt:].bool(), batch["target_ids"].long(), -100)], 1)
      return self.llm(inputs_embeds=x, attention_mask=mask, labels=labels).loss

    def prefix(self, batch, task):
      """[instruction, U] for a static task (every row's instruction full length) -> (embeds, mask)."""
      u = self.tokens(batch, task)
      x = torch.cat([self._embed(batch["instr_ids"]), u], 1)
      return x, torch.ones(x.shape[:2], dtype=torch.long)

  return Reference()


def torch_trainable(ref, regime: str) -> list:
  """Set requires_grad for the regime; -> the trainable parameters (AdamW's set)."""
  enc = set(REGIMES[regime]["encoders"])
  full_llm = REGIMES[regime]["llm"] == "all"
  for name, p in ref.named_parameters():
    top = name.split(".", 1)[0]
    if top in ("adapters", "mapping"):
      p.requires_grad_(True)
    elif top == "llm":
      p.requires_grad_(full_llm or "lora_" in name)
    else:
      p.requires_grad_(top in enc)
  return [p for p in ref.parameters() if p.requires_grad]


def torch_counts(ref) -> dict:
  out = {"sign_encoder": 0, "lip_encoder": 0, "audio_encoder": 0, "adapters": 0, "mapping": 0, "llm": 0, "lora": 0}
  names = {"sign": "sign_encoder", "lip": "lip_encoder", "audio": "audio_encoder"}
  for name, p in ref.named_parameters():         # tied embeddings counted once (named_parameters dedups)
    top = name.split(".", 1)[0]
    out[names.get(top, top)] += p.numel()
    if "lora_" in name:
      out["lora"] += p.numel()
  out["total"] = sum(v for k, v in out.items() if k != "lora")
  return out


def ours_counts(params) -> dict:
  from trimodal_jax.model import param_counts
  c = param_counts(params)
  out = {k: c.get(k, 0) for k in ("sign_encoder", "lip_encoder", "audio_encoder")}
  out["adapters"] = sum(c.get(f"{k}_adapter", 0) for k in ("sign", "lip", "audio"))
  out.update(mapping=c.get("mapping", 0), llm=c.get("llm", 0), lora=c.get("lora", 0))
  out["total"] = sum(v for k, v in out.items() if k != "lora")
  return out


# ----------------------------------------------------------------------------------------------- timing helpers

def _timed(fn):
  w, c = time.perf_counter(), time.process_time()
  out = fn()
  return out, time.perf_counter() - w, time.process_time() - c


def _stats(wall, cpu) -> dict:
  return {"median_s": round(statistics.median(wall), 4), "min_s": round(min(wall), 4),
          "cpu_s": round(statistics.median(cpu), 4)}


def compile_all(jobs: dict) -> dict:
  """{name: fn} -> {name: (fn(), wall s)}, one after another, before anything is timed (run concurrently they
  took as long: JAX compiles one module at a time)."""
  out = {}
  for k, fn in jobs.items():
    res, w, _ = _timed(fn)
    out[k] = (res, w)
  return out


# ----------------------------------------------------------------------------------------------- (1) train step

def train_batch(cfg, tok, batch_size: int):
  return make_batch(cfg, tok, tuple(MIX[i % len(MIX)] for i in range(batch_size)))


def init_variables(args) -> dict:
  """Our variables {"params", "batch_stats"} (unboxed), initialised once (one jitted model.init) and
  shared by every measurement: the regimes differ in what trains, not in the parameters."""
  import flax.linen as nn
  import jax

  from trimodal_jax import data as data_lib
  from trimodal_jax.task import make_task
  cfg = run_config("tiny", args.batch, args.frames, args.labels)
  batch = train_batch(cfg, data_lib.tokenizer(cfg), args.batch)
  task = make_task(cfg)
  # an "rbg" key: the same initialisers, compiled in ~10 CPU s instead of ~25 (threefry's hash per parameter)
  key = jax.random.key(int(cfg.trainer.seed), impl="rbg")
  return nn.meta.unbox(jax.jit(task.init_params)(key, batch))


def train_state(setup, variables, seed: int):
  """shared.train.TrainState from `variables` (copied: the step donates its state) with a fresh optimizer state
  over setup.trainable_keys: what setup.init_fn builds, without a second model.init."""
  import jax
  import jax.numpy as jnp

  from shared import train as train_lib
  v = dict(variables)
  params = v.pop("params")
  train_p = {k: x for k, x in train_lib.flat(params).items() if k in setup.trainable_keys}
  z = jnp.zeros((), jnp.int32)
  state = train_lib.TrainState(step=z, params=params, opt_state=setup.tx.init(train_p),
                               rng=jax.random.key_data(jax.random.key(seed)), nonfinite_run=z, nonfinite_total=z,
                               model_state=v)
  # every leaf its own fresh buffer (donation rejects a buffer passed twice, and `variables` must survive)
  return jax.device_put(jax.tree.map(jnp.copy, state), setup.state_shardings)


def prepare_train(regime: str, args, variables) -> dict:
  """Ours for `regime`: config, batch, shared.train.build, the TrainState and the step lowered (traced, not yet
  compiled: main compiles every lowered step and makes the decoder's first call before any timing)."""
  import jax

  from shared import train as train_lib
  from trimodal_jax import data as data_lib
  from trimodal_jax.task import make_task

  cfg = run_config(regime, args.batch, args.frames, args.labels)
  tok = data_lib.tokenizer(cfg)
  batch = train_batch(cfg, tok, args.batch)
  setup = train_lib.build(cfg, make_task(cfg), example_batch=batch)
  state = train_state(setup, variables, int(cfg.trainer.seed))
  dev_batch = jax.device_put(batch, setup.batch_shardings)
  return dict(regime=regime, cfg=cfg, tok=tok, batch=batch, setup=setup, state=state, dev_batch=dev_batch,
              lowered=setup.step_fn.lower(state, dev_batch))


def bench_train(prep: dict, compiled, compile_s: float, args, emit) -> None:
  """Time prep's step (`compiled`: its lowered step, compiled) against the torch reference."""
  import jax
  import torch

  from shared import train as train_lib
  regime, cfg, tok, batch = prep["regime"], prep["cfg"], prep["tok"], prep["batch"]
  setup, state, dev_batch = prep["setup"], prep["state"], prep["dev_batch"]
  tasks = tuple(MIX[i % len(MIX)] for i in range(args.batch))
  n_ours_train = sum(int(v.size) for k, v in train_lib.flat(state.params).items() if k in setup.trainable_keys)
  counts_ours = ours_counts(state.params)

  ref = build_torch(cfg)
  params = torch_trainable(ref, regime)
  ref.train()
  opt = torch.optim.AdamW(params, lr=float(cfg.trainer.optimizer.learning_rate), weight_decay=0.0, eps=1e-8)
  clip = float(cfg.trainer.optimizer.grad_clip_norm)
  tb = {k: torch.from_numpy(v) for k, v in batch.items()}
  counts_torch = torch_counts(ref)
  n_torch_train = sum(p.numel() for p in params)

  def ours_step():
    nonlocal state
    with jax.set_mesh(setup.mesh):
      state, metrics = compiled(state, dev_batch)
    return float(jax.block_until_ready(metrics["loss"]))

  def torch_step():
    opt.zero_grad(set_to_none=True)
    loss = ref.loss(tb)
    loss.backward()
    if clip > 0:
      torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return float(loss.item())

  first_ours, ours_first_s, _ = _timed(ours_step)
  first_torch, torch_first_s, _ = _timed(torch_step)
  for _ in range(args.warmup):
    ours_step()
    torch_step()
  wall = {"ours": [], "torch": []}
  cpu = {"ours": [], "torch": []}
  for _ in range(args.steps):
    for name, fn in (("ours", ours_step), ("torch", torch_step)):
      _, w, c = _timed(fn)
      wall[name].append(w)
      cpu[name].append(c)
  per = seq_tokens(cfg, tok)
  tokens = per * args.batch
  shape = dict(regime=regime, batch=args.batch, frames=args.frames, label_bucket=args.labels,
               instr_len=int(batch["instr_ids"].shape[1]), llm_positions=per, tasks=list(tasks),
               trainable=dict(encoders=list(cfg.train.encoders), llm=cfg.train.llm))
  emit({"bench": "param_counts", "regime": regime, "ours": counts_ours, "torch": counts_torch,
        "trainable_ours": n_ours_train, "trainable_torch": n_torch_train})
  s_ours, s_torch = _stats(wall["ours"], cpu["ours"]), _stats(wall["torch"], cpu["torch"])
  tps_ours, tps_torch = tokens / s_ours["median_s"], tokens / s_torch["median_s"]
  emit({"bench": "train_step", "impl": "ours_jax", **s_ours, "tokens_per_s": round(tps_ours, 1),
        "compile_s": round(compile_s, 2), "first_step_s": round(ours_first_s, 2), "first_loss": round(first_ours, 4),
        **shape})
  emit({"bench": "train_step", "impl": "torch_reference", **s_torch, "tokens_per_s": round(tps_torch, 1),
        "first_step_s": round(torch_first_s, 2), "first_loss": round(first_torch, 4), **shape})
  emit({"bench": "train_step", "summary": True, "regime": regime, "ours_tokens_per_s": round(tps_ours, 1),
        "reference_tokens_per_s": round(tps_torch, 1), "ratio": round(tps_ours / tps_torch, 3),
        "ratio_cpu": round(s_torch["cpu_s"] / s_ours["cpu_s"], 3)})


# ----------------------------------------------------------------------------------------------- (2) decode

def prepare_decode(args, variables) -> dict:
  """Ours: the AVSR batch and task.decoder (eos disabled); "call" = one decode (its first call compiles)."""
  from trimodal_jax import data as data_lib
  from trimodal_jax.task import make_task

  cfg = run_config("paper", args.decode_batch, args.frames, args.labels)
  tok = data_lib.tokenizer(cfg)
  batch = make_batch(cfg, tok, ("avsr",) * args.decode_batch, seed=1)
  dec = make_task(cfg).decoder
  dec.eos = ()                                   # no early stop: exactly max_new_tokens (module docstring)
  return dict(cfg=cfg, batch=batch, call=lambda: dec.tokens(variables, batch, "avsr"))


def bench_decode(prep: dict, out_ours, compile_s: float, args, emit) -> None:
  import torch

  cfg, batch, ours = prep["cfg"], prep["batch"], prep["call"]
  s = cfg.decode.speech
  beams, max_new = int(s.num_beams), int(cfg.decode.max_new_tokens)

  ref = build_torch(cfg).eval()
  llama = ref.llm.base_model.model               # LlamaForCausalLM with the LoRA layers injected
  llama.generation_config.eos_token_id = None
  llama.generation_config.pad_token_id = 0
  tb = {k: torch.from_numpy(v) for k, v in batch.items()}

  def reference():
    with torch.inference_mode():
      x, mask = ref.prefix(tb, "avsr")
      return llama.generate(inputs_embeds=x, attention_mask=mask, num_beams=beams, do_sample=False,
                            max_new_tokens=max_new, min_new_tokens=max_new, early_stopping=False,
                            eos_token_id=None, pad_token_id=0, num_return_sequences=1)

  out_ref, ref_first_s, _ = _timed(reference)
  wall = {"ours": [], "torch": []}
  cpu = {"ours": [], "torch": []}
  for _ in range(args.decode_repeats):
    for name, fn in (("ours", ours), ("torch", reference)):
      _, w, c = _timed(fn)
      wall[name].append(w)
      cpu[name].append(c)
  b = args.decode_batch
  common = dict(task="avsr", batch=b, frames=args.frames, num_beams=beams, temperature=float(s.temperature),
                max_new_tokens=max_new, prefix_len=int(batch["instr_ids"].shape[1]) + args.frames // 2)
  s_ours, s_torch = _stats(wall["ours"], cpu["ours"]), _stats(wall["torch"], cpu["torch"])
  u_ours, u_torch = b / s_ours["median_s"], b / s_torch["median_s"]
  emit({"bench": "decode_beam5", "impl": "ours_jax", **s_ours, "utterances_per_s": round(u_ours, 2),
        "compile_s": round(compile_s, 2), "generated": list(out_ours.shape), **common})
  emit({"bench": "decode_beam5", "impl": "torch_reference", **s_torch, "utterances_per_s": round(u_torch, 2),
        "first_call_s": round(ref_first_s, 2), "generated": list(out_ref.shape), **common})
  emit({"bench": "decode_beam5", "summary": True, "ours_utterances_per_s": round(u_ours, 2),
        "reference_utterances_per_s": round(u_torch, 2), "ratio": round(u_ours / u_torch, 3),
        "ratio_cpu": round(s_torch["cpu_s"] / s_ours["cpu_s"], 3)})


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--frames", type=int, default=64, help="video frames (25 fps); 4 mel frames each")
  ap.add_argument("--labels", type=int, default=16, help="target label bucket")
  ap.add_argument("--steps", type=int, default=5, help="timed train steps per side")
  ap.add_argument("--warmup", type=int, default=0, help="untimed steps per side after the first (untimed) one")
  ap.add_argument("--decode-batch", type=int, default=8)
  ap.add_argument("--decode-repeats", type=int, default=3)
  ap.add_argument("--regimes", default="paper,tiny")
  ap.add_argument("--no-decode", action="store_true")
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--out", default=DEFAULT_OUT, help="JSON lines file (rewritten); '' = stdout only")
  args = ap.parse_args()
  regimes = [r for r in args.regimes.split(",") if r]
  bad = sorted(set(regimes) - set(REGIMES))
  if bad:
    ap.error(f"--regimes: unknown {bad}; expected a subset of {sorted(REGIMES)}")

  import jax
  import torch
  torch.set_num_threads(args.threads)
  out = None
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out = open(args.out, "w")

  def emit(rec):
    line = json.dumps(rec)
    print(line, flush=True)
    if out is not None:
      out.write(line + "\n")
      out.flush()

  t0 = time.perf_counter()
  emit({"bench": "trimodal_speed", "header": True, "config": "configs/trimodal/tiny.py stage2",
        "torch_threads": torch.get_num_threads(), "jax_backend": jax.default_backend(),
        "jax_threads": f"XLA CPU default ({os.cpu_count()} cores)", "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "jax": jax.__version__, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])})
  variables = init_variables(args)
  preps = [prepare_train(r, args, variables) for r in regimes]
  jobs = {r: p["lowered"].compile for r, p in zip(regimes, preps)}
  if not args.no_decode:
    dprep = prepare_decode(args, variables)
    jobs["decode"] = dprep["call"]
  done = compile_all(jobs)
  for regime, prep in zip(regimes, preps):
    bench_train(prep, *done[regime], args, emit)
  if not args.no_decode:
    bench_decode(dprep, *done["decode"], args, emit)
  emit({"bench": "trimodal_speed", "done": True, "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()]})
  if out is not None:
    out.close()


if __name__ == "__main__":
  main()
