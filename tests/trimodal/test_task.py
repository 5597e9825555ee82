"""trimodal_jax.data / task / train: mixed-task SynthCue batches (keys, shapes, dtypes, zero absent modalities,
labels, augmentations per task and stage), batch_spec vs a real batch, a short tiny-config training run through
shared.train whose loss falls (iterator state round-trips), decoding consistent with teacher forcing, and the CLI's
one-line config error."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.trimodal.tiny import get_config
from shared import train as train_lib
from shared.data import augment
from shared.text.prompts import IGNORE, assemble
from tests.xla_env import xla_flags
from trimodal_jax import data as data_lib
from trimodal_jax import task as task_lib
from trimodal_jax.model import TASK_MODALITIES, TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small(stage="stage2", **data):
  cfg = get_config(stage)
  cfg.data.update(dict(num_samples=8, frame_buckets=(64,), label_buckets=(8,), eval_samples=8, **data))
  return cfg


def _example(cfg, task, rng, index=0, split="train"):
  tok = data_lib.tokenizer(cfg)
  return data_lib.prepare(index, task, rng, cfg=cfg, srcs=data_lib.sources(cfg.data, split), tok=tok), tok


def test_examples_per_task_absent_modalities_zero_and_augmentations():
  cfg = small("stage2", babble_p=1.0, word_drop=(1.0, 1.0))
  srcs = data_lib.sources(cfg.data, "train")
  for task in TASKS:
    ev, tok = _example(cfg, task, None)
    tr, _ = _example(cfg, task, np.random.default_rng(3))
    s = srcs["sign" if task == "slt" else "speech"][0]
    t = s["lip"].shape[0]
    assert ev["n_frames"] == tr["n_frames"] == t and int(ev["task"]) == TASKS.index(task)
    assert ev["sign"].shape == (t, 32, 32, 3) and ev["sign"].dtype == np.uint8
    assert ev["lip"].shape == (t, 24, 24) and ev["lip"].dtype == np.uint8
    assert ev["audio"].shape == (4 * t, 80) and ev["audio"].dtype == np.float32
    for m in ("sign", "lip", "audio"):                 # absent modalities: exact zeros, train and eval
      if m not in TASK_MODALITIES[task]:
        assert not ev[m].any() and not tr[m].any(), (task, m)
      else:
        assert np.abs(ev[m].astype(np.float32)).max() > 0, (task, m)
    # target: the spoken sentence + eos; SLT training drops words (rate 1: one character kept), no other task
    assert data_lib.decode_text(tok, ev["target_ids"]) == s["text"] and ev["target_ids"][-1] == tok.eos_token_id
    if task == "slt":
      assert len(tr["target_ids"]) == 2 and tok.decode(tr["target_ids"][:1]) in s["text"]
      # sign frames: the rendered 64 px frames block-averaged to 32 px; lips centre-cropped (no flip) for SLT
      np.testing.assert_array_equal(ev["sign"], data_lib.sign_frames(s["video"], 32))
      assert abs(float(ev["sign"].mean()) - float(s["video"].mean())) < 0.6
      np.testing.assert_array_equal(tr["lip"], augment.center_crop(s["lip"], 24))
    else:
      np.testing.assert_array_equal(tr["target_ids"], ev["target_ids"])
    if task in ("vsr", "avsr"):                        # a random 24 px window of the 28 px crop, maybe mirrored
      np.testing.assert_array_equal(ev["lip"], augment.center_crop(s["lip"], 24))
      found = [(i, j, f) for i in range(5) for j in range(5) for f in (False, True)
               if np.array_equal(tr["lip"], s["lip"][:, i:i + 24, j:j + 24][:, :, ::-1] if f
                                 else s["lip"][:, i:i + 24, j:j + 24])]
      assert found, task
    if "audio" in TASK_MODALITIES[task]:               # stage 2, p = 1: babble in training, clean in eval
      clean = data_lib.clip_mels(s["audio"], t)
      np.testing.assert_array_equal(ev["audio"], clean)
      assert np.abs(tr["audio"] - clean).mean() > 0.05, task
  # stage 1 (the same ratios, so audio tasks are drawn): never babble
  cfg1 = small("stage1", babble_p=1.0)
  cfg1.tasks.update(get_config("stage2").tasks)
  for task in ("asr", "avsr"):
    tr, _ = _example(cfg1, task, np.random.default_rng(3))
    np.testing.assert_array_equal(tr["audio"], data_lib.clip_mels(srcs["speech"][0]["audio"], tr["n_frames"]))
  # stage 1's own ratios: only SLT / VSR, and no audio in its batches
  assert data_lib.active_tasks(get_config("stage1")) == ("slt", "vsr")
  assert "audio" not in data_lib.batch_keys(get_config("stage1"))


def test_mixed_batch_labels_and_batch_spec():
  cfg = small("stage2")
  cfg.trainer.batch_size = 8
  tok = data_lib.tokenizer(cfg)
  it = data_lib.train_iterator(cfg, tok, batch_size=8, seed=0)
  b = next(it)
  spec = task_lib.batch_spec(cfg)
  assert {k: (v.shape, v.dtype.name) for k, v in b.items()} == {k: (s.shape, s.dtype.name) for k, s in spec.items()}
  assert set(b) == set(data_lib.batch_keys(cfg)) and len(set(b["task"].tolist())) > 1       # tasks mixed
  t = b["lip"].shape[1]
  for i, k in enumerate(b["task"]):
    mods = TASK_MODALITIES[TASKS[k]]
    for m in ("sign", "lip", "audio"):
      per = 4 if m == "audio" else 1
      if m in mods:
        assert b[m][i].any() and b[f"{m}_len"][i] <= per * t and not b[m][i, b[f"{m}_len"][i]:].any()
      else:
        assert not b[m][i].any() and b[f"{m}_len"][i] == per * t
    np.testing.assert_array_equal(b["instr_ids"][i, :b["instr_len"][i]], data_lib.instructions(tok)[TASKS[k]])
  assert (b["sign_len"][b["task"] == 0] == b["lip_len"][b["task"] == 0]).all()
  # labels: the target ids (eos included) right after [instruction, modality tokens], -100 everywhere else
  e = 4
  mod_len = b["lip_len"] // 2
  seq = assemble(jnp.zeros(b["instr_ids"].shape + (e,)), b["instr_len"], jnp.zeros((8, t // 2, e)), mod_len,
                 jnp.zeros(b["target_ids"].shape + (e,)), b["target_ids"], b["target_len"])
  labels = np.asarray(seq["labels"])
  for i in range(8):
    start = b["instr_len"][i] + mod_len[i]
    np.testing.assert_array_equal(labels[i, start:start + b["target_len"][i]], b["target_ids"][i, :b["target_len"][i]])
    assert (np.delete(labels[i], np.arange(start, start + b["target_len"][i])) == IGNORE).all()
  # the iterator state round-trips: a fresh iterator set to it gives the very next batch
  state = it.get_state()
  nxt = next(it)
  it2 = data_lib.train_iterator(cfg, tok, batch_size=8, seed=0)
  it2.set_state(state)
  again = next(it2)
  for k in nxt:
    np.testing.assert_array_equal(again[k], nxt[k], err_msg=k)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("trimodal"))
  cfg = small("stage1", lip_size=20, crop=16, sign_frame_size=32, sign_size=16)   # smaller frames: CPU time
  tr = cfg.trainer
  tr.total_steps, tr.batch_size, tr.log_every, tr.eval_every = 20, 8, 4, 0
  tr.checkpoint.update(dict(every_steps=20, async_save=False))
  tr.schedule.update(dict(warmup_steps=2, decay_steps=18))
  tr.optimizer.learning_rate = 3e-3
  task = task_lib.make_task(cfg)
  result = train_lib.train(cfg, task, wd)
  return cfg, task, result, wd


@pytest.mark.slow  # the shared training run: ~30 s of compiles + 20 steps (60-90 s on the 2-core box)
def test_training_loss_falls_and_only_the_trainable_parts_move(trained):
  cfg, task, result, wd = trained
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if '"loss"' in line]
  losses = [r["loss"] for r in rows if "loss" in r]
  assert result.step == 20 and len(losses) == 5, (result.status, losses)
  assert losses[-1] < 0.8 * losses[0], losses
  # the tiny config trains everything (fresh stand-ins); the paper's recipe: adapters, mapping and LoRA only
  tr = task.trainable
  assert tr("mapping/fc1/kernel") and tr("lip_adapter/kernel") and tr("sign_encoder/features/0/kernel")
  assert tr("llm/embed_tokens/embedding") and tr("llm/layers/0/self_attn/q_proj/lora_a")
  paper = cfg.copy_and_resolve_references()
  paper.train.update(dict(encoders=(), llm="lora"))
  tr = task_lib.make_trainable(paper)
  assert tr("mapping/fc2/bias") and tr("audio_adapter/kernel") and tr("llm/layers/1/self_attn/o_proj/lora_b")
  assert not tr("llm/embed_tokens/embedding") and not tr("llm/layers/0/mlp/up_proj/kernel")
  assert not tr("sign_encoder/features/0/kernel") and not tr("lip_encoder/resnet/conv1/kernel")


@pytest.mark.slow
def test_greedy_decoding_is_teacher_forcing_argmax_and_beam_runs(trained):
  """SLT decodes greedily through the LEFT-padded prefix + KV cache: fed back as the target (right-padded, one
  pass), every generated token is the argmax of the logits before it."""
  cfg, task, result, wd = trained
  restored = train_lib.restore(wd)
  variables = {"params": restored.params, **(restored.model_state or {})}
  tok = task.tokenizer
  ex = [e for e, _ in data_lib.eval_examples(cfg, tok, "test", 2, tasks=("slt",))]
  b = data_lib.collate(ex, cfg=cfg, tok=tok)
  ids = task.decoder.tokens(variables, b, "slt")
  n_new = cfg.decode.max_new_tokens
  assert ids.shape == (2, n_new) and cfg.decode.slt.method == "greedy"
  eos = tok.eos_token_id
  n = np.array([list(r).index(eos) + 1 if eos in r else n_new for r in ids], np.int32)
  tb = {**b, "target_ids": ids, "target_len": n}
  out = jax.jit(lambda v, x: task.model.apply(v, x, task="slt"))(variables, task_lib.model_inputs(tb))
  first = b["instr_len"] + np.asarray(out["mod_len"]) - 1     # the position that predicts the first target token
  logits = np.asarray(out["logits"])
  for r in range(2):
    pred = logits[r, first[r]:first[r] + n[r]].argmax(-1)
    np.testing.assert_array_equal(pred, ids[r, :n[r]], err_msg=f"row {r}")
  texts = task.decoder.decode(variables, b, "slt")
  assert texts == [data_lib.decode_text(tok, r) for r in ids]
  # the held-out token loss (fixed test-speaker clips, SLT and VSR in turn): reproducible, and clearly below the
  # untrained model's (near-uniform logits: ln V = 4.56)
  v1, v2 = task.val_loss_fn(variables), task.val_loss_fn(variables)
  assert v1 == v2 and np.isfinite(v1) and v1 < np.log(cfg.model.llm.vocab_size) - 0.3, v1
  # the paper's checkpoint selection metric on the same clips (trainer.checkpoint.best): well above chance (1 / V)
  acc = task.val_token_acc(variables)
  assert acc == task.val_token_acc(variables) and 3.0 / cfg.model.llm.vocab_size < acc <= 1.0, acc
  assert cfg.trainer.checkpoint.best == "val_token_acc" and cfg.trainer.checkpoint.best_mode == "max"
  # VSR: beam search (cfg.decode.speech), one text per row
  vb = data_lib.collate([e for e, _ in data_lib.eval_examples(cfg, tok, "test", 2, tasks=("vsr",))], cfg=cfg, tok=tok)
  assert len(task.decoder.decode(variables, vb, "vsr")) == 2


@pytest.mark.parametrize("key, value, match", [
    ("data.source", "how2sign+lrs3", "data.source='how2sign\\+lrs3'"),
    ("data.crop", 40, "data.crop=40"),
    ("data.word_drop", (0.3, 0.1), "data.word_drop"),
    ("data.babble_p", 1.5, "data.babble_p=1.5"),
    ("tasks.asr", -0.5, "tasks.asr=-0.5"),
    ("train.encoders", ("video",), "train.encoders has \\['video'\\]"),
    ("train.llm", "none", "train.llm='none'"),
    ("decode.speech.method", "viterbi", "decode.speech.method='viterbi'"),
    ("model.llm.vocab_size", 32, "vocab_size=32"),
])
def test_config_errors_name_the_key(key, value, match):
  from shared.errors import ConfigError
  cfg = get_config("stage2")
  *path, last = key.split(".")
  node = cfg
  for p in path:
    node = node[p]
  with node.ignore_type():
    node[last] = value
  with pytest.raises(ConfigError, match=match):
    task_lib.check_config(cfg)
    data_lib.tokenizer(cfg)


def test_cli_config_error_is_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
  p = subprocess.run([sys.executable, "-m", "trimodal_jax.train", "--config", "configs/trimodal/tiny.py:stage1",
                      "--workdir", str(tmp_path / "wd"), "--config.tasks.slt=-1.0"], capture_output=True, text=True,
                     env=env, cwd=ROOT, timeout=300)
  lines = [line for line in p.stderr.splitlines() if line.strip()]
  assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
  assert lines[0].startswith("error: ConfigError: tasks.slt=-1.0") and "Traceback" not in p.stderr, lines
