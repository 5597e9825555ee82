"""Tri-modal (sign / lip / audio -> text) at CPU size on SynthCue: `sign` mode (signing videos whose glosses may
share a manual form and differ by mouthing: SLT) and `speech` mode (mouth crops + speech audio: VSR / ASR / AVSR).

Model (trimodal_jax/model.py, the paper's figure at small widths):
  sign encoder   Video Swin, 4 stages as Swin-T (embed 16, depths (1, 1, 1, 1), heads (2, 4, 8, 16), window
                 (2, 4, 4)) -> 128-d, one 4-frame clip per frame (25 Hz); on 32 x 32 frames the last stage's grid
                 is 1 x 1, so the pooled feature keeps where the hands are (patch merging concatenates
                 neighbours; a 2-stage 4 x 4 grid averaged away that position and stayed at chance)
                                                           stand-in for the ISLR-pretrained Swin-T (768-d)
  lip encoder    AV-HuBERT video path, 2 layers, 64-d, ResNet-10 width 8 (PReLU), conv pos 16 / 4 groups
                                                           stand-in for AV-HuBERT Large (1024-d)
  audio encoder  Whisper encoder, 2 layers, 64-d, 80 mels  stand-in for Whisper-medium (1024-d)
  adapters       Conv1d k = stride 2 / 2 / 4 -> 12.5 Hz; concat 128 + 64 + 64 = 256 -> mapping 256 -> 160 -> 64
  LLM            LLaMA-architecture, 2 layers, 64-d, 4 heads / 2 KV, tied embeddings, LoRA r 4 / alpha 8 on
                 q, k, v, o                                stand-in for LLaMA-3.2-3B (a SynthCue-sentence LM)
Each stand-in is to be pretrained on SynthCue in the role the paper's pretrained part plays (isolated gloss
classification, a lip objective, speech recognition, sentence LM) and read through the `init` entries below
(empty paths: fresh weights). Training (trimodal_jax/task.py): stage 1 = VSR + SLT, stage 2 = all four.
`get_config("stage1" | "stage2" [",frozen"])` (frozen: encoders frozen, LoRA only); the data section is read by trimodal_jax/data.py.
"""
import ml_collections

from shared.errors import ConfigError

from shared.config import model_section, trainer_config
from shared.weights.init import init_entry
from trimodal_jax.model import TriModalConfig

STAGES = ("stage1", "stage2")
# task sampling ratios per stage (paper: stage 1 VSR + SLT; stage 2 all four, best VSR:ASR:AVSR = 1/4 : 1/4 : 1/2
# with SLT kept; the SLT share of the stage-2 mix is not given: ours, half of the batches)
RATIOS = {"stage1": dict(slt=0.5, vsr=0.5, asr=0.0, avsr=0.0),
          "stage2": dict(slt=0.5, vsr=0.125, asr=0.125, avsr=0.25)}


def parse_stage(arg: str) -> str:
  stage = (arg or "stage1").split(",")[0]
  if stage not in STAGES:
    raise ConfigError(f"configs/trimodal: unknown stage {arg!r} (expected one of {STAGES})")
  return stage


def parse_words(arg: str) -> set:
  """The words after the stage ("stage2,frozen"): "frozen" = the paper's regime (encoders frozen, only the LLM's
  LoRA factors + adapters + mapping train; for pretrained stand-ins read through `init`)."""
  words = set((arg or "").split(",")[1:]) - {""}
  if words - {"frozen"}:
    raise ConfigError(f"configs/trimodal: unknown words {sorted(words - {'frozen'})} in {arg!r} (known: frozen)")
  return words


def get_config(arg: str = ""):
  stage, words = parse_stage(arg), parse_words(arg)
  c = ml_collections.ConfigDict()
  c.stage = stage
  # tri-stage LR (paper: warm-up then decay, peak 1e-4; tiny steps scaled down); init / final ratio: the paper
  # gives none, fairseq's tri_stage defaults (init_lr_scale 0.01, final_lr_scale 0.01)
  steps = {"stage1": (200, 1800), "stage2": (50, 1450)}[stage]
  c.trainer = trainer_config(
      total_steps=sum(steps), batch_size=8, log_every=25, eval_every=500, sample_every=0,
      optimizer=dict(name="adamw", learning_rate=1e-3, weight_decay=0.0),
      schedule=dict(name="tri_stage", warmup_steps=steps[0], hold_steps=0, decay_steps=steps[1], init_ratio=0.01,
                    final_ratio=0.01),
      # the paper keeps the best checkpoint by held-out next-token accuracy beside the last one: DIR/best
      checkpoint=dict(every_steps=500, keep=4, best="val_token_acc", best_mode="max"),
      precision=dict(compute_dtype="float32"),
      # the mesh: FSDP over the LLM, data parallel over the encoders (kept whole on every device; with
      # mesh fsdp = 1, as here, nothing is sharded anyway)
      replicate=("sign_encoder/", "lip_encoder/", "audio_encoder/"))
  c.data = ml_collections.ConfigDict(dict(
      source="synthcue", seed=0, num_samples=100_000, lexicon_size=24, max_homophones=3, n_speakers=8,
      n_test_speakers=2, clauses=(1, 1), fps=25, sample_rate=16000, shared_sign_fraction=0.3,
      # sign mode: frames resized to sign_size (RGB, Kinetics-normalised); speech mode: lip_size mouth crops,
      # random crop `crop` + flip (VSR / AVSR), 80-mel Whisper log-mels of the clip's audio (4 per video frame)
      sign_frame_size=64, sign_size=32, lip_size=28, crop=24, flip=True, n_mels=80,
      word_drop=(0.0, 0.2),                                      # SLT target-word dropping (stage 1 and 2)
      babble_p=0.75, babble_snr=(-5, 0, 5, 10, 15, 20),          # stage 2, ASR / AVSR
      max_frames_per_device=400, frame_buckets=(32, 48, 64, 96), label_buckets=(8, 16, 24),
      eval_split="test", eval_samples=64,
      # "" = sign frames; FEAT = precomputed sign features (trimodal_jax.extract) with "sign" in model.precomputed
      sign_features=""))
  c.tasks = ml_collections.ConfigDict(RATIOS[stage])
  # what trains (trimodal_jax/task.py): adapters + mapping always; the LLM: "lora" (only the LoRA factors, as the
  # paper) or "all"; the encoders named here. The tiny stand-ins start fresh (empty init paths), so all of them
  # train; with pretrained stand-ins read through `init`, set encoders=() and llm="lora" (paper.py does)
  c.train = ml_collections.ConfigDict(dict(encoders=("sign", "lip", "audio"), llm="all"))
  if "frozen" in words:
    c.train = ml_collections.ConfigDict(dict(encoders=(), llm="lora"))
  t = c.trainer
  dt = t.precision.get_ref("compute_dtype")
  remat = t.get_ref("remat")
  c.model = model_section(
      TriModalConfig,
      sign=dict(patch_size=(2, 4, 4), embed_dim=16, depths=(1, 1, 1, 1), num_heads=(2, 4, 8, 16),
                window_size=(2, 4, 4),
                mlp_ratio=2.0, in_channels=3, clip_window=4, clip_stride=1, clip_padding="same", dtype=dt,
                remat_policy=remat),
      lip=dict(layers=2, dim=64, ffn=128, heads=4, conv_pos=16, conv_pos_groups=4,
               resnet=dict(block="basic", layers=(1, 1, 1, 1), act="prelu", width=8, stem="taps", dtype=dt),
               dtype=dt, remat_policy=remat),
      audio=dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                 max_source_positions=500, dtype=dt, remat_policy=remat),
      llm=dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
               head_dim=16, rms_eps=1e-5, rope_theta=10000.0, tie_embeddings=True, max_position_embeddings=512,
               family="llama", bos_token_id=1, eos_token_id=(2,),     # the SynthCue tokenizer's <s>, </s>
               dtype=dt, remat_policy=remat),
      lora=dict(rank=4, alpha=8.0, dropout=0.05, targets=("q_proj", "k_proj", "v_proj", "o_proj")),
      sign_stride=2, lip_stride=2, audio_stride=4, mapping_hidden=0, mapping_act="relu", dtype=dt)
  c.decode = ml_collections.ConfigDict(dict(
      max_new_tokens=24,
      slt=dict(method="greedy", num_beams=1, temperature=1.0),            # paper: greedy for SLT
      speech=dict(method="beam", num_beams=5, temperature=0.3)))          # paper: beam 5, T 0.3 (ASR/VSR/AVSR)
  c.tokenizer = ml_collections.ConfigDict(dict(path=""))                  # "": the SynthCue sentence tokenizer
  # pretrained parts (stand-in pretraining runs here; the paper's checkpoints in paper.py), by param prefix
  c.init = ml_collections.ConfigDict(dict(
      sign=init_entry(prefix="sign_encoder", family="swin3d"),
      lip=init_entry(prefix="lip_encoder", family="avhubert"),
      audio=init_entry(prefix="audio_encoder", family="whisper"),
      llm=init_entry(prefix="llm", family="llm", allow_missing=True),     # LoRA leaves keep their init
      # stage 2 starts from a stage-1 run: --config.init.stage1.path=STAGE1_WORKDIR (its newest checkpoint:
      # params + lip BatchNorm statistics; applied after the entries above, which it then overrides)
      stage1=init_entry(prefix="", family="workdir")))
  return c
