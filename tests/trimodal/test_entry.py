"""trimodal_jax.evaluate / infer / export. No model: the Levenshtein character alignment against a brute-force
oracle (and jiwer's edit counts), the shared-manual-form character set against the SynthCue world and the clips'
gloss_form, metric keys / units against shared.metrics, babble at an exact, reproducible SNR, infer's prepared
example == data.prepare's. On one tiny workdir trained for 2 steps through shared.train (module fixture):
evaluate's scores == shared.metrics over the decoder's output, its JSON line and per-task / per-SNR files, the CLI;
infer from wav / mp4 files == evaluation's decoding, errors naming the file; export: PEFT adapter over the exported
LlamaForCausalLM == our LLM + LoRA (fp32, 1e-5 relative), encoders read back through load_pretrained == the run's
params / BatchNorm stats, adapters / mapping through torch Conv1d / Linear == ours, tokenizer, bfloat16."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.trimodal.tiny import get_config
from shared.data import augment
from shared.data.synthcue import build_world
from shared.metrics import text as text_metrics
from tests.xla_env import xla_flags
from trimodal_jax import data as data_lib
from trimodal_jax import evaluate as ev

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_cfg():
  cfg = get_config("stage2")
  cfg.data.update(dict(num_samples=8, frame_buckets=(64,), label_buckets=(8,), eval_samples=0, lip_size=20, crop=16,
                       sign_frame_size=32, sign_size=16))
  cfg.decode.max_new_tokens = 6
  tr = cfg.trainer
  tr.total_steps, tr.batch_size, tr.log_every, tr.eval_every = 2, 4, 1, 0
  tr.checkpoint.update(dict(every_steps=2, async_save=False))
  tr.schedule.update(dict(warmup_steps=1, decay_steps=1))
  return cfg


def train_tiny(wd: str):
  """2 training steps of the tiny config into wd on ONE device (an 8-device SPMD compile is several times slower
  on the 2-core box) -> (cfg, task)."""
  import jax

  from shared import mesh as mesh_lib
  from shared import train as train_lib
  from trimodal_jax import task as task_lib
  cfg = tiny_cfg()
  task = task_lib.make_task(cfg)
  result = train_lib.train(cfg, task, wd, mesh=mesh_lib.make_mesh(cfg.trainer.mesh, jax.devices()[:1]))
  assert result.step == 2, result.status
  return cfg, task


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("trimodal_entry"))
  cfg, task = train_tiny(wd)
  return cfg, task, wd


# ----------------------------------------------------------------------------- alignment (no model)

def _oracle(ref, hyp):
  """Brute force over every alignment: (min cost, max hits among the min-cost ones)."""
  best = None

  def go(i, j, cost, hits):
    nonlocal best
    if i == len(ref) and j == len(hyp):
      key = (cost, -hits)
      best = key if best is None or key < best else best
      return
    if i < len(ref) and j < len(hyp):
      same = ref[i] == hyp[j]
      go(i + 1, j + 1, cost + (0 if same else 1), hits + int(same))
    if i < len(ref):
      go(i + 1, j, cost + 1, hits)
    if j < len(hyp):
      go(i, j + 1, cost + 1, hits)
  go(0, 0, 0, 0)
  return best[0], -best[1]


def _is_subsequence(sub, s):
  it = iter(s)
  return all(c in it for c in sub)


def test_char_alignment_matches_a_brute_force_oracle():
  np.testing.assert_array_equal(ev.char_alignment("abcd", "abxd"), [1, 1, 0, 1])
  np.testing.assert_array_equal(ev.char_alignment("abc", ""), [0, 0, 0])
  np.testing.assert_array_equal(ev.char_alignment("abc", "xxabcxx"), [1, 1, 1])
  assert ev.char_alignment("ab", "ba").sum() == 1     # one hit + del + ins (cost 2), not two substitutions
  assert ev.char_alignment("", "abc").shape == (0,)
  rng = np.random.default_rng(0)
  for _ in range(60):
    ref = "".join(rng.choice(list("abc"), rng.integers(0, 6)))
    hyp = "".join(rng.choice(list("abc"), rng.integers(0, 6)))
    hit = ev.char_alignment(ref, hyp)
    cost, hits = _oracle(ref, hyp)
    assert hit.sum() == hits, (ref, hyp)
    assert _is_subsequence([c for c, k in zip(ref, hit) if k], hyp), (ref, hyp)
    if ref and hyp:   # the cost agrees with jiwer's edit counts
      e = text_metrics.char_errors([ref], [hyp])
      assert e.substitutions + e.deletions + e.insertions == cost, (ref, hyp)


def test_shared_form_chars_and_accuracy():
  cfg = tiny_cfg()
  d = cfg.data
  w = build_world(int(d.seed), int(d.lexicon_size), int(d.max_homophones), int(d.n_speakers),
                  float(d.shared_sign_fraction))
  assert len(set(w.chars)) == len(w.chars)
  shared = ev.shared_form_chars(d)
  assert 0 < len(shared) < len(w.chars)
  for c, f in zip(w.chars, w.char_form):   # shared <=> another character has the same manual form
    others = [o for o, g in zip(w.chars, w.char_form) if g == f and o != c]
    assert (c in shared) == bool(others), c
  # SLT samples: the clip's gloss_form agrees (a shared form occurs twice in the world's char_form)
  s = data_lib.sources(d, "test")["sign"][0]
  for cid, form in zip(s["gloss_ids"], s["gloss_form"]):
    assert (w.chars[cid] in shared) == (np.sum(w.char_form == form) > 1)
  a, b = sorted(shared)[:2]
  o = next(c for c in w.chars if c not in shared)
  got = ev.shared_accuracy([{"ref": a + o + b, "hyp": a + o}, {"ref": o, "hyp": "x"}], shared)
  assert got == {"shared_char_acc": 0.5, "shared_n": 2, "other_char_acc": 0.5, "other_n": 2}


def test_eval_snr_babble_is_exact_and_reproducible():
  cfg = ev.eval_config(tiny_cfg(), "asr")
  tok = data_lib.tokenizer(cfg)
  srcs = data_lib.sources(cfg.data, "test")
  clean = data_lib.prepare(1, "asr", None, cfg=cfg, srcs=srcs, tok=tok)
  noisy = data_lib.prepare(1, "asr", None, cfg=cfg, srcs=srcs, tok=tok, snr=5.0)
  again = data_lib.prepare(1, "asr", None, cfg=cfg, srcs=srcs, tok=tok, snr=5.0)
  np.testing.assert_array_equal(noisy["audio"], again["audio"])
  assert not np.array_equal(noisy["audio"], clean["audio"])
  wav = np.asarray(srcs["speech"][1]["audio"], np.float32)
  mixed = augment.add_babble(wav, data_lib.babble_pool(cfg.data), np.random.default_rng(1), 5.0)
  np.testing.assert_array_equal(noisy["audio"], data_lib.clip_mels(mixed, clean["n_frames"]))
  noise = mixed.astype(np.float64) - wav
  snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise ** 2))
  assert abs(snr - 5.0) < 1e-3, snr
  # SLT / VSR ignore it; the eval config holds exactly the task's modalities
  vsr = ev.eval_config(tiny_cfg(), "vsr")
  assert data_lib.modalities(vsr) == ("lip",) and data_lib.modalities(cfg) == ("audio",)
  e1 = data_lib.prepare(1, "vsr", None, cfg=vsr, srcs=srcs, tok=tok, snr=-5.0)
  e2 = data_lib.prepare(1, "vsr", None, cfg=vsr, srcs=srcs, tok=tok)
  np.testing.assert_array_equal(e1["lip"], e2["lip"])


def test_metrics_of_char_and_word_units():
  rows = [{"ref": "我爱你", "hyp": "我你"}, {"ref": "他好", "hyp": "他好"}]
  m = ev.metrics_of("vsr", rows)
  assert m["vsr/unit"] == "char" and m["vsr/n"] == 2 and "vsr/wer" not in m
  assert m["vsr/cer"] == pytest.approx(1 / 5)
  assert m["vsr/bleu4"] == pytest.approx(text_metrics.bleu(["我 爱 你", "他 好"], ["我 你", "他 好"], tokenize="none"))
  assert m["vsr/rougeL"] == pytest.approx(text_metrics.rouge_l(["我爱你", "他好"], ["我你", "他好"], chinese=True))
  w = ev.metrics_of("asr", [{"ref": "a b c", "hyp": "a c"}])
  assert w["asr/unit"] == "word" and w["asr/wer"] == pytest.approx(1 / 3) and "asr/cer" not in w


# ----------------------------------------------------------------------------- evaluate on the trained workdir

@pytest.mark.slow
def test_evaluate_scores_the_decoder_and_writes_per_task_files(trained, capsys):
  cfg, task, wd = trained
  slt = ev.run_eval(wd, task="slt", n=2)
  asr = ev.run_eval(wd, task="asr", n=2, snr=-5.0)
  printed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
  assert printed == [slt, asr]
  assert asr["step"] == 2 and asr["task"] == "asr" and asr["snr"] == -5.0 and asr["split"] == "test"
  assert set(k for k in asr if "/" in k) == {"asr/cer", "asr/bleu4", "asr/rougeL", "asr/unit", "asr/n"}
  for name, rec in (("2_slt", slt), ("2_asr_snr-5", asr)):   # one file per task / SNR: nothing overwritten
    with open(os.path.join(wd, "eval", name + ".json")) as f:
      assert json.loads(f.read()) == rec
    assert os.path.isfile(os.path.join(wd, "eval", name + "_transcripts.txt"))
  # the scores are shared.metrics over the decoder's output on the collated eval examples (refs: the sentences)
  from shared.checkpoint import restore
  variables = restore(wd).variables
  ecfg = ev.eval_config(cfg, "slt")
  ex = data_lib.eval_examples(ecfg, task.tokenizer, "test", 2, tasks=("slt",))
  refs = [data_lib.sources(cfg.data, "test")["sign"][i]["text"] for i in range(2)]
  hyps = task.decoder.decode(variables, data_lib.collate([e for e, _ in ex], cfg=ecfg, tok=task.tokenizer), "slt")
  assert slt["slt/cer"] == pytest.approx(text_metrics.chinese_cer(refs, hyps)) and slt["slt/n"] == 2
  assert slt["slt/rougeL"] == pytest.approx(text_metrics.rouge_l(refs, hyps, chinese=True))
  shared = ev.shared_form_chars(cfg.data)
  assert slt["slt/shared_n"] == sum(c in shared for r in refs for c in r)
  assert slt["slt/other_n"] == sum(c not in shared for r in refs for c in r)
  with open(os.path.join(wd, "eval", "2_slt_transcripts.txt"), encoding="utf-8") as f:
    assert f"[slt] ref: {refs[0]}\n[slt] hyp: {hyps[0]}\n" in f.read()


@pytest.mark.slow
def test_evaluate_cli_one_json_line(trained):
  cfg, task, wd = trained
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "trimodal_jax.evaluate", "--workdir", wd, "--n", "1"]
  p = subprocess.run(base + ["--task", "avsr", "--snr", "10"], capture_output=True, text=True, cwd=ROOT, env=env,
                     timeout=400)
  assert p.returncode == 0, p.stderr[-3000:]
  out = [l for l in p.stdout.splitlines() if l.startswith("{")]
  assert len(out) == 1, p.stdout
  rec = json.loads(out[0])
  assert rec["task"] == "avsr" and rec["snr"] == 10.0 and rec["n"] == 1 and rec["avsr/n"] == 1
  with open(os.path.join(wd, "eval", "2_avsr_snr10.json")) as f:
    assert json.loads(f.read()) == rec
  p = subprocess.run(base + ["--task", "sign"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
  assert p.returncode == 2 and "--task" in p.stderr.strip().splitlines()[-1], p.stderr[-2000:]


def test_make_hooks_splits_eval_samples(monkeypatch):
  cfg = tiny_cfg()
  cfg.data.eval_samples = 8
  seen = []
  monkeypatch.setattr(ev, "transcribe", lambda task, v, c, t, split, n, snr=None: seen.append((t, n)) or
                      [{"ref": "我", "hyp": "我"}])
  eval_fn, _ = ev.make_hooks(cfg, None)
  m = eval_fn(None, 0)
  assert seen == [("slt", 2), ("vsr", 2), ("asr", 2), ("avsr", 2)] and m["asr/cer"] == 0.0


# ----------------------------------------------------------------------------- infer

def _raw(cfg, task, index=0):
  """The SynthCue test clip `index` as infer's raw arrays (what the files hold)."""
  from trimodal_jax.model import TASK_MODALITIES
  s = data_lib.sources(cfg.data, "test")["sign" if task == "slt" else "speech"][index]
  full = {"sign": s.get("video"), "lip": s["lip"], "audio": s.get("audio")}
  return {m: full[m] for m in TASK_MODALITIES[task]}


def test_infer_example_is_the_evaluation_example():
  from trimodal_jax import infer
  from trimodal_jax.model import TASKS
  cfg = tiny_cfg()
  tok = data_lib.tokenizer(cfg)
  srcs = data_lib.sources(cfg.data, "test")
  for task in TASKS:
    ecfg = ev.eval_config(cfg, task)
    want = data_lib.prepare(0, task, None, cfg=ecfg, srcs=srcs, tok=tok)
    got = infer.make_example(ecfg, tok, task, _raw(cfg, task))
    assert set(got) == set(want) and got["n_frames"] == want["n_frames"], task
    for k in want:
      if k != "target_ids":
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"{task} {k}")
  # other frame sizes: centre square, box resize (a constant frame stays constant)
  x = np.full((3, 40, 50, 3), 77, np.uint8)
  np.testing.assert_array_equal(infer.sign_resize(x, 16), np.full((3, 16, 16, 3), 77, np.uint8))


@pytest.mark.slow
def test_infer_files_decode_like_evaluation_and_errors_name_the_file(trained, tmp_path):
  from shared.data import media
  from shared.errors import DataError
  from trimodal_jax import infer
  cfg, task, wd = trained
  raw = _raw(cfg, "asr")
  wav = str(tmp_path / "speech.wav")
  media.write_wav(wav, raw["audio"], 16000)                    # FLOAT wav: exact
  got = infer.infer(wd, "asr", audio=wav)
  from shared.checkpoint import restore
  variables = restore(wd).variables
  ecfg = ev.eval_config(cfg, "asr")
  ex = data_lib.eval_examples(ecfg, task.tokenizer, "test", 1, tasks=("asr",))
  want = task.decoder.decode(variables, data_lib.collate([ex[0][0]], cfg=ecfg, tok=task.tokenizer), "asr")[0]
  assert got == {"task": "asr", "text": want, "n_frames": int(ex[0][0]["n_frames"]), "audio": wav}
  # SLT from two mp4 files (h264, near-lossless): runs, the prepared frames close to evaluation's
  s = _raw(cfg, "slt")
  sign, lip = str(tmp_path / "sign.mp4"), str(tmp_path / "lip.mp4")
  media.write_mp4(sign, s["sign"], 25.0, crf=0, pix_fmt="yuv444p")
  media.write_mp4(lip, s["lip"], 25.0, crf=0, pix_fmt="yuv444p")
  arrays = infer.read_inputs(cfg, "slt", sign=sign, lip=lip)
  e1 = infer.make_example(cfg, task.tokenizer, "slt", arrays)
  e0 = infer.make_example(cfg, task.tokenizer, "slt", s)
  assert np.abs(e1["sign"].astype(int) - e0["sign"]).max() <= 3 and np.abs(e1["lip"].astype(int) - e0["lip"]).max() <= 3
  out = infer.infer(wd, "slt", sign=sign, lip=lip)
  assert out["task"] == "slt" and isinstance(out["text"], str) and out["n_frames"] == len(s["lip"])
  # errors name the file (or the missing flag)
  with pytest.raises(DataError, match="needs --lip and --audio; missing --lip"):
    infer.read_inputs(cfg, "avsr", audio=wav)
  slow = str(tmp_path / "8k.wav")
  media.write_wav(slow, raw["audio"][::2], 8000)
  with pytest.raises(DataError, match=r"sample rate 8000 Hz.*8k\.wav"):
    infer.read_inputs(cfg, "asr", audio=slow)
  long = str(tmp_path / "long.wav")
  media.write_wav(long, np.zeros(65 * 640, np.float32), 16000)
  with pytest.raises(DataError, match=r"65 frames.*largest frame bucket 64.*long\.wav"):
    infer.infer(wd, "asr", audio=long)
  with pytest.raises(DataError, match="does not exist.*nope.mp4"):
    infer.read_inputs(cfg, "vsr", lip=str(tmp_path / "nope.mp4"))
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-m", "trimodal_jax.infer", "--workdir", wd, "--task", "asr", "--audio", slow],
                     capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
  assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: DataError: sample rate 8000")


# ----------------------------------------------------------------------------- export

def _flat(tree):
  from flax import traverse_util
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.mark.slow
def test_export_peft_parity_encoders_adapters_round_trip(trained, tmp_path):
  import jax
  import jax.numpy as jnp
  import torch
  from peft import PeftModel
  from safetensors.numpy import load_file
  from transformers import AutoTokenizer, LlamaForCausalLM

  from shared.checkpoint import restore
  from shared.nn.conv import Conv
  from shared.weights import load_pretrained
  from trimodal_jax import export as ex
  from trimodal_jax.model import PROMPTS, MappingNetwork, llm_module
  cfg, task, wd = trained
  r = restore(wd)
  p, state = jax.tree.map(np.asarray, r.params), jax.tree.map(np.asarray, r.model_state)
  c = task.model.config
  out = ex.export(wd, str(tmp_path / "rel"))
  with open(os.path.join(out, "release.json")) as f:
    info = json.load(f)
  assert info["step"] == 2 and info["llm_base"] == os.path.join(out, "llm")
  assert set(info["files"]) == {"llm", "llm_adapter", "sign_encoder", "lip_encoder", "audio_encoder", "adapters",
                                "tokenizer"}
  assert info["tasks"]["avsr"]["modalities"] == ["lip", "audio"] and info["strides"] == {"sign": 2, "lip": 2,
                                                                                         "audio": 4}
  # LLM: PEFT adapter over the exported base == our LLM with LoRA (fp32, 1e-5 relative)
  base = LlamaForCausalLM.from_pretrained(os.path.join(out, "llm"), torch_dtype=torch.float32).eval()
  ids = np.random.default_rng(0).integers(4, c.llm.vocab_size, (2, 9)).astype(np.int64)
  with torch.no_grad():
    base_logits = base(torch.from_numpy(ids)).logits.numpy()
    peft_logits = PeftModel.from_pretrained(base, os.path.join(out, "llm_adapter")).eval()(
        torch.from_numpy(ids)).logits.numpy()
  ours = np.asarray(llm_module(c).apply({"params": p["llm"]}, jnp.asarray(ids, jnp.int32)))
  scale = np.abs(ours).max()
  err = np.abs(peft_logits - ours).max() / scale
  assert err < 1e-5, err
  assert np.abs(base_logits - ours).max() / scale > 1e3 * max(err, 1e-9)      # the LoRA matters (trained lora_b)
  # the adapter reads back through shared.weights too
  _, back = load_pretrained(os.path.join(out, "llm_adapter"))
  got, want = _flat(back), _flat(p["llm"])
  assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
  # encoders: load_pretrained gives back exactly the run's params (and the lip BatchNorm statistics)
  for name, tree in (("sign_encoder", p["sign_encoder"]), ("audio_encoder", p["audio_encoder"]),
                     ("lip_encoder", {"params": p["lip_encoder"], "batch_stats": state["batch_stats"]["lip_encoder"]})):
    _, back = load_pretrained(os.path.join(out, name))
    got, want = _flat(back), _flat(tree)
    assert set(got) == set(want), name
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name} {k}")
  # adapters / mapping: torch Conv1d / Linear with the exported tensors == our modules
  sd = {k: torch.from_numpy(v) for k, v in load_file(os.path.join(out, "adapters.safetensors")).items()}
  rng = np.random.default_rng(1)
  for m, d in c.widths().items():
    k = c.strides()[m]
    x = rng.normal(size=(2, 4 * k + 1, d)).astype(np.float32)
    conv = torch.nn.Conv1d(d, d, k, stride=k)
    conv.load_state_dict({"weight": sd[f"{m}_adapter.weight"], "bias": sd[f"{m}_adapter.bias"]})
    with torch.no_grad():
      theirs = conv(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2).numpy()
    mine = np.asarray(Conv(d, (k,), strides=(k,), padding="VALID").apply({"params": p[f"{m}_adapter"]}, x))
    np.testing.assert_allclose(theirs, mine, rtol=1e-5, atol=1e-5 * np.abs(mine).max(), err_msg=m)
  x = rng.normal(size=(3, c.concat_dim)).astype(np.float32)
  mlp = torch.nn.Sequential(torch.nn.Linear(c.concat_dim, c.hidden_dim), torch.nn.ReLU(),
                            torch.nn.Linear(c.hidden_dim, c.llm.hidden_size))
  mlp.load_state_dict({"0.weight": sd["mapping.fc1.weight"], "0.bias": sd["mapping.fc1.bias"],
                       "2.weight": sd["mapping.fc2.weight"], "2.bias": sd["mapping.fc2.bias"]})
  with torch.no_grad():
    theirs = mlp(torch.from_numpy(x)).numpy()
  mine = np.asarray(MappingNetwork(c.hidden_dim, c.llm.hidden_size, c.mapping_act).apply({"params": p["mapping"]}, x))
  np.testing.assert_allclose(theirs, mine, rtol=1e-5, atol=1e-5 * np.abs(mine).max())
  # tokenizer and prompts
  tok = AutoTokenizer.from_pretrained(os.path.join(out, "tokenizer"))
  assert tok.encode(PROMPTS["vsr"], add_special_tokens=False) == info["tasks"]["vsr"]["instruction_ids"][1:]
  assert tok.eos_token_id == info["tokens"]["eos"] == task.tokenizer.eos_token_id
  # bfloat16 release: tensors written in bfloat16
  out16 = ex.export(wd, str(tmp_path / "rel16"), dtype="bfloat16")
  from safetensors import safe_open
  with safe_open(os.path.join(out16, "adapters.safetensors"), "np") as f:
    assert f.get_slice("mapping.fc1.weight").get_dtype() == "BF16"
  with open(os.path.join(out16, "llm", "config.json")) as f:
    assert json.load(f)["dtype"] == "bfloat16"


def test_bleurt_scores_the_slt_rows(tmp_path):
  from shared.metrics.bleurt import BleurtScorer
  from tests.metrics.test_bleurt import _oracle, _write
  _, sd, cfg = _oracle(False)
  d = _write(str(tmp_path / "bleurt"), sd, cfg, "safetensors")
  rows = [{"ref": "the cat sat", "hyp": "the cat"}, {"ref": "a mat", "hyp": "a mat"}]
  got = ev.metrics_of("slt", rows, bleurt=d)
  want = BleurtScorer(d)([r["ref"] for r in rows], [r["hyp"] for r in rows]).mean()
  assert got["slt/bleurt"] == pytest.approx(float(want), rel=1e-6)
