"""trimodal_jax.extract + precomputed sign features (data.sign_features, model.precomputed=("sign",)), tiny config,
SynthCue: the written features equal the model's own sign-encoder output (TriModal._sign) for the same clips; the
sign encoder's weights go out (save_pretrained) and back (init.sign.path) unchanged; a batch built from the
features through the precomputed model (params = the full model's minus sign_encoder/) gives the frame batch's
loss; reruns skip finished files and rewrite a removed one identically; missing / mis-shaped files and index
mismatches are loud errors naming the file; disagreeing config keys are ConfigErrors naming both; batch_spec /
complete give [B, T, Ds] float32 features; the CLI writes float16 features (one subprocess)."""
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs.trimodal.tiny import get_config
from shared.errors import ConfigError, DataError
from shared.models.swin3d import SwinTransformer3d
from shared.weights import save_pretrained
from tests.xla_env import xla_flags
from trimodal_jax import data as data_lib
from trimodal_jax import extract as ex
from trimodal_jax import task as task_lib
from trimodal_jax.model import TriModal, model_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 3                       # clips extracted (SynthCue train 0..2: 40, 37, 46 frames)
T = 64                      # the one frame bucket


def frames_cfg(**init):
  cfg = get_config("stage1")
  cfg.data.update(dict(num_samples=8, frame_buckets=(T,), label_buckets=(16,), eval_samples=0))
  for k, v in init.items():
    cfg.init[k].path = v
  return cfg


def feature_cfg(feat):
  cfg = frames_cfg()
  cfg.data.sign_features = feat
  cfg.model.precomputed = ("sign",)
  return cfg


def batch_of(cfg, tasks=(("slt", 0), ("slt", 1), ("slt", 2), ("vsr", 0))):
  tok = data_lib.tokenizer(cfg)
  srcs = data_lib.sources_for(cfg, "train")
  ex_ = [data_lib.prepare(i, t, None, cfg=cfg, srcs=srcs, tok=tok) for t, i in tasks]
  assert all(e is not None for e in ex_)
  return data_lib.collate(ex_, cfg=cfg, tok=tok)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("extract")
  cfg = frames_cfg()
  batch = batch_of(cfg)
  model = model_from_config(cfg)
  init = jax.jit(lambda r, b: model.init({"params": r}, task_lib.model_inputs(task_lib.complete(b, cfg)),
                                         train=False))
  variables = nn.meta.unbox(init(jax.random.PRNGKey(0), batch))
  swin = str(tmp / "swin")
  save_pretrained(SwinTransformer3d(model.config.sign), variables["params"]["sign_encoder"], swin)
  cfg_w = frames_cfg(sign=swin)
  params, identity = ex.encoder_from_config(cfg_w)
  feat = str(tmp / "feat")
  summary = ex.extract(cfg_w, params, identity, "train", feat, limit=N, dtype="float32")
  return dict(cfg=cfg, cfg_w=cfg_w, batch=batch, model=model, variables=variables, swin=swin, params=params,
              identity=identity, feat=feat, summary=summary, tmp=tmp)


def test_features_equal_the_models_sign_encoder(setup):
  s = setup
  # the weights went out (save_pretrained) and back (init.sign.path) unchanged: the same sha256 either way
  assert ex.params_sha256(s["params"]) == ex.params_sha256({"sign_encoder": s["variables"]["params"]["sign_encoder"]})
  assert s["summary"]["written"] == N and s["summary"]["failed"] == 0 and s["summary"]["count"] == N
  index = json.load(open(os.path.join(s["feat"], "train", "index.json")))
  assert index["dim"] == 128 and index["dtype"] == "float32" and index["count"] == N and index["clips"] == 8
  assert index["encoder"]["init_path"] == s["swin"] and index["encoder"]["config"]["embed_dim"] == 16
  assert set(index["encoder"]["weights_sha256"]) >= {"config.json"}
  # the model's own sign path on the collated (padded) frame batch
  b = s["batch"]
  f, n = jax.jit(lambda v, x, m: s["model"].apply(v, x, m, False, method=TriModal._sign))(
      s["variables"], task_lib.normalise_sign(b["sign"]), b["sign_len"])
  f, n = np.asarray(f), np.asarray(n)
  err = 0.0
  for i in range(N):
    got = np.load(os.path.join(s["feat"], "train", f"{i:06d}.npy"))
    assert got.dtype == np.float32 and got.shape == (b["sign_len"][i], 128) and n[i] == b["sign_len"][i]
    err = max(err, float(np.abs(got - f[i, :n[i]]).max()))
  scale = float(np.abs(f[:N]).max())
  assert scale > 0.1                                   # (not a vacuous comparison)
  assert err <= 1e-6 * scale, (err, scale)             # fp32: the extract batch and the padded batch differ in shape


def test_feature_batch_gives_the_frame_batch_loss(setup):
  s = setup
  fcfg = feature_cfg(s["feat"])
  task_lib.check_config(fcfg)
  fb = batch_of(fcfg)
  b = s["batch"]
  assert fb["sign"].shape == (4, T, 128) and fb["sign"].dtype == np.float32
  assert not fb["sign"][3].any()                        # the VSR row: zero features
  for k in b:
    if k != "sign":
      np.testing.assert_array_equal(fb[k], b[k], err_msg=k)
  pre = model_from_config(fcfg)
  v = s["variables"]
  pv = {**v, "params": {k: p for k, p in v["params"].items() if k != "sign_encoder"}}
  state = {k: x for k, x in v.items() if k != "params"}
  full_fn = jax.jit(lambda p, x: task_lib.make_loss_fn(s["model"])(p, x, None, state)[:2])
  pre_fn = jax.jit(lambda p, x: task_lib.make_loss_fn(pre)(p, x, None, state)[:2])
  want, aux_w = full_fn(v["params"], b)
  got, aux_g = pre_fn(pv["params"], fb)
  rel = abs(float(got) - float(want)) / abs(float(want))
  assert rel < 1e-6, (float(got), float(want))
  assert float(aux_g["weight"]) == float(aux_w["weight"]) and float(aux_g["token_acc"]) == float(aux_w["token_acc"])
  # the features matter: other (zeroed) SLT features change the loss
  other, _ = pre_fn(pv["params"], {**fb, "sign": np.zeros_like(fb["sign"])})
  assert abs(float(other) - float(want)) / abs(float(want)) > 1e-4


def test_rerun_skips_finished_files(setup):
  s = setup
  d = os.path.join(s["feat"], "train")
  names = [os.path.join(d, f"{i:06d}.npy") for i in range(N)]
  kept = {p: os.stat(p).st_mtime_ns for p in names}
  before = np.load(names[1])
  os.remove(names[1])
  got = ex.extract(s["cfg_w"], s["params"], s["identity"], "train", s["feat"], limit=N, dtype="float32")
  assert (got["written"], got["skipped"], got["failed"], got["count"]) == (1, N - 1, 0, N)
  np.testing.assert_array_equal(np.load(names[1]), before)
  assert all(os.stat(p).st_mtime_ns == kept[p] for p in names if p != names[1])
  # another dtype (or encoder) into the same directory: refused, nothing written
  with pytest.raises(ConfigError, match="another encoder or setting"):
    ex.extract(s["cfg_w"], s["params"], s["identity"], "train", s["feat"], limit=N, dtype="float16")
  other = {"sign_encoder": jax.tree.map(lambda a: a + 1, s["params"]["sign_encoder"])}
  with pytest.raises(ConfigError, match="another encoder"):
    ex.extract(s["cfg_w"], other, s["identity"], "train", s["feat"], limit=N, dtype="float32")
  # process sharding: process 1 of 2 owns clip 1 only (already there: skipped)
  got = ex.extract(s["cfg_w"], s["params"], s["identity"], "train", s["feat"], limit=N, dtype="float32",
                   process_index=1, process_count=2)
  assert (got["clips"], got["written"], got["skipped"]) == (1, 0, 1)


def test_missing_or_misshaped_features_are_loud(setup):
  s = setup
  fcfg = feature_cfg(s["feat"])
  tok = data_lib.tokenizer(fcfg)
  srcs = data_lib.sources_for(fcfg, "train")
  missing = os.path.join(s["feat"], "train", "000005.npy")
  with pytest.raises(DataError, match="000005.npy") as e:
    data_lib.prepare(5, "slt", None, cfg=fcfg, srcs=srcs, tok=tok)
  assert "does not exist" in str(e.value) and not os.path.exists(missing)
  t6 = srcs["sign"].src[6]["lip"].shape[0]
  np.save(os.path.join(s["feat"], "train", "000006.npy"), np.zeros((t6 - 1, 128), np.float32))
  with pytest.raises(DataError, match="000006.npy") as e:
    data_lib.prepare(6, "slt", None, cfg=fcfg, srcs=srcs, tok=tok)
  assert f"({t6 - 1}, 128)" in str(e.value) and f"[{t6}, 128]" in str(e.value) and "000006.npy" in str(e.value)
  # a VSR example reads no feature file (its sign is zeros of the feature shape)
  vsr = data_lib.prepare(5, "vsr", None, cfg=fcfg, srcs=srcs, tok=tok)
  assert vsr["sign"].shape == (vsr["n_frames"], 128) and not vsr["sign"].any()
  # no index for the split, or one of another width
  with pytest.raises(DataError, match="index.json"):
    data_lib.sources_for(fcfg, "test")
  wide = fcfg.copy_and_resolve_references()
  wide.model.sign.embed_dim = 8
  with pytest.raises(DataError, match="width 128; model.sign gives 64"):
    data_lib.sources_for(wide, "train")


def test_config_keys_must_agree(setup):
  s = setup
  only_data = frames_cfg()
  only_data.data.sign_features = s["feat"]
  only_model = frames_cfg()
  only_model.model.precomputed = ("sign",)
  for cfg in (only_data, only_model):
    with pytest.raises(ConfigError, match=r"data\.sign_features=.*model\.precomputed="):
      data_lib.check_data(cfg)
  lip = feature_cfg(s["feat"])
  lip.model.precomputed = ("sign", "lip")
  with pytest.raises(ConfigError, match="only sign features"):
    data_lib.check_data(lip)
  with_swin = feature_cfg(s["feat"])
  with_swin.init.sign.path = s["swin"]
  with pytest.raises(ConfigError, match="init.sign.path"):
    task_lib.check_config(with_swin)


def test_batch_spec_and_complete(setup):
  s = setup
  fcfg = feature_cfg(s["feat"])
  spec = task_lib.batch_spec(fcfg)
  fb = batch_of(fcfg)
  assert spec["sign"].shape == (8, T, 128) and spec["sign"].dtype == np.float32
  assert set(spec) == set(fb)
  for k, v in spec.items():
    assert v.shape[1:] == fb[k].shape[1:] and v.dtype == fb[k].dtype, k
  frames = task_lib.batch_spec(s["cfg"])
  assert frames["sign"].shape == (8, T, 32, 32, 3) and frames["sign"].dtype == np.uint8
  done = task_lib.complete(fb, fcfg)                  # stage 1: the audio slot filled with zero mels
  assert done["audio"].shape == (4, 4 * T, 80) and done["sign"] is fb["sign"]
  assert task_lib.input_shapes(fcfg, 2, 10)["sign"] == ((2, 10, 128), np.float32)


def test_cli_writes_float16_features(setup):
  s = setup
  out = str(s["tmp"] / "feat16")
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
  cmd = [sys.executable, "-m", "trimodal_jax.extract", "--config", "configs/trimodal/tiny.py:stage1",
         f"--config.init.sign.path={s['swin']}", "--config.data.num_samples=8", "--config.data.frame_buckets=(64,)",
         "--split", "train", "--out", out, "--limit", "1"]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert summary["written"] == 1 and summary["count"] == 1
  assert "ETA" in r.stderr and "1 / 1 clips" in r.stderr
  got = np.load(os.path.join(out, "train", "000000.npy"))
  want = np.load(os.path.join(s["feat"], "train", "000000.npy"))
  assert got.dtype == np.float16
  np.testing.assert_array_equal(got, want.astype(np.float16))
  bad = subprocess.run(cmd[:5] + ["--workdir", out, "--split", "train", "--out", out], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "exactly one of --workdir" in bad.stderr


def test_how2sign_features_by_clip_name(setup, tmp_path, monkeypatch):
  """How2Sign + LRS3 written from SynthCue clips: extract reads the frames alone (no lip_root, no LRS3 root) and
  names the files by clip stem; training reads them back without decoding a sign video, the same frames the
  frame path prepares."""
  from shared.data import layouts, media
  from shared.data.synthcue import build_world, synthcue_source
  from trimodal_jax import real_data
  s = setup
  syn = frames_cfg()
  signs = [dict(x) for x in (synthcue_source(syn.data, "train", "sign", frame_size=64, render_audio=False)[i]
                             for i in range(2))]
  h2s, h2s_lip, lrs3 = str(tmp_path / "h2s"), str(tmp_path / "h2s_lip"), str(tmp_path / "lrs3")
  paths = layouts.write_how2sign(h2s, "train", signs)
  for p, x in zip(paths, signs):
    media.write_mp4(os.path.join(h2s_lip, os.path.relpath(p, h2s)), x["lip"])
  layouts.write_lrs3(lrs3, "trainval", [dict(x) for x in (synthcue_source(syn.data, "train", "speech")[i]
                                                          for i in range(2))])
  tok = str(tmp_path / "tok")
  chars = build_world(0, int(syn.data.lexicon_size), int(syn.data.max_homophones), int(syn.data.n_speakers),
                      float(syn.data.shared_sign_fraction)).chars
  data_lib.sentence_tokenizer(list(chars)).save_pretrained(tok)

  def real(lip_root=h2s_lip, lrs3_root=lrs3, feat=""):
    cfg = frames_cfg(sign=s["swin"])
    d = cfg.data
    for k in ("seed", "num_samples", "lexicon_size", "max_homophones", "n_speakers", "n_test_speakers", "clauses",
              "shared_sign_fraction"):
      del d[k]
    d.source = "how2sign+lrs3"
    d.babble_p = 0.0
    d.how2sign = real_data.how2sign_section(root=h2s, lip_root=lip_root)
    d.lrs3 = real_data.lrs3_section(root=lrs3_root, splits={"train": "trainval", "validation": "", "test": ""})
    cfg.tokenizer.path = tok
    if feat:
      d.sign_features, cfg.model.precomputed, cfg.init.sign.path = feat, ("sign",), ""
    return cfg

  feat = str(tmp_path / "feat")
  got = ex.extract(real(lip_root="", lrs3_root=""), s["params"], s["identity"], "train", feat, dtype="float32")
  stems = sorted(os.path.basename(p)[:-4] for p in paths)
  assert (got["written"], got["clips"]) == (2, 2)
  assert sorted(n[:-4] for n in os.listdir(os.path.join(feat, "train")) if n.endswith(".npy")) == stems
  frames_cfg_ = real()
  fsrcs = data_lib.sources(frames_cfg_.data, "train")
  encode = ex.make_encode(ex.sign_model(frames_cfg_))
  fcfg = real(feat=feat)
  task_lib.check_config(fcfg)
  clips = [data_lib.sign_input(fsrcs["sign"][i], 32) for i in range(2)]     # the frame path's encoder input
  calls = []
  decode = real_data.decode_video
  monkeypatch.setattr(real_data, "decode_video", lambda *a, **kw: calls.append(kw.get("gray")) or decode(*a, **kw))
  srcs = data_lib.sources_for(fcfg, "train")
  toks = data_lib.tokenizer(fcfg)
  for i, frames in enumerate(clips):
    e = data_lib.prepare(i, "slt", None, cfg=fcfg, srcs=srcs, tok=toks)
    want = np.load(os.path.join(feat, "train", data_lib.clip_name(fsrcs["sign"], i) + ".npy"))
    np.testing.assert_array_equal(e["sign"], want)
    # the frames the frame path would feed the encoder give these features
    x = np.zeros((1, T) + frames.shape[1:], np.uint8)
    x[0, :len(frames)] = frames
    f, n = encode(jax.device_put({"sign_encoder": s["params"]["sign_encoder"]}), x, np.asarray([len(frames)]))
    np.testing.assert_array_equal(np.asarray(f)[0, :int(n[0])], want)
  assert calls == [True, True]                          # the two lip clips; no sign (colour) video decoded


def test_infer_reads_a_feature_file(setup, tmp_path):
  """infer on a run trained on precomputed sign features: --sign F.npy (extract's file) gives the evaluation
  example's sign features and lips; an mp4, a missing file or another shape is a DataError naming it."""
  from trimodal_jax import infer
  s = setup
  fcfg = feature_cfg(s["feat"])
  tok = data_lib.tokenizer(fcfg)
  srcs = data_lib.sources_for(fcfg, "train")
  want = data_lib.prepare(0, "slt", None, cfg=fcfg, srcs=srcs, tok=tok)
  path = os.path.join(s["feat"], "train", "000000.npy")
  arrays = {"sign": np.load(path), "lip": srcs["sign"][0]["lip"]}
  got = infer.make_example(fcfg, tok, "slt", arrays, {"sign": path})
  np.testing.assert_array_equal(got["sign"], want["sign"])
  np.testing.assert_array_equal(got["lip"], want["lip"])
  with pytest.raises(DataError, match=r"F\.npy"):
    infer.read_inputs(fcfg, "slt", sign=str(tmp_path / "clip.mp4"), lip=str(tmp_path / "lip.mp4"))
  with pytest.raises(DataError, match="does not exist"):
    infer.read_inputs(fcfg, "slt", sign=str(tmp_path / "none.npy"), lip=str(tmp_path / "lip.mp4"))
  bad = {"sign": np.load(path)[:-1], "lip": arrays["lip"]}
  with pytest.raises(DataError, match="sign features have shape"):
    infer.make_example(fcfg, tok, "slt", bad, {"sign": path})
