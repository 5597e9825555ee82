"""Tri-modal at the paper's size (SPECS.md § Tri-modal): How2Sign (SLT) + LRS3 (VSR / ASR / AVSR).

  sign encoder   Video Swin-T (patch (2, 4, 4), embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window
                 (8, 7, 7)), 768-d, one 16-frame clip per frame (25 Hz); ISLR-pretrained on How2Sign in the paper
  lip encoder    AV-HuBERT Large video path (24 layers, 1024-d, ResNet-18 PReLU front end), 25 Hz
  audio encoder  Whisper-medium encoder (24 layers, 1024-d, 80 mels), 50 Hz
  adapters       Conv1d k = stride 2 / 2 / 4 -> 12.5 Hz; concat 768 + 1024 + 1024 = 2816 -> 2944 -> 3072
  LLM            LLaMA-3.2-3B, LoRA r 16 / alpha 32 (dropout 0.05, MMS-LLaMA) on q, k, v, o
  schedule       tri-stage, peak 1e-4: stage 1 (VSR + SLT) 18K warm-up / 36K decay; stage 2 (all four) 500 /
                 29.5K; init / final ratio not in the paper: fairseq's tri_stage defaults (0.01 / 0.01)
  batches        at most 1,250 video frames per device (8 x A6000 in the paper), length-bucketed

Pretrained weights (local directories; empty = not read): --config.init.sign.path=DIR (a swin3d directory:
config.json + safetensors, `python -m shared.weights import` of the ISLR Swin-T state dict),
--config.init.lip.path=DIR (AV-HuBERT Large converted to safetensors: the official .pt is a pickle, converted
only behind an explicit --trust-pickle, see shared/weights/avhubert_family.py), --config.init.audio.path=DIR
(openai/whisper-medium or whisper-medium.en, a transformers directory: the encoder is read),
--config.init.llm.path=DIR (meta-llama/Llama-3.2-3B, transformers directory) and --config.tokenizer.path=DIR
(the same LLaMA directory).
Data (trimodal_jax/real_data.py): --config.data.how2sign.root=H2S --config.data.how2sign.lip_root=H2S_LIPS
(the signers' 96 x 96 mouth-ROI mp4s, prepared offline with a facial landmark detector, same relative names as the
clips) --config.data.lrs3.root=LRS3 [--config.data.lrs3.lip_root=LRS3_LIPS (auto_avsr-style 96 x 96 mouth crops;
empty: a fixed mouth box of the 224 x 224 face frames, an approximation)]. Splits: How2Sign train / val / test, LRS3
pretrain+trainval / (none) / test. Sign frames: centre square crop of the 1280 x 720 rgb_front clip -> 224 x 224
(the paper crops the signer following LiTFiC); lips 96 -> random / centre crop 88; audio 16 kHz Whisper log-mels.
Stage 2's babble noise (data.babble_p) reads the NOISEX-92 babble recording at data.babble_path (a local 16 kHz
wav; trimodal_jax/data.babble_pool cuts it into 16 segments, mixed 3 at a time); stage 2 needs it set.

Mesh: trainer.mesh fsdp = every device (data 1): the batch is split over all devices (each runs the encoders on
its own examples: data parallel); LLaMA's weights have their "embed" axis sharded over fsdp (ZeRO-3), while the
frozen encoders (trainer.replicate = sign_encoder/, lip_encoder/, audio_encoder/, set in tiny.py) are kept whole
on every device: no all-gather of them per step, at the cost of their full copy per chip.

Measured memory (shared/scaling/aot.py: the real stage-1 train step lowered on abstract shapes - batch_spec at the
largest buckets: 600 frames, 128 target tokens - and compiled by libtpu's XLA:TPU for the slice; no weights, no
data; make_task's checks met by a stand-in tokenizer directory, TOK = the SynthCue sentence tokenizer saved with
save_pretrained: 14 instruction tokens, LLaMA's would be a few more; `python -m shared.scaling compile --config
configs/trimodal/paper.py:stage1 --topology v5p-8 --config.tokenizer.path=TOK`): 3.906 B parameters, 33.99 M
trainable (LoRA 9.2 M, adapters 7.5 M, mapping 17.3 M); remat full, bf16 compute, float32 params.
These were measured with the encoders FSDP-sharded too (before trainer.replicate); kept whole, they add their
unsharded share per chip - about 0.66 B float32 weights (Swin-T 28 M, AV-HuBERT Large video path ~0.33 B,
Whisper-medium encoder ~0.31 B) = 2.5 GiB x (1 - 1/fsdp): ~1.8 GiB at fsdp 4, ~2.1 GiB at fsdp 8 (arithmetic,
not re-measured); small beside the temporaries below.
  v5p-8 (4 chips, fsdp=4, batch 8 = 2 clips of 600 frames per chip): TrainState 3.74 GiB per chip (params 3.65,
    Adam 0.08); argument 3.91 GiB; XLA refuses the program: HLO temporaries 124.25 GiB > 95.74 GiB available
    (peak 128.2 GiB, 135 %): does not fit. The sign encoder dominates: one 16-frame Swin-T clip per frame is
    9,600 224 x 224 frames per 600-frame example (16x a plain video pass).
  v6e-8 (8 chips of 32 GiB, fsdp=8, batch 8 = 1 clip per chip, as the paper's 8 GPUs; `--topology v6e-8`):
    TrainState 1.89 GiB per chip (params 1.83, Adam 0.06); argument 1.98 GiB; XLA refuses: HLO temporaries
    45.45 GiB > 31.25 GiB available (peak 47.4 GiB): one 600-frame clip per device needs ~47 GiB - over v6e's
    32 GiB and an A6000's 48 GB (the paper's GPUs: at most 1,250 frames per GPU, with batches of shorter clips),
    likely within v5p's 95 GiB and an H200's 141 GB (v5p-16, 1 per chip, not measured: its full compile did not
    finish in 25 min on the shared 2-core machine; v5p's XLA:TPU temporaries need not equal v6e's).
    Stage 2 (`paper.py:stage2`: + the Whisper-medium encoder on 2,400 mel frames) on v6e-8: temporaries 45.46 GiB,
    peak 47.44 GiB - the same: the Swin clips dominate.
  FLOPs (shared/scaling/flops.py, analytic): 1.353e15 (stage 1) / 1.375e15 (stage 2) per step of 8 x 600 frames;
  XLA gives none when it refuses.

Offline sign features (the paper's Swin-T is frozen; sign-language systems such as LiTFiC and the How2Sign
baselines extract its features once): trimodal_jax/extract.py runs the model's own sign path (TriModal._sign, one
16-frame clip per frame, pooled, 768-d at 25 Hz) over every How2Sign clip of a split and writes
FEAT/<split>/<SENTENCE_NAME>.npy [T, 768] (float16 by default: 600 frames = 0.9 MB) + FEAT/<split>/index.json
(the model.sign section, sha256 of the weights files and of the params as run, width, dtype, count, failed clips):
  python -m trimodal_jax.extract --config configs/trimodal/paper.py:stage1 --config.init.sign.path=SWIN \
      --config.data.how2sign.root=H2S --modality sign --split train --out FEAT \
      [--process_index i --process_count n]          (then --split validation, --split test; reruns resume)
(only the How2Sign frames are read: no lip_root, no LRS3; the compute dtype is model.sign's, bfloat16 here: add
--config.trainer.precision.compute_dtype=float32 for float32 features). Train / evaluate on them with
  --config.data.sign_features=FEAT --config.model.precomputed='("sign",)'     (init.sign.path left empty)
the sign encoder is then not built (no sign_encoder/ params) and the batch's sign is [B, T, 768] float32.
Compiled memory of stage 1 with precomputed sign features on v6e-8 (`python -m shared.scaling compile --config
configs/trimodal/paper.py:stage1 --topology v6e-8 --config.tokenizer.path=TOK --config.model.precomputed='("sign",)'
--config.data.sign_features=FEAT`, TOK as above, FEAT an empty directory: only shapes are read): 3.879 B parameters
(no sign_encoder/: the Swin-T's 27.9 M gone), 33.99 M trainable, fsdp=8, one 600-frame clip per chip, batch_spec sign
[8, 600, 768] float32 (no frames): TrainState 3.93 GiB per chip (params 3.88, Adam 0.06; the encoders kept whole by
trainer.replicate), argument 3.94 GiB, HLO temporaries 2.00 GiB, peak 5.94 GiB of 32 GiB (19 %): fits, where the
in-graph Swin needed 47.4 GiB. Compiled by libtpu's XLA:TPU in 1,276 s on the 2-core box (2026-12-01; the JSON line:
benchmarks/results/trimodal_paper_compile.jsonl).

`python -m trimodal_jax.train --config configs/trimodal/paper.py:stage1 --workdir W ...` (a later step).
"""
import ml_collections

from configs.trimodal.tiny import RATIOS, parse_stage
from configs.trimodal.tiny import get_config as tiny_config
from shared.config import model_section
from trimodal_jax.model import TriModalConfig, llama32_3b
from trimodal_jax.real_data import how2sign_section, lrs3_section


def get_config(arg: str = ""):
  stage = parse_stage(arg)
  c = tiny_config(stage)
  warm, decay = {"stage1": (18_000, 36_000), "stage2": (500, 29_500)}[stage]
  c.trainer.update(dict(total_steps=warm + decay, batch_size=8, log_every=100, eval_every=2000, remat="full"))
  c.trainer.optimizer.update(dict(name="adamw", learning_rate=1e-4, weight_decay=0.0))
  c.trainer.schedule.update(dict(name="tri_stage", warmup_steps=warm, hold_steps=0, decay_steps=decay,
                                 init_ratio=0.01, final_ratio=0.01))
  c.trainer.precision.compute_dtype = "bfloat16"
  c.trainer.checkpoint.update(dict(every_steps=2000, keep=3))
  c.trainer.mesh.update(dict(data=1, fsdp=-1))     # FSDP over every device; the batch over all of them
  # trimodal_jax/real_data.py: How2Sign (SLT) + LRS3 (VSR / ASR / AVSR); roots, mouth-ROI dirs and split maps
  c.data = ml_collections.ConfigDict(dict(
      source="how2sign+lrs3", how2sign=how2sign_section(), lrs3=lrs3_section(), fps=25, sample_rate=16000,
      sign_frame_size=224, sign_size=224, lip_size=96, crop=88, flip=True, n_mels=80, word_drop=(0.0, 0.2),
      babble_p=0.75, babble_snr=(-5, 0, 5, 10, 15, 20), babble_path="",       # NOISEX babble (a local file)
      max_frames_per_device=1250, frame_buckets=(100, 200, 300, 400, 600), label_buckets=(32, 64, 128),
      eval_split="test", eval_samples=0,
      sign_features=""))          # FEAT: offline Swin-T features (docstring), with model.precomputed=("sign",)
  c.tasks = ml_collections.ConfigDict(RATIOS[stage])
  c.train = ml_collections.ConfigDict(dict(encoders=(), llm="lora"))    # pretrained encoders and LLaMA frozen
  t = c.trainer
  dt = t.precision.get_ref("compute_dtype")
  remat = t.get_ref("remat")
  c.model = model_section(
      TriModalConfig,
      sign=dict(patch_size=(2, 4, 4), embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                window_size=(8, 7, 7), mlp_ratio=4.0, in_channels=3, stochastic_depth_prob=0.0, clip_window=16,
                clip_stride=1, clip_padding="same", dtype=dt, remat_policy=remat),
      lip=dict(layers=24, dim=1024, ffn=4096, heads=16, conv_pos=128, conv_pos_groups=16,
               resnet=dict(block="basic", layers=(2, 2, 2, 2), act="prelu", width=64, stem="conv3d", dtype=dt),
               dtype=dt, remat_policy=remat),
      audio=dict(num_mel_bins=80, d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                 max_source_positions=1500, dtype=dt, remat_policy=remat),
      llm={**{f: getattr(llama32_3b(), f) for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                                     "num_heads", "num_kv_heads", "head_dim", "rms_eps", "rope_theta",
                                                     "rope_scaling", "tie_embeddings", "max_position_embeddings",
                                                     "family", "bos_token_id", "eos_token_id")},
           "dtype": dt, "param_dtype": t.precision.get_ref("param_dtype"), "remat_policy": remat},
      lora=dict(rank=16, alpha=32.0, dropout=0.05, targets=("q_proj", "k_proj", "v_proj", "o_proj")),
      sign_stride=2, lip_stride=2, audio_stride=4, mapping_hidden=0, mapping_act="relu", dtype=dt)
  c.decode.max_new_tokens = 128
  return c
