"""trimodal_jax.model: modality masking = zero features, equal 12.5 Hz lengths, prompt labels / loss / gradients
(tiny config, fp32), and the paper config's parameter counts (abstract shapes only)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.trimodal import paper as paper_cfg
from configs.trimodal import tiny as tiny_cfg
from shared.data.features import whisper_log_mel
from shared.decoding.search import LLMDecoder
from shared.errors import ConfigError
from shared.text.prompts import IGNORE
from trimodal_jax.model import (PRESENT, TASKS, TriModal, llm_module, loss, model_from_config, param_counts,
                                task_ids)

B, T = 2, 24                       # two clips of 24 video frames (0.96 s) -> 12 tokens at 12.5 Hz
LENS = np.array([24, 17], np.int32)


def _clip_audio(rng, n_frames):
  """A clip's audio: n_frames * 640 samples at 16 kHz -> Whisper log-mels [4 * n_frames, 80]."""
  wav = (0.1 * rng.standard_normal(n_frames * 640)).astype(np.float32)
  return whisper_log_mel(wav, n_samples=None)


def _inputs(seed, lens=LENS):
  rng = np.random.default_rng(seed)
  mels = np.zeros((B, 4 * T, 80), np.float32)
  for b, n in enumerate(lens):
    mels[b, :4 * n] = _clip_audio(rng, n)
  return dict(sign=rng.standard_normal((B, T, 32, 32, 3)).astype(np.float32), sign_len=np.asarray(lens),
              lip=rng.integers(0, 256, (B, T, 24, 24)).astype(np.uint8), lip_len=np.asarray(lens),
              audio=mels, audio_len=4 * np.asarray(lens))


def _batch(seed, tasks=("slt", "avsr")):
  rng = np.random.default_rng(100 + seed)
  return {**_inputs(seed), "instr_ids": rng.integers(3, 96, (B, 6)).astype(np.int32),
          "instr_len": np.array([6, 4], np.int32), "target_ids": rng.integers(3, 96, (B, 5)).astype(np.int32),
          "target_len": np.array([5, 3], np.int32), "task": task_ids(tasks)}


@pytest.fixture(scope="module")
def tiny():
  model = model_from_config(tiny_cfg.get_config())
  variables = nn.meta.unbox(jax.jit(model.init)({"params": jax.random.PRNGKey(0)}, _batch(0)))
  # LoRA's B starts at zero; give it values so the LoRA path is live in the checks below
  flat = traverse_util.flatten_dict(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(1), len(flat))
  flat = {k: (0.05 * jax.random.normal(kk, v.shape) if k[-1] == "lora_b" else v)
          for (k, v), kk in zip(flat.items(), keys)}
  variables = {**variables, "params": traverse_util.unflatten_dict(flat)}
  return model, variables


def _fn(model, method, **static):
  return jax.jit(lambda v, *a, **kw: model.apply(v, *a, **kw, **static, method=method))


def test_config_and_parts(tiny):
  model, variables = tiny
  c = model.config
  assert set(variables["params"]) == {"sign_encoder", "lip_encoder", "audio_encoder", "sign_adapter", "lip_adapter",
                                      "audio_adapter", "mapping", "llm"}
  assert "lip_encoder" in variables["batch_stats"]
  assert c.widths() == {"sign": 128, "lip": 64, "audio": 64} and c.concat_dim == 256
  assert c.hidden_dim == (256 + 64) // 2 and c.llm.lora.rank == 4
  p = variables["params"]
  assert p["sign_adapter"]["kernel"].shape == (2, 128, 128) and p["audio_adapter"]["kernel"].shape == (4, 64, 64)
  assert p["mapping"]["fc1"]["kernel"].shape == (256, 160) and p["mapping"]["fc2"]["kernel"].shape == (160, 64)
  with pytest.raises(ConfigError, match="model.precomputed"):
    c.replace(precomputed=("video",))
  with pytest.raises(ConfigError, match="llm.lora"):
    c.replace(llm=c.llm.replace(lora=c.lora.__class__(rank=2)))
  assert PRESENT.tolist() == [[True, True, False], [False, True, False], [False, False, True], [False, True, True]]


def test_modality_masking_is_zero_features(tiny):
  model, v = tiny
  x, y = _inputs(0), _inputs(1)
  dyn = np.array([0, 0], np.int32)
  adapted = _fn(model, TriModal.features, task=dyn)(v, **x)           # every modality: adapter outputs
  assert set(adapted) == {"sign", "lip", "audio"}
  mapping = jax.jit(lambda v, f: model.apply(v, f, method=lambda m, f: m.mapping(f)))

  # SLT = Map([F~_s, F~_v, 0]): the model's SLT tokens vs the audio adapter's output replaced by zeros by hand
  (fs, ns), (fv, nv), (fa, _) = adapted["sign"], adapted["lip"], adapted["audio"]
  hand = mapping(v, jnp.concatenate([fs, fv, jnp.zeros_like(fa)], -1))
  enc_slt = _fn(model, TriModal.encode, task="slt")
  u_slt, n_slt = enc_slt(v, **x)
  np.testing.assert_allclose(np.asarray(u_slt), np.asarray(hand), rtol=1e-6, atol=1e-6)
  assert np.abs(np.asarray(u_slt) - np.asarray(hand)).max() < 1e-6
  np.testing.assert_array_equal(n_slt, np.minimum(ns, nv))
  # ... and the audio input (here: a different clip's) changes nothing; per-example ids give the same tokens
  u2, _ = enc_slt(v, **{**x, "audio": y["audio"]})
  np.testing.assert_array_equal(np.asarray(u2), np.asarray(u_slt))
  u_dyn, n_dyn = _fn(model, TriModal.encode, task=dyn)(v, **x)
  np.testing.assert_allclose(np.asarray(u_dyn), np.asarray(u_slt), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(n_dyn, n_slt)
  # in fuse itself: garbage in the absent modality's slot gives the very same bits as zeros (one program)
  fuse = _fn(model, TriModal.fuse, task="slt")
  garbage = {**adapted, "audio": (1e3 * jnp.ones_like(fa), adapted["audio"][1])}
  zeros = {**adapted, "audio": (jnp.zeros_like(fa), adapted["audio"][1])}
  np.testing.assert_array_equal(np.asarray(fuse(v, garbage)[0]), np.asarray(fuse(v, zeros)[0]))

  # VSR ignores sign and audio entirely: other inputs, or none, give the same tokens
  vsr = _fn(model, TriModal.encode, task="vsr")
  a = vsr(v, **x)
  b = vsr(v, **{**x, "sign": y["sign"], "audio": y["audio"], "sign_len": np.array([3, 5]),
                "audio_len": np.array([7, 9])})
  c = vsr(v, lip=x["lip"], lip_len=x["lip_len"])
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  np.testing.assert_allclose(np.asarray(a[0]), np.asarray(c[0]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(a[1], LENS // 2)
  hand_vsr = mapping(v, jnp.concatenate([jnp.zeros_like(fs), fv, jnp.zeros_like(fa)], -1))
  np.testing.assert_allclose(np.asarray(a[0]), np.asarray(hand_vsr), rtol=1e-6, atol=1e-6)
  # the inputs do matter where the task reads them: SLT tokens change with the sign video
  u3, _ = enc_slt(v, **{**x, "sign": y["sign"]})
  assert np.abs(np.asarray(u3) - np.asarray(u_slt)).max() > 1e-3

  # a mixed batch: row 0 VSR, row 1 SLT; new sign / audio inputs leave row 0 bit-identical, change row 1
  mixed = _fn(model, TriModal.encode, task=task_ids(["vsr", "slt"]))
  m1, m2 = mixed(v, **x), mixed(v, **{**x, "sign": y["sign"], "audio": y["audio"]})
  np.testing.assert_array_equal(np.asarray(m1[0][0]), np.asarray(m2[0][0]))
  assert np.abs(np.asarray(m1[0][1]) - np.asarray(m2[0][1])).max() > 1e-3
  np.testing.assert_allclose(np.asarray(m1[0][0]), np.asarray(a[0][0]), rtol=1e-6, atol=1e-6)


def test_slt_without_lips_is_sign_alone(tiny):
  """model.slt_lip=False (the paper's SLT-from-signs ablation): SLT = Map([F~_s, 0, 0]), static and per-example;
  the lip video changes nothing; other tasks are untouched."""
  model, v = tiny
  ablated = TriModal(model.config.replace(slt_lip=False))
  assert ablated.config.task_modalities()["slt"] == ("sign",) and ablated.config.present()[0].tolist() == [
      True, False, False]
  x, y = _inputs(0), _inputs(1)
  adapted = _fn(model, TriModal.features, task=np.array([0, 0], np.int32))(v, **x)
  (fs, ns), (fv, _), (fa, _) = adapted["sign"], adapted["lip"], adapted["audio"]
  mapping = jax.jit(lambda v, f: model.apply(v, f, method=lambda m, f: m.mapping(f)))
  hand = mapping(v, jnp.concatenate([fs, jnp.zeros_like(fv), jnp.zeros_like(fa)], -1))
  u, n = _fn(ablated, TriModal.encode, task="slt")(v, **x)
  np.testing.assert_allclose(np.asarray(u), np.asarray(hand), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(n, ns)
  mixed = _fn(ablated, TriModal.encode, task=task_ids(["slt", "vsr"]))
  m1, m2 = mixed(v, **x), mixed(v, **{**x, "lip": y["lip"]})
  np.testing.assert_array_equal(np.asarray(m1[0][0]), np.asarray(m2[0][0]))     # SLT row: lips not read
  assert np.abs(np.asarray(m1[0][1]) - np.asarray(m2[0][1])).max() > 1e-3        # VSR row: lips read
  np.testing.assert_allclose(np.asarray(m1[0][0]), np.asarray(hand[0]), rtol=1e-6, atol=1e-6)


def test_adapters_give_one_length(tiny):
  model, v = tiny
  x = _inputs(0)
  assert x["audio"].shape[1] == 4 * T and _clip_audio(np.random.default_rng(0), T).shape == (4 * T, 80)
  adapted = _fn(model, TriModal.features, task=np.zeros(B, np.int32))(v, **x)
  for m, (f, n) in adapted.items():                    # 24 frames -> 12 tokens; the 17-frame clip -> 8
    assert f.shape[:2] == (B, T // 2), (m, f.shape)
    np.testing.assert_array_equal(n, LENS // 2, err_msg=m)
  enc = jax.jit(lambda v, x, task: model.apply(v, **x, task=task, method=TriModal.encode))
  for pair in (TASKS[:2], TASKS[2:]):                  # per-example ids: every task, one program
    _, n = enc(v, x, task_ids(pair))
    np.testing.assert_array_equal(n, LENS // 2, err_msg=str(pair))
  # precomputed sign features (config.precomputed): no sign encoder built, the same adapter output
  feats = jax.jit(lambda v, s, n: model.apply(v, s, n, False, method=TriModal._sign))(v, x["sign"], x["sign_len"])
  pre = TriModal(model.config.replace(precomputed=("sign",)))
  pv = {**v, "params": {k: p for k, p in v["params"].items() if k != "sign_encoder"}}
  got = jax.jit(lambda v, f, n: pre.apply(v, sign=f, sign_len=n, task=np.zeros(B, np.int32),
                                          method=TriModal.features))(pv, feats[0], feats[1])
  assert set(got) == {"sign"}
  np.testing.assert_allclose(np.asarray(got["sign"][0]), np.asarray(adapted["sign"][0]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(got["sign"][1], LENS // 2)
  # padding: the 17-frame clip's sign and lip tokens equal those of the clip run alone, unpadded
  alone = _fn(model, TriModal.features, task="slt")(v, sign=x["sign"][1:, :17], lip=x["lip"][1:, :17])
  for m in ("sign", "lip"):
    assert alone[m][0].shape[1] == 8
    np.testing.assert_allclose(np.asarray(adapted[m][0][1, :8]), np.asarray(alone[m][0][0]), rtol=1e-5, atol=1e-5,
                               err_msg=m)


def test_labels_loss_and_gradients(tiny):
  model, v = tiny
  batch = _batch(0, ("slt", "avsr"))
  out = jax.jit(lambda v, b: model.apply(v, b))(v, batch)
  labels, logits, mod_len = np.asarray(out["labels"]), np.asarray(out["logits"]), np.asarray(out["mod_len"])
  np.testing.assert_array_equal(mod_len, LENS // 2)
  li, lt = batch["instr_len"], batch["target_len"]
  assert labels.shape == (B, 6 + T // 2 + 5) and logits.shape == labels.shape + (96,)
  for b in range(B):                                  # [instruction, modality tokens, target], labels -100 elsewhere
    start = li[b] + mod_len[b]
    want = np.full(labels.shape[1], IGNORE)
    want[start:start + lt[b]] = batch["target_ids"][b, :lt[b]]
    np.testing.assert_array_equal(labels[b], want)
    np.testing.assert_array_equal(np.asarray(out["attention_mask"][b]), np.arange(labels.shape[1]) < start + lt[b])
  total, count, _ = loss(out["logits"], out["labels"])
  assert float(count) == lt.sum()
  z = logits.astype(np.float64)
  logp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
  oracle = -sum(float(logp[b, li[b] + mod_len[b] + j - 1, batch["target_ids"][b, j]])
                for b in range(B) for j in range(lt[b]))
  np.testing.assert_allclose(float(total), oracle, rtol=1e-5)

  # generation: the left-padded prefix [instruction, modality tokens] through shared.decoding's LLMDecoder gives
  # the teacher-forced logits of the last modality position (the first target token's distribution)
  pre = jax.jit(lambda v, b: model.apply(v, b, method=TriModal.prefix))(v, batch)
  first, _ = jax.jit(lambda p, e, m: LLMDecoder(llm_module(model.config)).prefill(
      p, inputs_embeds=e, attention_mask=m, max_new_tokens=2))(v["params"]["llm"], pre["inputs_embeds"],
                                                               pre["attention_mask"])
  want = np.stack([logits[b, li[b] + mod_len[b] - 1] for b in range(B)])
  np.testing.assert_allclose(np.asarray(first), want, rtol=1e-4, atol=1e-4)

  def objective(params, batch):
    o = model.apply({**v, "params": params}, batch)          # per-example task ids: one program for both calls
    return loss(o["logits"], o["labels"])[0]

  grad = jax.jit(jax.grad(objective))
  grads = grad(v["params"], {**batch, "task": task_ids(["slt", "slt"])})
  flat = {"/".join(k): np.abs(np.asarray(g)).max() for k, g in traverse_util.flatten_dict(grads).items()}
  for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
    assert flat[f"llm/layers/self_attn/{name}/lora_a"] > 0 and flat[f"llm/layers/self_attn/{name}/lora_b"] > 0
  for part in ("sign_adapter", "lip_adapter", "mapping/fc1", "mapping/fc2"):
    assert flat[f"{part}/kernel"] > 0 and flat[f"{part}/bias"] > 0, part
  assert max(g for k, g in flat.items() if k.startswith("sign_encoder")) > 0
  # SLT only: the audio path gets exactly no gradient (its slot is zeros)
  assert max(g for k, g in flat.items() if k.startswith(("audio_adapter", "audio_encoder"))) == 0
  # one AVSR row: now the audio adapter learns too
  grads = grad(v["params"], {**batch, "task": task_ids(["slt", "avsr"])})
  assert np.abs(np.asarray(grads["audio_adapter"]["kernel"])).max() > 0


def test_paper_config_counts():
  """The paper config builds abstractly; parts against public figures / formulas:
  LLaMA-3.2-3B 3,212,749,824 (tied; the HF model's num_parameters()), LoRA r16 on q,k,v,o 9,175,040 (peft's
  'trainable params' for it), torchvision swin3d_t 28,158,070 minus the 400-class head (768*400+400),
  Whisper-medium encoder and AV-HuBERT Large video path from their layer formulas (~307M / ~325M)."""
  model = model_from_config(paper_cfg.get_config("stage1"))
  c = model.config
  assert (c.concat_dim, c.hidden_dim, c.llm.hidden_size) == (2816, 2944, 3072)
  s = jax.ShapeDtypeStruct
  batch = dict(sign=s((1, 4, 224, 224, 3), jnp.float32), lip=s((1, 4, 88, 88), jnp.uint8),
               audio=s((1, 16, 80), jnp.float32), instr_ids=s((1, 3), jnp.int32), instr_len=s((1,), jnp.int32),
               target_ids=s((1, 3), jnp.int32), target_len=s((1,), jnp.int32), task=s((1,), jnp.int32))
  shapes = jax.eval_shape(functools.partial(model.init, {"params": jax.random.PRNGKey(0)}), batch)
  n = param_counts(shapes["params"])
  lora = 28 * 16 * ((3072 + 3072) * 2 + (3072 + 1024) * 2)
  assert n["lora"] == lora == 9_175_040
  assert n["llm"] - n["lora"] == 3_212_749_824
  assert n["sign_encoder"] == 28_158_070 - (768 * 400 + 400) == 27_850_470
  d, f = 1024, 4096
  layer = 4 * d * d + 3 * d + 2 * d * f + f + d + 4 * d                 # Whisper: k_proj without bias
  whisper = (80 * 3 * d + d) + (3 * d * d + d) + 1500 * d + 24 * layer + 2 * d
  assert n["audio_encoder"] == whisper == 307_216_384
  resnet18_trunk = 11_689_512 - (3 * 64 * 49 + 2 * 64) - (512 * 1000 + 1000)   # torchvision resnet18 - stem - fc
  resnet = resnet18_trunk + 5 * 7 * 7 * 64 + 2 * 64 + 64 + 2 * 2 * (64 + 128 + 256 + 512)   # 3-D stem, PReLUs
  avhubert = (resnet + (512 * d + d) + (104 * d + d) + 4 * d + (2 * d * d + d) + (d * (d // 16) * 128 + 128 + d)
              + 24 * (4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d) + 2 * d)
  assert n["lip_encoder"] == avhubert == 324_622_976
  assert n["sign_adapter"] == 2 * 768 * 768 + 768 and n["lip_adapter"] == 2 * d * d + d
  assert n["audio_adapter"] == 4 * d * d + d
  assert n["mapping"] == (2816 * 2944 + 2944) + (2944 * 3072 + 3072) == 17_340_288
  assert "batch_stats" in shapes and "lip_encoder" in shapes["batch_stats"]


def test_configs_round_trip_and_schedule():
  """Both stages of both configs build; a config saved as JSON (a checkpoint's) gives the same model config;
  the paper's tri-stage schedule: stage 1 18K warm-up / 36K decay, stage 2 500 / 29.5K, peak 1e-4."""
  import json

  import ml_collections

  from shared.config import build_schedule, to_json
  for mod in (tiny_cfg, paper_cfg):
    for stage in ("stage1", "stage2"):
      cfg = mod.get_config(stage)
      c = model_from_config(cfg).config
      back = ml_collections.ConfigDict(json.loads(to_json(cfg)))
      assert model_from_config(back).config == c
      hash(c)
  with pytest.raises(ValueError, match="unknown stage"):
    tiny_cfg.get_config("stage3")
  for stage, (warm, decay) in (("stage1", (18_000, 36_000)), ("stage2", (500, 29_500))):
    t = paper_cfg.get_config(stage).trainer
    assert (t.schedule.name, t.schedule.warmup_steps, t.schedule.decay_steps, t.total_steps) == (
        "tri_stage", warm, decay, warm + decay)
    lr = build_schedule(t)
    np.testing.assert_allclose([float(lr(0)), float(lr(warm)), float(lr(warm + decay))], [1e-6, 1e-4, 1e-6],
                               rtol=1e-4)
  c = model_from_config(paper_cfg.get_config()).config
  assert dict(c.llm.rope_scaling) == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
  assert (c.llm.rope_theta, c.llm.rms_eps, c.llm.tie_embeddings, c.llm.num_kv_heads) == (5e5, 1e-5, True, 8)
  assert (c.lora.rank, c.lora.alpha, c.lora.targets) == (16, 32.0, ("q_proj", "k_proj", "v_proj", "o_proj"))
