"""VALLR-Pin stage 2 (vsr_pin_jax/refiner.py, refine_data.py): the template's labels, record-file errors, a tiny
pretrain run whose loss falls, a tiny LoRA run on synthetic error-aware records where only LoRA leaves change, and
the exported PEFT adapter on the exported base (transformers Qwen3ForCausalLM) giving our logits."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest
from flax import traverse_util

from configs.vsr_pin.refine_tiny import get_config
from shared import train as train_lib
from shared.data.synthcue import SynthCue
from shared.errors import ConfigError, DataError
from vsr_pin_jax import refine_data as rd
from vsr_pin_jax import refiner

WORLD = dict(seed=0, lexicon_size=16, clauses=(1, 1))
MAX_LEN = 64
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def synth(split: str, n: int, **kw):
  src = SynthCue(split=split, num_samples=max(n, 1), mode="speech", render_video=False, render_audio=False,
                 **WORLD)
  return rd.synthetic_records(src, n, nbest=3, **kw)


def tiny(stage: str, steps: int, **data):
  c = get_config(stage)
  c.data.update(dict(WORLD, max_len=MAX_LEN, eval_sentences=0, **data))
  c.model.update(dict(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16))
  c.trainer.update(dict(total_steps=steps, batch_size=16, log_every=steps // 4, eval_every=0))
  c.trainer.schedule.warmup_steps = 5
  c.trainer.checkpoint.update(dict(every_steps=0, async_save=False))
  c.refine.update(dict(batch_size=8, max_new_tokens=6, eval_max_records=8))
  return c


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["loss"] for r in rows if "loss" in r], rows


# --------------------------------------------------------------------------- template, records

def test_template_labels_are_minus_100_exactly_on_the_prompt():
  tok = rd.synthcue_tokenizer()
  rec = synth("train", 4)[0]
  text = rd.render_prompt(rec)
  assert rec["pinyin"] in text and text.endswith(rd.ANSWER_HEADER)
  assert [f"{k}. {h}" in text for k, h in enumerate(rec["nbest"], 1)] == [True] * 3
  prompt, ans = rd.prompt_ids(tok, rec), rd.answer_ids(tok, rec["truth"])
  assert tok.unk_token_id not in prompt + ans
  e = rd.encode_record(tok, rec, MAX_LEN)
  ids, labels, n = e["input_ids"], e["labels"], len(prompt) + len(ans)
  assert ids.dtype == labels.dtype == np.int32 and ids.shape == labels.shape == (MAX_LEN,)
  assert (labels[:len(prompt)] == -100).all() and list(ids[:len(prompt)]) == prompt
  assert list(labels[len(prompt):n]) == list(ids[len(prompt):n]) == ans and ans[-1] == tok.eos_token_id
  assert (labels[n:] == -100).all() and (ids[n:] == tok.pad_token_id).all() and e["attention_mask"].sum() == n
  assert rd.decode_answer(tok, labels[len(prompt):]) == rec["truth"]
  np.testing.assert_array_equal(rd.encode_prompt(tok, rec, MAX_LEN), prompt)
  # too long for max_len: hypotheses are dropped from the end; not even one: DataError naming the record
  short = rd.encode_record(tok, rec, n - 2)
  assert (short["labels"] != -100).sum() == len(ans) and short["attention_mask"].sum() < n
  with pytest.raises(DataError, match=rec["id"]):
    rd.encode_record(tok, rec, 12)
  # left-padded generation batch: every row ends with its prompt
  ids_b, mask_b = rd.prompt_batch(tok, [rec, synth("train", 4)[1]], MAX_LEN, rows=3)
  assert ids_b.shape[0] == 3 and ids_b.shape[1] % 16 == 0 and list(ids_b[0, -len(prompt):]) == prompt
  assert mask_b[0].sum() == len(prompt) and mask_b[0, -1] == 1
  # pretraining: the answer side, once or repeated; labels on the sentence(s) and the eos only
  head = [tok.bos_token_id] + rd._encode(tok, rd.ANSWER_HEADER)
  for repeat in (1, 2):
    e = rd.encode_sentence(tok, rec["truth"], MAX_LEN, repeat)
    body = ans[:-1]
    want = head + (body + rd._encode(tok, rd.ANSWER_HEADER)) * (repeat - 1) + ans
    assert list(e["input_ids"][:len(want)]) == want and (e["input_ids"][len(want):] == tok.pad_token_id).all()
    assert int((e["labels"] != -100).sum()) == repeat * len(body) + 1
    assert (e["labels"][:len(head)] == -100).all() and e["labels"][len(want) - 1] == tok.eos_token_id
  # a chat-template tokenizer (ChatML, as Qwen3-Instruct): the user turn + assistant header is the prompt
  chat = rd.synthcue_tokenizer()
  chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
  chat.add_tokens(["user", "assistant"])
  chat.chat_template, chat.eos_token = CHATML, "<|im_end|>"
  p = rd.prompt_ids(chat, rec)
  toks = chat.convert_ids_to_tokens(p)
  assert toks[:2] == ["<|im_start|>", "user"] and toks[-2:] == ["<|im_start|>", "assistant"]
  assert chat.unk_token_id not in p
  e = rd.encode_record(chat, rec, MAX_LEN + 8)
  assert (e["labels"][:len(p)] == -100).all() and e["labels"][len(p)] != -100
  assert e["labels"][len(p) + len(rec["truth"])] == chat.convert_tokens_to_ids("<|im_end|>")


def test_record_files_roundtrip_and_errors_name_file_line_key(tmp_path):
  recs = synth("train", 6)
  assert {r["stage"] for r in recs} == set(rd.STAGES) and all(len(r["nbest"]) == 3 for r in recs)
  assert all(r["cer"] == 0.0 for r in recs if r["nbest"][0] == r["truth"])
  assert any(r["cer"] > 0 for r in recs)
  path = str(tmp_path / "ok.jsonl")
  assert rd.write_records(path, recs) == 6
  assert rd.read_records(path) == recs
  lines = open(path, encoding="utf-8").read().splitlines()

  def broken(name, lineno, text):
    p = str(tmp_path / name)
    with open(p, "w", encoding="utf-8") as f:
      f.write("\n".join(lines[:lineno - 1] + [text] + lines[lineno:]) + "\n")
    return p

  def edit(lineno, **kw):
    r = json.loads(lines[lineno - 1])
    for k, v in kw.items():
      if v is None:
        r.pop(k)
      else:
        r[k] = v
    return json.dumps(r, ensure_ascii=False)

  cases = [("json.jsonl", 2, "{not json", None), ("truth.jsonl", 3, edit(3, truth=None), "truth"),
           ("scores.jsonl", 4, edit(4, nbest_scores=[1.0]), "nbest_scores"),
           ("nbest.jsonl", 2, edit(2, nbest=[]), "nbest"), ("stage.jsonl", 5, edit(5, stage=""), "stage"),
           ("cer.jsonl", 1, edit(1, cer="0.1"), "cer")]
  for name, lineno, text, key in cases:
    p = broken(name, lineno, text)
    with pytest.raises(DataError) as e:
      rd.read_records(p)
    msg = str(e.value)
    assert p in msg and f"line {lineno}:" in msg, msg
    assert key is None or (e.value.key == key and repr(key) in msg), msg
  with pytest.raises(DataError, match="does not exist"):
    rd.read_records(str(tmp_path / "missing.jsonl"))
  # the lora stage names what it lacks before anything is built
  cfg = tiny("lora", 4)
  with pytest.raises(ConfigError, match="data.train_records"):
    refiner.make_task(cfg)
  cfg.data.train_records = path
  with pytest.raises(ConfigError, match="init.base.path"):
    refiner.make_task(cfg)


def test_pretrain_mix_sentences_repeats_and_generic_correction_records(tmp_path):
  """The stand-in's pretraining draws, per index and reproducibly, a generic correction record (synthetic noise on
  that index's sentence), the sentence twice, or once, in the configured shares; the refiner's SynthCue world is
  the lip reader's."""
  from configs.vsr_pin import tiny as stage1
  base = get_config("pretrain").data
  assert all(base[k] == v == stage1.get_config().data[k] for k, v in stage1.WORLD.items())
  cfg = tiny("pretrain", 10)
  src = refiner.sentence_source(cfg, "train", repeat=0.25, instruct=0.5)
  got = [src[i] for i in range(400)]
  assert [src[i] for i in (3, 7)] == [got[3], got[7]]
  recs = [g["record"] for g in got if "record" in g]
  twice = [g for g in got if g.get("repeat") == 2]
  assert abs(len(recs) / 400 - 0.5) < 0.08 and abs(len(twice) / 400 - 0.25) < 0.07
  tok = rd.synthcue_tokenizer()
  for i, g in enumerate(got[:40]):
    truth = "".join(src.src.world.chars[c] for c in src.src.sentence(i)[0])
    e = refiner._encode_text(tok, MAX_LEN, g, nbest=3)
    assert rd.decode_answer(tok, e["labels"][e["labels"] != -100]) == truth * g.get("repeat", 1)
    if "record" in g:
      assert g["record"]["truth"] == truth and len(g["record"]["nbest"]) == 3
      np.testing.assert_array_equal(e["input_ids"], rd.encode_record(tok, g["record"], MAX_LEN, nbest=3)["input_ids"])
  assert any(r["nbest"][0] != r["truth"] for r in recs)
  assert not any("record" in g for g in (refiner.sentence_source(cfg, "train", 0.25)[i] for i in range(50)))
  # the command-line synthetic records: the lip reader's world (the tiny config's data section) by default
  out = str(tmp_path / "syn")
  assert rd.main(["--out", out, "--train", "4", "--eval", "2"]) == 0
  lip = refiner.sentence_source(stage1.get_config(), "train")
  assert [r["truth"] for r in rd.read_records(os.path.join(out, "train.jsonl"))] == [lip[i]["text"] for i in range(4)]
  assert len(rd.read_records(os.path.join(out, "eval.jsonl"))) == 2


# --------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A tiny pretrain run, its exported base, a LoRA run on synthetic records over it, the exported adapter."""
  root = tmp_path_factory.mktemp("refiner")
  rec_dir = str(root / "records")
  rd.write_records(os.path.join(rec_dir, "train.jsonl"), synth("train", 96))
  rd.write_records(os.path.join(rec_dir, "eval.jsonl"), synth("test", 8))
  w0, w1 = str(root / "pretrain"), str(root / "lora")
  pre = train_lib.train(tiny("pretrain", 60), refiner.make_task(tiny("pretrain", 60)), w0)
  base = refiner.export_refiner(w0, str(root / "base"))
  cfg = tiny("lora", 24, train_records=os.path.join(rec_dir, "train.jsonl"),
             eval_records=os.path.join(rec_dir, "eval.jsonl"))
  cfg.trainer.eval_every = 24
  cfg.init.base.path = base
  task = refiner.make_task(cfg)
  lora = train_lib.train(cfg, task, w1)
  adapter = refiner.export_refiner(w1, str(root / "adapter"))
  return dict(pre=pre, w0=w0, base=base, cfg=cfg, task=task, lora=lora, w1=w1, adapter=adapter, rec_dir=rec_dir)


def test_tiny_pretrain_loss_falls(runs):
  got, _ = losses(runs["w0"])
  assert runs["pre"].step == 60 and len(got) == 4
  assert got[-1] < 0.7 * got[0], got   # ln(vocab) ~ 7.2 -> the grammar's ~3 nats per character
  assert os.path.isfile(os.path.join(runs["base"], "config.json"))
  assert os.path.isfile(os.path.join(runs["base"], "tokenizer.json"))


def test_tiny_lora_changes_only_lora_leaves(runs):
  from shared.weights import load_pretrained
  _, base = load_pretrained(runs["base"])
  trained = traverse_util.flatten_dict(jax.device_get(runs["lora"].state.params))
  base = traverse_util.flatten_dict(jax.device_get(base))
  lora_keys = [k for k in trained if k[-1] in ("lora_a", "lora_b")]
  assert len(lora_keys) == 8 and set(trained) == set(base) | set(lora_keys)   # q/k/v/o x (a, b)
  for k, v in base.items():
    np.testing.assert_array_equal(np.asarray(trained[k]), np.asarray(v), err_msg="/".join(k))
  for k in lora_keys:
    if k[-1] == "lora_b":
      assert np.abs(np.asarray(trained[k])).max() > 0, k       # zero at init: it trained
  got, rows = losses(runs["w1"])
  assert got[-1] < got[0], got
  ev = [r for r in rows if "eval/cer_refined" in r]
  assert ev and ev[-1]["step"] == 24 and {"eval/cer_nbest1", "eval/cer_oracle", "eval/records"} <= set(ev[-1])
  recs = rd.read_records(os.path.join(runs["rec_dir"], "eval.jsonl"))[:3]
  out = runs["task"].refine(runs["lora"].state.params, recs)
  beam = runs["task"].refine(runs["lora"].state.params, recs, method="beam", num_beams=2)
  assert len(out) == len(beam) == 3 and all(isinstance(s, str) for s in out + beam)
  # from the workdir alone (vsr_pin_jax/evaluate.py --refiner): stage-1 rows without id / stage / cer
  rows = [{"truth": x["truth"], "nbest": x["nbest"], "nbest_scores": x["nbest_scores"], "pinyin": x["pinyin"]}
          for x in recs]
  assert refiner.refine_workdir(runs["w1"], rows) == out


def test_exported_adapter_loads_in_peft_with_our_logits(runs):
  import torch
  from peft import PeftModel
  from transformers import Qwen3ForCausalLM
  task, params = runs["task"], runs["lora"].state.params
  recs = rd.read_records(os.path.join(runs["rec_dir"], "eval.jsonl"))[:4]
  ids = np.stack([rd.encode_record(task.tokenizer, r, MAX_LEN)["input_ids"] for r in recs])
  ours = np.asarray(jax.jit(lambda p, x: task.model.apply({"params": p}, x))(jax.device_get(params), jnp.asarray(ids)))
  with open(os.path.join(runs["adapter"], "adapter_config.json")) as f:
    acfg = json.load(f)
  assert acfg["r"] == 8 and acfg["lora_alpha"] == 32.0 and acfg["base_model_name_or_path"] == runs["base"]
  base = Qwen3ForCausalLM.from_pretrained(runs["base"], torch_dtype=torch.float32).eval()
  with torch.no_grad():
    plain = base(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    pm = PeftModel.from_pretrained(base, runs["adapter"]).eval()
    theirs = pm(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
  scale = np.abs(theirs).max()
  assert np.abs(ours - theirs).max() / scale < 1e-4
  assert np.abs(plain - theirs).max() / scale > 1e-4      # the adapter really changes the logits


def test_qwen3_4b_config_sizes_and_missing_directory():
  """Paper-size config (SPECS): Qwen3-4B-Instruct-2507 shapes without any memory, LoRA r8 α32 on q/k/v/o."""
  from configs.vsr_pin import refine_qwen3_4b
  cfg = refine_qwen3_4b.get_config()
  assert (cfg.stage, cfg.lora.rank, cfg.lora.alpha, cfg.trainer.optimizer.learning_rate) == ("lora", 8, 32.0, 1e-4)
  with pytest.raises(ConfigError, match="tokenizer.path"):   # model_dir not set: no silent tiny tokenizer
    refiner.make_task(cfg)
  model = refiner.model_from_config(cfg, rd.synthcue_tokenizer())
  c = model.config
  assert (c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == \
      (2560, 9728, 36, 32, 8, 128)
  assert (c.vocab_size, c.rms_eps, c.rope_theta, c.tie_embeddings, c.qk_norm, c.family) == \
      (151936, 1e-6, 5e6, True, True, "qwen3")
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]
  flat = traverse_util.flatten_dict(nn.meta.unbox(shapes))
  n_lora = sum(int(np.prod(v.shape)) for k, v in flat.items() if refiner.is_lora_leaf("/".join(k)))
  n_all = sum(int(np.prod(v.shape)) for v in flat.values())
  assert n_lora == 36 * 8 * ((2560 + 4096) * 2 + (2560 + 1024) * 2)   # q, o: 2560<->4096; k, v: 2560->1024
  assert 4.02e9 < n_all - n_lora < 4.03e9


def test_check_base_compares_through_the_family_config(tmp_path):
  """init.base's config.json is read by the LLM family's own translation; a size that differs is named."""
  import json as _json
  from shared.models.llm import LLM, LLMConfig
  from shared.weights import llm_family
  from vsr_pin_jax.refiner import check_base
  model = LLM(LLMConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=8, qk_norm=True, tie_embeddings=True, family="qwen3"))
  cfg = llm_family.to_config(model)
  (tmp_path / "config.json").write_text(_json.dumps(cfg))
  check_base(model, str(tmp_path))                          # the same model: no error
  (tmp_path / "config.json").write_text(_json.dumps({**cfg, "intermediate_size": 96}))
  with pytest.raises(ConfigError, match="intermediate_size=64 vs the base's 96"):
    check_base(model, str(tmp_path))
