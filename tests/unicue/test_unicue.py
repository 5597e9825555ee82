"""UniCUE (unicue_jax) at micro size through shared.train: data, the alignment pool's pooling, stage 1 (CSR) trains
and its release loads in transformers, the mel VAE stage, stage 2 (CSV2S) reads both releases through init entries
(processor and VAE frozen, queries from the latent space) and generates, evaluate / infer / export, and the paper
config built abstractly. One module-scoped chain of workdirs (stage 1 -> vae -> stage 2), each trained once."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.unicue.tiny import get_config
from shared import train as train_lib
from shared.errors import ConfigError, DataError
from unicue_jax import data as data_lib
from unicue_jax.model import alignment_loss, masked_mean
from unicue_jax.task import make_task, teacher_forcing


def micro(arg: str = ""):
  """tiny.py shrunk: 32 px SynthCue frames, 16 px crops, 32-frame clips (longer SynthCue clips are dropped), 32-d everything."""
  cfg = get_config(arg)
  t = cfg.trainer
  t.total_steps, t.batch_size, t.log_every = 12, 8, 3
  t.eval_every = t.sample_every = 0
  t.checkpoint.every_steps, t.checkpoint.async_save = 12, False
  t.schedule.warmup_steps = 2
  t.optimizer.learning_rate = 3e-3
  cfg.data.update(dict(frame_size=32, frames=32, image_size=16, label_buckets=(4,), eval_samples=4, eval_batch_size=8))
  m = cfg.model
  m.processor.frontend.width = 4
  m.processor.update(dict(dim=32, layers=1, heads=2, ffn_dim=32, max_frames=32))
  m.mbart.update(dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16))
  m.adapter.update(dict(dim=32, heads=2, mlp_ratio=1))                    # 32 = 16 mel bins / 4 x 2 channels
  m.vae.update(dict(block_out_channels=(4, 8, 8), norm_num_groups=4, latent_channels=2,
                    mid_block_add_attention=False))
  m.unet.update(dict(in_channels=2 + m.time_channels, out_channels=2, block_out_channels=(8, 16), norm_num_groups=4,
                     attention_head_dim=2, cross_attention_dim=32))
  cfg.sampling.update(dict(steps=2, score_clips=4, template_clips=8))
  cfg.objective.scale_clips = 4
  return cfg


def _losses(wd, key="loss"):
  return [json.loads(l)[key] for l in open(os.path.join(wd, "metrics.jsonl")) if f'"{key}"' in l]


# ----------------------------------------------------------------------------------------------- pieces

def test_alignment_pool_pooling_makes_lengths_comparable():
  """masked_mean: padding and uniform time-stretching leave the pooled vector unchanged, so a 7-frame clip, its
  2x-stretched copy and a padded batch row all pool alike; L_S is 0 for aligned, 2 per stream for opposite."""
  rng = np.random.default_rng(0)
  z = rng.normal(size=(1, 7, 5)).astype(np.float32)
  padded = np.concatenate([z, rng.normal(size=(1, 5, 5)).astype(np.float32)], 1)
  mask = np.arange(12)[None] < 7
  stretched = np.repeat(z, 2, axis=1)
  a = masked_mean(jnp.asarray(z), jnp.ones((1, 7), bool))
  np.testing.assert_allclose(masked_mean(jnp.asarray(padded), jnp.asarray(mask)), a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(masked_mean(jnp.asarray(stretched), jnp.ones((1, 14), bool)), a, rtol=1e-5, atol=1e-6)
  t = jnp.broadcast_to(a[:, None], (1, 3, 5)) * 3.0                # 3 tokens: only the pooled direction matters
  same = alignment_loss(jnp.asarray(padded), jnp.asarray(padded), jnp.asarray(mask), t, jnp.ones((1, 3), bool))
  np.testing.assert_allclose(same, [0.0], atol=1e-6)
  opposite = alignment_loss(jnp.asarray(z), None, jnp.ones((1, 7), bool), -t, jnp.ones((1, 3), bool))
  np.testing.assert_allclose(opposite, [2.0], atol=1e-6)
  # contrastive: the matching pairs of a batch score lower than shuffled ones
  zb = jnp.asarray(rng.normal(size=(4, 6, 5)).astype(np.float32))
  m = jnp.ones((4, 6), bool)
  good = alignment_loss(zb, zb, m, zb, m, "contrastive")
  bad = alignment_loss(zb, zb, m, zb[::-1], m, "contrastive")
  assert float(good.mean()) < float(bad.mean())


def test_teacher_forcing_is_mbart_shift():
  tokens = jnp.asarray([[7, 8, 9], [5, 1, 1]], jnp.int32)
  mask = jnp.asarray([[1, 1, 1], [1, 0, 0]], bool)
  dec_in, labels, lmask = teacher_forcing(tokens, mask)
  np.testing.assert_array_equal(labels, [[7, 8, 9, 2], [5, 2, 1, 1]])        # y </s> <pad>
  np.testing.assert_array_equal(dec_in, [[2, 7, 8, 9], [2, 5, 1, 1]])        # </s> y  (decoder_start = eos)
  np.testing.assert_array_equal(lmask, [[1, 1, 1, 1], [1, 1, 0, 0]])


def test_prepare_synthcue_and_the_cued_csv_layout(tmp_path):
  cfg = micro()
  d = cfg.data
  v = data_lib.vocab(d)
  assert v.tokens[:4] == ["<s>", "<pad>", "</s>", "<unk>"]
  src = data_lib.source(d, "train")
  samples = [src[i] for i in range(6)]
  s = next(x for x in samples if x["video"].shape[0] <= d.frames)
  long = next(x for x in samples if x["video"].shape[0] > d.frames)
  ex = data_lib.prepare(s, data=d, vocab=v, parts=("visual", "tokens", "mel"))
  t = s["video"].shape[0]
  assert ex["video"].shape == ex["pose_maps"].shape == (t, 16, 16, 3) and ex["video"].dtype == np.uint8
  assert ex["pose_maps"].max() > 0 and ex["mel"].shape == (128, 64)
  assert data_lib.decode_tokens(v, list(ex["tokens"]) + [2, 1], "chars") == s["text"]
  assert data_lib.prepare(long, data=d, vocab=v) is None                    # longer than data.frames: dropped
  with pytest.raises(DataError, match="pose"):
    data_lib.prepare({**s, "pose": np.zeros((t, 7, 3), np.float32)}, data=d, vocab=v)
  # the same clip through the Chinese cued-speech CSV layout (mp4 + wav + pose .npy + manifest)
  from shared.data.layouts import write_cued
  write_cued(str(tmp_path), "train", [s])
  units = tmp_path / "units.txt"
  units.write_text("\n".join(sorted(set(s["text"]))) + "\n", encoding="utf-8")
  d2 = micro().data
  d2.update(dict(source="cued", root=str(tmp_path), units=str(units)))
  v2 = data_lib.vocab(d2)
  ex2 = data_lib.prepare(data_lib.source(d2, "train")[0], data=d2, vocab=v2, parts=("visual", "tokens", "mel"))
  assert ex2["video"].shape == ex["video"].shape
  assert np.abs(ex2["video"].astype(int) - ex["video"]).mean() < 8          # h264 round trip
  np.testing.assert_array_equal(ex2["pose_maps"], ex["pose_maps"])
  np.testing.assert_allclose(ex2["mel"], ex["mel"], atol=1e-3)


def test_cue_ablations_keep_one_half_of_cued_speech():
  """lips_only: the same clip without the hand (video and pose); hand_only: the mouth boxed out (a fixed box over
  the clip) and the lip keypoints gone; the other half unchanged."""
  full, lips, hand = micro().data, micro("lips_only").data, micro("hand_only").data
  full.image_size = lips.image_size = hand.image_size = 32
  v = data_lib.vocab(full)
  i = next(i for i in range(8) if data_lib.source(full, "train")[i]["video"].shape[0] <= full.frames)
  sf, sl, sh = (data_lib.source(d, "train")[i] for d in (full, lips, hand))
  assert sf["text"] == sl["text"] == sh["text"]
  ef, el, eh = (data_lib.prepare(s, data=d, vocab=v) for s, d in ((sf, full), (sl, lips), (sh, hand)))
  assert (sl["pose"][:, 8:, 2] == 0).all() and (sf["pose"][:, 8:14, 2] > 0).all()      # no hand in lips_only
  assert (np.abs(ef["video"].astype(int) - el["video"]).max(-1) > 30).mean() > 0.02         # the hand is gone
  assert not np.array_equal(ef["pose_maps"], el["pose_maps"])
  # hand_only: frames equal outside the mouth box, black inside it in every frame; lips' motion removed
  changed = (ef["video"] != eh["video"]).any(-1).any(0)                                   # [S, S]
  assert 0 < changed.mean() < 0.25
  ys, xs = np.nonzero(changed)
  assert (eh["video"][:, ys.min() + 1:ys.max(), xs.min() + 1:xs.max()] == 0).mean() > 0.5
  kp = data_lib.keypoints(sh["pose"], *sh["video"].shape[1:3])
  _, kp_h = data_lib.hide_mouth(sh["video"], kp)
  assert (kp_h["face"][:, 48:68, 2] == 0).all() and (kp["face"][:, [48, 54], 2] > 0).all()
  bad = micro().data
  bad.cues = "lips"
  bad.source = "cued"
  with pytest.raises(ConfigError, match="data.cues"):
    data_lib.source(bad, "train")


def test_config_checks():
  cfg = micro("v2s")
  with pytest.raises(ConfigError, match="init.vae.path"):
    make_task(cfg)
  cfg = micro("v2s")
  cfg.objective.require_vae_init = False
  with pytest.raises(ConfigError, match="init.processor.path"):
    make_task(cfg)
  cfg = micro()
  cfg.model.processor.dim = 48
  with pytest.raises(ConfigError, match="d_model"):
    make_task(cfg)
  # `finetune`: the processor still starts from the stage-1 release, but trains in stage 2
  ft, frozen = get_config("v2s,finetune,csr=REL"), get_config("v2s,csr=REL")
  assert (ft.model.freeze_processor, frozen.model.freeze_processor) == (False, True)
  assert ft.init.processor.path == frozen.init.processor.path == "REL/processor.safetensors"


# ----------------------------------------------------------------------------------------------- the chain

@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uc_csr"))
  cfg = micro()
  cfg.trainer.optimizer.learning_rate, cfg.trainer.schedule.name = 1e-2, "constant"
  task = make_task(cfg)
  result = train_lib.train(cfg, task, wd)
  from unicue_jax.export import export
  rel = export(wd, str(tmp_path_factory.mktemp("uc_csr_rel")))
  return cfg, task, result, wd, rel


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uc_vae"))
  cfg = micro("vae")
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 4
  cfg.trainer.log_every = 2
  result = train_lib.train(cfg, make_task(cfg), wd)
  from unicue_jax.export import export
  rel = export(wd, str(tmp_path_factory.mktemp("uc_vae_rel")))
  return cfg, result, wd, rel


@pytest.fixture(scope="module")
def stage2(stage1, vae, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("uc_v2s"))
  cfg = micro(f"v2s,csr={stage1[4]},vae={vae[3]}")
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 3
  task = make_task(cfg)
  result = train_lib.train(cfg, task, wd)
  return cfg, task, result, wd


def test_stage1_trains_and_evaluates(stage1):
  cfg, task, result, wd, _ = stage1
  assert result.step == 12
  losses, ce = _losses(wd), _losses(wd, "ce_per_token")           # means over 3 steps
  assert len(losses) == 4 and np.all(np.isfinite(losses)) and losses[-1] < 0.85 * losses[0], losses
  assert ce[-1] < ce[0] - 0.1, ce                                          # L_R falls too, not only L_S
  mean = np.asarray(result.state.model_state["batch_stats"]["processor"]["frontend"]["bn1"]["mean"])
  assert np.abs(mean).max() > 1e-3                                        # BatchNorm statistics moved
  p = result.state.params
  assert not np.asarray(p["mbart"]["final_logits_bias"]).any()            # frozen (a buffer in transformers)
  from unicue_jax.evaluate import evaluate
  step, m = evaluate(wd, n=4, tts=True)                                  # + the CSR -> TTS stand-in
  assert step == 12 and m["n"] == 4 and 0.0 <= m["cer"]
  assert m["tts_ser"] >= 0 and np.isfinite([m["tts_ser_real"], m["tts_sync"], m["tts_sync_real"]]).all(), m


def test_stage1_release_loads_in_transformers(stage1):
  """REL/mbart is a transformers MBartForConditionalGeneration whose decoder, given Z_mv as encoder outputs,
  gives our CSR decoder's logits; its encoder gives our text encoder's Z_t."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg, task, result, wd, rel = stage1
  info = json.load(open(os.path.join(rel, "release.json")))
  assert info["stage"] == "csr" and set(info["files"]) >= {"mbart", "processor", "processor_frontend"}
  hf = transformers.MBartForConditionalGeneration.from_pretrained(os.path.join(rel, "mbart")).eval()
  batch = next(data_lib.eval_batches(cfg.data, task.vocab, "test", 2, 2, task.parts))[0]
  dec_in, labels, lmask = teacher_forcing(jnp.asarray(batch["tokens"]), jnp.asarray(batch["tokens_mask"]))
  out = jax.jit(task.model.apply)(result.state.variables, jnp.asarray(batch["video"]),
                                  jnp.asarray(batch["pose_maps"]), jnp.asarray(batch["video_mask"]), dec_in, lmask,
                                  labels, lmask)
  with torch.no_grad():
    theirs = hf(encoder_outputs=(torch.from_numpy(np.asarray(out["z_mv"])),),
                attention_mask=torch.from_numpy(np.asarray(batch["video_mask"]).astype(np.int64)),
                decoder_input_ids=torch.from_numpy(np.asarray(dec_in, np.int64)),
                decoder_attention_mask=torch.from_numpy(np.asarray(lmask).astype(np.int64))).logits.numpy()
    z_t = hf.model.encoder(input_ids=torch.from_numpy(np.asarray(labels, np.int64)),
                           attention_mask=torch.from_numpy(np.asarray(lmask).astype(np.int64))).last_hidden_state
  valid = np.asarray(lmask)
  np.testing.assert_allclose(theirs[valid], np.asarray(out["logits"])[valid], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(z_t.numpy()[valid], np.asarray(out["z_t"])[valid], rtol=1e-4, atol=1e-4)


def test_vae_stage_trains(vae):
  cfg, result, wd, rel = vae
  losses = _losses(wd)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert os.path.isfile(os.path.join(rel, "vae", "diffusion_pytorch_model.safetensors"))


def test_stage2_reads_both_releases_frozen_and_generates(stage1, vae, stage2, tmp_path):
  cfg, task, result, wd = stage2
  p, s1 = result.state.params, stage1[2].state
  report = json.load(open(os.path.join(wd, "init_report.json")))
  assert {k: report[k]["missing"] for k in report} == {"processor": [], "processor_frontend": [], "vae": []}
  for a, b in zip(jax.tree.leaves(p["processor"]), jax.tree.leaves(s1.params["processor"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))            # frozen, equal to stage 1's
  np.testing.assert_array_equal(np.asarray(result.state.model_state["batch_stats"]["processor"]["frontend"]["bn1"]
                                           ["var"]),
                                np.asarray(s1.model_state["batch_stats"]["processor"]["frontend"]["bn1"]["var"]))
  for a, b in zip(jax.tree.leaves(p["vae"]), jax.tree.leaves(vae[1].state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  scale = float(p["latent_scale"])
  assert scale != 1.0 and np.isfinite(scale)                                # scale_by_std at the fresh start
  q = np.asarray(p["adapter"]["queries"])
  assert q.shape == (32, 32) and 0.2 < float(q.std()) < 5.0                # latent-space queries (scaled latents)
  assert np.all(np.isfinite(_losses(wd)))
  from unicue_jax.evaluate import evaluate
  step, m = evaluate(wd, n=4)
  assert step == 3 and {"ser", "ser_chance", "ser_real", "sync", "sync_shuffled", "sync_real"} <= set(m)
  assert np.isfinite([m["eps_mse"], m["eps_mse_shuffled"], m["eps_mse_zero"], m["spk_sim"]]).all(), m
  # infer: a held-out clip written as mp4 + pose .npy -> transcript (stage 1) and speech (stage 2)
  from shared.data.media import write_mp4
  from unicue_jax.infer import infer
  src = data_lib.source(cfg.data, "test")
  s = next(src[i] for i in range(30) if src[i]["video"].shape[0] <= cfg.data.frames)
  clip = str(tmp_path / "clip.mp4")
  write_mp4(clip, s["video"], fps=25)
  np.save(str(tmp_path / "clip_pose.npy"), s["pose"])
  rows = infer([clip], csr_workdir=stage1[3], v2s_workdir=wd, out_dir=str(tmp_path / "out"))
  assert "text" in rows[0] and os.path.isfile(rows[0]["wav"]) and rows[0]["vocoder"].startswith("griffin-lim")
  # export: diffusers-layout UNet / VAE that shared.weights reads back, adapter + processor safetensors
  from shared.weights import load_pretrained
  from unicue_jax.export import export
  rel = export(wd, str(tmp_path / "rel"))
  _, unet = load_pretrained(os.path.join(rel, "unet"))
  np.testing.assert_array_equal(np.asarray(unet["conv_in"]["kernel"]), np.asarray(p["unet"]["conv_in"]["kernel"]))
  from safetensors.numpy import load_file
  ad = load_file(os.path.join(rel, "adapter.safetensors"))
  np.testing.assert_allclose(ad["latent_scale"], scale)
  np.testing.assert_array_equal(ad["adapter/queries"], q)


def test_stage2_oracle_conditions_on_the_true_syllables(vae, tmp_path):
  """The diagnostic oracle (tiny.py word `oracle`): SynthCue's per-frame syllable ids, an embedding in place of the
  processor (no stage-1 release), gradients reach it, and generation reads the ids; trained on the v target
  (word `vpred`), which the sampler and condition_use read."""
  cfg = micro(f"v2s,oracle,vpred,vae={vae[3]}")
  assert cfg.objective.prediction_type == "v_prediction"
  cfg.trainer.total_steps = cfg.trainer.checkpoint.every_steps = 2
  task = make_task(cfg)
  assert "syllables" in task.parts and task.model_config.oracle_units == 397
  s = data_lib.source(cfg.data, "train")[0]
  ids = data_lib.frame_syllables(s)
  inside = np.zeros(len(ids), bool)
  assert ids.shape == (s["video"].shape[0],)
  for (a, b), sid in zip(s["syllable_frames"], s["syllable_ids"]):
    assert (ids[a:b] == sid + 1).all()
    inside[a:b] = True
  assert not ids[~inside].any() and inside.any()
  with pytest.raises(DataError, match="syllable_frames"):
    data_lib.frame_syllables({"path": "clip.mp4"})
  result = train_lib.train(cfg, task, str(tmp_path / "wd"))
  v = result.state.variables
  assert "processor" not in v["params"] and np.all(np.isfinite(_losses(str(tmp_path / "wd"))))
  batch = next(data_lib.eval_batches(cfg.data, None, "test", 8, 8, task.parts))[0]
  assert batch["syllables"].shape == (8, cfg.data.frames) and batch["syllables"].any()
  from unicue_jax.model import UniCueV2S
  args = [jnp.asarray(batch[k]) for k in ("video", "pose_maps", "video_mask")]

  def ctx_norm(params):
    ctx, _ = task.model.apply({**v, "params": params}, *args, syllables=jnp.asarray(batch["syllables"]),
                              method=UniCueV2S.condition)
    return jnp.sum(ctx ** 2)
  assert float(jnp.abs(jax.grad(ctx_norm)(v["params"])["oracle"]["embedding"]).sum()) > 0
  gen = task.generator.generate(v, batch)
  gen0 = task.generator.generate(v, {**batch, "syllables": np.zeros_like(batch["syllables"])})
  assert np.isfinite(gen).all() and np.abs(gen - gen0).max() > 1e-6
  with pytest.raises(ConfigError, match="syllables"):
    task.generator.generate(v, {k: x for k, x in batch.items() if k != "syllables"})
  from unicue_jax.evaluate import condition_use
  use = condition_use(task, v, cfg, "test", 4)
  assert np.isfinite(list(use.values())).all() and use["eps_mse_zero"] != use["eps_mse"], use


def test_paper_config_builds_abstractly(tmp_path):
  """configs/unicue/paper.py at paper size under jax.eval_shape (no memory): MBart-large-50 sizes, ResNet-18
  processor, AudioLDM-s-full UNet and mel VAE."""
  from configs.unicue.paper import get_config as paper
  units = tmp_path / "units.txt"
  units.write_text("".join(chr(0x4E00 + i) + "\n" for i in range(3000)), encoding="utf-8")

  def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  cfg = paper()
  cfg.data.units = str(units)
  task = make_task(cfg)
  b, t, n = 1, 256, 16
  batch = {"video": np.zeros((b, t, 256, 256, 3), np.uint8), "pose_maps": np.zeros((b, t, 256, 256, 3), np.uint8),
           "video_mask": np.ones((b, t), bool), "tokens": np.full((b, n), 5, np.int32),
           "tokens_mask": np.ones((b, n), bool), "mel": np.zeros((b, 1024, 64), np.float32)}
  shapes = nn.meta.unbox(jax.eval_shape(task.init_params, jax.random.key(0), batch))
  p = shapes["params"]
  vocab = 3004
  assert p["mbart"]["shared"]["embedding"].shape == (vocab, 1024)
  mbart = count(p["mbart"]) - vocab * 1024
  assert 350e6 < mbart < 360e6, mbart        # MBart-large-50 (611M) less its 250054 x 1024 table
  assert 11e6 < count(p["processor"]["frontend"]) < 11.3e6                  # ResNet-18 without fc
  cfg2 = paper("v2s")
  cfg2.objective.require_vae_init = cfg2.objective.require_processor_init = False
  task2 = make_task(cfg2)
  p2 = nn.meta.unbox(jax.eval_shape(task2.init_params, jax.random.key(0), batch))["params"]
  assert 54e6 < count(p2["vae"]) < 57e6, count(p2["vae"])                   # AudioLDM mel VAE 55.4M
  assert 170e6 < count(p2["unet"]) < 200e6, count(p2["unet"])               # AudioLDM-s-full UNet ~185M
  assert p2["adapter"]["queries"].shape == (256, 128)
