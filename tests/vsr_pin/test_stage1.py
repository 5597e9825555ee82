"""VALLR-Pin stage I through shared.train on a micro config: the loss falls, BatchNorm statistics train; the
workdir then serves every entry point: evaluate (CER / pinyin ER / oracle CER), build_refine_data (records the
refiner reads), infer on an mp4, export (FunASR modules load the SANM weights strictly and give our encoder's
outputs; the front end reloads with its running statistics)."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.vsr_pin.tiny import get_config
from shared import train as train_lib
from shared.errors import ConfigError, DataError
from vsr_pin_jax import data as data_lib
from vsr_pin_jax.task import make_task, teacher_forcing


def micro_config(variant: str = ""):
  cfg = get_config(variant)
  t = cfg.trainer
  t.total_steps, t.batch_size, t.log_every = 24, 8, 4
  t.eval_every = t.sample_every = 0
  t.checkpoint.every_steps, t.checkpoint.async_save = 12, False
  t.schedule.warmup_steps = 4
  t.optimizer.learning_rate = 3e-3
  cfg.data.update(dict(lip_size=20, crop=16, frame_buckets=(48, 64, 96), label_buckets=(4, 8), eval_samples=8))
  m = cfg.model
  m.frontend.width = 4
  m.encoder.update(dict(input_size=32, output_size=32, attention_heads=2, linear_units=32, num_blocks=2, kernel_size=5))
  m.decoder.update(dict(encoder_output_size=32, attention_heads=2, linear_units=32, num_blocks=1, att_layer_num=1,
                        kernel_size=5))
  m.pinyin_decoder.update(dict(layers=1, heads=2, ffn_dim=32, max_len=16))
  cfg.decode.update(dict(beam=3, nbest=3))
  return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("vsr_pin"))
  cfg = micro_config()
  task = make_task(cfg)
  result = train_lib.train(cfg, task, wd)
  return cfg, task, result, wd


def test_teacher_forcing_shifts_and_masks():
  labels = jnp.asarray([[5, 6, 7], [8, 0, 0]], jnp.int32)
  mask = jnp.asarray([[1, 1, 1], [1, 0, 0]], bool)
  inp, tgt, m = teacher_forcing(labels, mask, bos=1, eos=2)
  np.testing.assert_array_equal(inp, [[1, 5, 6, 7], [1, 8, 0, 0]])
  np.testing.assert_array_equal(tgt, [[5, 6, 7, 2], [8, 2, 0, 0]])
  np.testing.assert_array_equal(m, [[1, 1, 1, 1], [1, 1, 0, 0]])


def test_prepare_crops_masks_and_names_bad_clips(tmp_path):
  cfg = micro_config()
  vocab = data_lib.vocabs(cfg.data)
  s = data_lib.source(cfg.data, "train")[0]
  ex = data_lib.prepare(s, np.random.default_rng(0), data=cfg.data, vocab=vocab)
  assert ex["lips"].dtype == np.uint8 and ex["lips"].shape[1:] == (16, 16)
  assert "".join(vocab.chars.decode(ex["chars"])) == s["text"]
  assert " ".join(vocab.pinyin.decode(ex["pinyin"])) == s["pinyin"]
  ev = data_lib.prepare(s, None, data=cfg.data, vocab=vocab)
  np.testing.assert_array_equal(ev["lips"], s["lip"][:, 2:18, 2:18])   # centre crop, no masking
  with pytest.raises(DataError, match="clip.mp4.*'lip'"):
    data_lib.prepare({"text": "帆", "pinyin": "fan", "path": "clip.mp4"}, None, data=cfg.data, vocab=vocab)
  with pytest.raises(DataError, match="smaller than data.crop"):
    data_lib.prepare({**s, "lip": s["lip"][:, :8, :8]}, None, data=cfg.data, vocab=vocab)
  assert data_lib.prepare({**s, "lip": np.zeros((200, 20, 20), np.uint8)}, None, data=cfg.data, vocab=vocab) is None
  units = tmp_path / "char_units.txt"
  units.write_text("<blank> 0\n<unk> 1\n你 2\n好 3\n<sos/eos> 4\n", encoding="utf-8")
  v = data_lib.load_char_units(str(units))
  assert v.tokens[4:] == ["你", "好"] and v.blank_id == 0 and v.eos_id == 2
  units.write_text("你 2 extra\n", encoding="utf-8")
  with pytest.raises(DataError, match="line 1"):
    data_lib.load_char_units(str(units))


def test_config_checks():
  cfg = micro_config()
  cfg.model.pinyin = False          # char-only without alpha = 1
  with pytest.raises(ConfigError, match="alpha"):
    make_task(cfg)
  cfg = micro_config()
  cfg.decode.nbest = 9
  with pytest.raises(ConfigError, match="nbest"):
    make_task(cfg)


def test_char_only_has_no_pinyin_branch():
  cfg = micro_config("char_only")
  task = make_task(cfg)
  batch = next(task.make_train_iter())
  shapes = jax.eval_shape(task.init_params, jax.random.key(0), batch)
  assert "pinyin_decoder" not in shapes["params"] and "pinyin_ctc" not in shapes["params"]
  assert set(shapes) == {"params", "batch_stats"}


def test_trains_and_running_statistics_move(trained):
  cfg, task, result, wd = trained
  assert result.step == 24
  rows = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert len(losses) == 6 and np.all(np.isfinite(losses))
  assert losses[-1] < 0.85 * losses[0], losses
  assert {"char_ctc", "char_ce_per_token", "pinyin_ctc", "pinyin_acc"} <= set(rows[-1])
  mean = np.asarray(result.state.model_state["batch_stats"]["frontend"]["bn3d"]["mean"])
  assert np.abs(mean).max() > 1e-3     # initialised at 0: the train step updated it


def test_evaluate_build_refine_data_and_infer(trained, tmp_path):
  cfg, task, result, wd = trained
  from vsr_pin_jax.build_refine_data import build
  from vsr_pin_jax.evaluate import evaluate
  from vsr_pin_jax.infer import infer
  step, m = evaluate(wd, n=6)
  assert step == 24 and m["n"] == 6
  assert 0.0 <= m["oracle_cer"] <= m["cer"] and "pinyin_er" in m and "cer_ctc" in m
  out = str(tmp_path / "refine.jsonl")
  summary = build(wd, "early,late", out, n=4)
  assert [v["step"] for v in summary.values()] == [12, 24]
  recs = [json.loads(l) for l in open(out, encoding="utf-8")]
  assert len(recs) == 8 and {r["stage"] for r in recs} == {"early", "late"}
  for r in recs:
    assert len(r["nbest"]) == 3 and r["truth"] and r["nbest_scores"] == sorted(r["nbest_scores"], reverse=True)
  from shared.data.media import write_mp4
  clip = data_lib.source(cfg.data, "test")[0]
  path = str(tmp_path / "clip.mp4")
  write_mp4(path, np.repeat(clip["lip"][..., None], 3, axis=-1), fps=25)
  rows = infer(wd, [path])
  assert rows[0]["path"] == path and len(rows[0]["nbest"]) == 3 and rows[0]["text"] == rows[0]["nbest"][0][0]


def test_export_loads_in_funasr_and_frontend_keeps_statistics(trained, tmp_path):
  torch = pytest.importorskip("torch")
  cfg, task, result, wd = trained
  from shared.weights import load_pretrained
  from shared.weights.sanm_family import load_funasr
  from vsr_pin_jax.export import export
  out = export(wd, str(tmp_path / "release"))
  rel = json.load(open(os.path.join(out, "release.json")))
  assert rel["files"]["funasr"] == "funasr/" and rel["eos_id"] == task.vocab.chars.eos_id
  variables = result.state.variables
  # the front end reloads with the trained running statistics, and gives the model's features
  fmod, fvars = load_pretrained(os.path.join(out, "frontend"))
  for k in ("mean", "var"):
    np.testing.assert_array_equal(fvars["batch_stats"]["bn3d"][k],
                                  np.asarray(variables["batch_stats"]["frontend"]["bn3d"][k]))
  # FunASR's own modules, built from config.yaml, load model.safetensors strictly and match our encoder
  from funasr.models.sanm.encoder import SANMEncoder as TorchSANMEncoder
  import yaml
  from safetensors.torch import load_file
  conf = yaml.safe_load(open(os.path.join(out, "funasr", "config.yaml")))
  enc = TorchSANMEncoder(input_size=conf["input_size"], **{k: v for k, v in conf["encoder_conf"].items()
                                                            if k not in ("selfattention_layer_type",)})
  sd = load_file(os.path.join(out, "funasr", "model.safetensors"))
  enc.load_state_dict({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}, strict=True)
  enc.eval()
  feats = np.random.default_rng(0).normal(size=(2, 9, conf["input_size"])).astype(np.float32)
  with torch.no_grad():
    theirs = enc(torch.from_numpy(feats), torch.tensor([9, 9]))[0].numpy()
  from shared.models.sanm import SANMEncoder
  ours = SANMEncoder(task.model.config.encoder).apply({"params": variables["params"]["encoder"]}, jnp.asarray(feats),
                                                       jnp.asarray([9, 9]))
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4)
  modules, params, _ = load_funasr(os.path.join(out, "funasr"))
  assert set(modules) == {"encoder", "decoder", "ctc"}
  assert len(conf["token_list"]) == task.model.config.char_vocab


def test_paper_config_builds_resnet50_sanm_from_char_units(tmp_path):
  """configs/vsr_pin/cnvsrc.py: the paper-size model from a CNVSRC char_units.txt, abstractly (no memory)."""
  from configs.vsr_pin.cnvsrc import get_config as paper_config
  units = tmp_path / "char_units.txt"
  units.write_text("<unk> 1\n" + "".join(f"{chr(0x4e00 + i)} {i + 2}\n" for i in range(4467)), encoding="utf-8")
  cfg = paper_config()
  cfg.data.char_units = str(units)
  task = make_task(cfg)
  c = task.model.config
  assert c.char_vocab == 4467 + 4 and c.frontend_dim == 2048 and c.encoder.num_blocks == 12
  b, t = 2, 100
  batch = {"lips": np.zeros((b, t, 88, 88), np.uint8), "lips_lengths": np.full((b,), t, np.int32),
           "chars": np.ones((b, 16), np.int32), "chars_mask": np.ones((b, 16), bool),
           "pinyin": np.ones((b, 16), np.int32), "pinyin_mask": np.ones((b, 16), bool)}
  shapes = jax.eval_shape(task.init_params, jax.random.key(0), batch)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  front = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]["frontend"]))
  assert 23e6 < front < 24e6, front          # ResNet-50 trunk (23.5M) with a 1-channel 5x7x7 stem
  assert 60e6 < n < 120e6, n
  assert cfg.init.frontend.prefix == "frontend"


def test_cmlr_source_feeds_the_same_batch(tmp_path):
  """data.source=cmlr: a CMLR tree the project writes (SynthCue lips as the mouth-ROI clips) gives the same
  examples as the corpus it came from; characters from the training transcripts; a broken clip is skipped and
  counted; `cnvsrc.py:cmlr` points the paper-size config at that layout."""
  from configs.vsr_pin.cnvsrc import get_config as paper_config
  from shared.data.layouts import write_cmlr
  cfg = micro_config()
  src = data_lib.source(cfg.data, "train")
  samples = [src[i] for i in range(6)]
  root = str(tmp_path / "CMLR")
  paths = write_cmlr(root, "train", samples, video_dir="video_roi")
  write_cmlr(root, "test", samples[:2], video_dir="video_roi", date="20170301")
  real = micro_config()
  real.data.update(dict(source="cmlr", root=root, video_dir="video_roi"))
  vocab = data_lib.vocabs(real.data)
  assert vocab.chars.tokens[4:] == sorted({c for s in samples for c in s["text"]})
  ours = data_lib.source(real.data, "train")
  for a, b in zip(samples, (ours[i] for i in range(6))):
    ea = data_lib.prepare(a, None, data=cfg.data, vocab=vocab)
    eb = data_lib.prepare(b, None, data=real.data, vocab=vocab)
    np.testing.assert_array_equal(ea["chars"], eb["chars"])
    np.testing.assert_array_equal(ea["pinyin"], eb["pinyin"])
    assert eb["lips"].shape == ea["lips"].shape
    assert np.abs(eb["lips"].astype(float) - ea["lips"]).mean() < 6   # h264 round trip
  (batch, truths), = list(data_lib.eval_batches(real.data, vocab, "test", 8, 4))
  assert [t[0] for t in truths] == [s["text"] for s in samples[:2]] and batch["lips"].shape[0] == 4
  with open(paths[1], "r+b") as f:
    f.truncate(200)
  it = data_lib.train_iterator(real.data, vocab, batch_size=2, seed=0)
  got = [next(it) for _ in range(3)]
  assert all(g["lips"].shape[0] == 2 for g in got)
  broken = data_lib.source(real.data, "train")
  assert [broken[i] is None for i in range(6)] == [i == 1 for i in range(6)]
  assert broken.skipped == {"undecodable": 1} and broken.skipped_files[0][0] == paths[1]
  paper = paper_config("cmlr,char_only")
  assert (paper.data.source, paper.data.eval_split, paper.model.pinyin, paper.loss.alpha) == ("cmlr", "val", False, 1.0)
  with pytest.raises(ValueError, match="unknown variant"):
    paper_config("cmrl")
