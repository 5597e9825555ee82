"""`python -m examples.csr --config configs/demo/csr_tiny.py --workdir DIR`

The trainer's SynthCue learning check: cued-speech recognition from pose keypoints (mouth + cueing hand)
with a small Transformer encoder and CTC over toneless pinyin syllables. Lips alone cannot tell b/p/m
apart and the hand alone cannot tell its consonant group's members apart (SynthCue's design), so
learning here needs both streams. Eval: syllable error rate on held-out speakers (SynthCue `test`);
samples: reference / hypothesis pinyin per utterance in DIR/samples/<step>/transcripts.txt.
"""
from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples.sort import block_stack
from shared import cli, config as config_lib, train as train_lib
from shared.data.pipeline import collate_fn, make_iterator
from shared.data.synthcue import synthcue_source
from shared.decoding.ctc import ctc_greedy
from shared.metrics.text import wer
from shared.text.pinyin import pinyin_vocab

VOCAB = pinyin_vocab()  # id 0 = <pad> = CTC blank


class PoseCTC(nn.Module):
  """pose [B, T, K, 3] float32 -> per-frame log-probs [B, T, vocab] float32."""
  vocab: int
  dim: int
  heads: int
  layers: int
  mlp: int
  max_frames: int = 512
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, pose):
    b, t = pose.shape[:2]
    # face-centred coordinates (nose = keypoint 2) and their frame-to-frame motion, at unit scale
    xy = (pose[..., :2] - pose[:, :, 2:3, :2]) * 8.0 * pose[..., 2:3]
    motion = jnp.concatenate([jnp.zeros_like(xy[:, :1]), xy[:, 1:] - xy[:, :-1]], axis=1) * 4.0
    x = jnp.concatenate([xy, motion, pose[..., 2:3]], axis=-1).reshape(b, t, -1)
    w_in = self.param("w_in", nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, "embed")),
                      (x.shape[-1], self.dim), jnp.float32)
    pos = self.param("pos", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")),
                     (self.max_frames, self.dim), jnp.float32)
    x = x @ w_in + pos[None, :t]
    # a short temporal convolution lets each frame see its neighbours (the hand leads the lips)
    x = x + nn.Conv(self.dim, (5,), padding="SAME", feature_group_count=self.dim, name="tconv",
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                             ("conv_kernel", "conv_in", "embed")))(x)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    x, _ = block_stack(self.layers, self.remat)(self.dim, self.heads, self.mlp, self.dtype, name="blocks")(x, None)
    x = nn.LayerNorm(name="ln_f", dtype=jnp.float32, param_dtype=jnp.float32)(x)
    w_out = self.param("w_out", nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "vocab")),
                       (self.dim, self.vocab), jnp.float32)
    return jax.nn.log_softmax(x @ w_out, axis=-1)


def _prepare(sample):
  """SynthCue sample -> the arrays this job batches."""
  return {"pose": sample["pose"], "labels": VOCAB.encode(sample["pinyin"].split())}


def source(cfg, split: str):
  """Cued-speech SynthCue, pose only (no video or audio drawn)."""
  return synthcue_source(cfg.data, split, "cued", render_video=False, render_audio=False)


def batch_fn(cfg):
  return collate_fn(keys=["pose", "labels"], buckets={"pose": list(cfg.data.frame_buckets),
                                                       "labels": list(cfg.data.label_buckets)})


def make_task(cfg) -> train_lib.Task:
  m = cfg.model
  model = PoseCTC(vocab=len(VOCAB), dim=m.dim, heads=m.heads, layers=m.layers, mlp=m.mlp,
                  dtype=config_lib.dtype(cfg.trainer.precision.compute_dtype), remat=cfg.trainer.remat)
  per_host = cfg.trainer.batch_size // jax.process_count()
  collate = batch_fn(cfg)

  def init_params(rng, batch):
    return model.init(rng, jnp.asarray(batch["pose"]))["params"]

  def loss_fn(params, batch, rng):
    """Summed per-utterance CTC losses; weight = the number of labels (the trainer divides)."""
    del rng
    logp = model.apply({"params": params}, batch["pose"])
    frame_pad = 1.0 - batch["pose_mask"].astype(jnp.float32)
    label_pad = 1.0 - batch["labels_mask"].astype(jnp.float32)
    per_seq = optax.ctc_loss(logp, frame_pad, batch["labels"], label_pad, blank_id=VOCAB.blank_id)
    n_labels = jnp.sum(batch["labels_mask"].astype(jnp.float32))
    return jnp.sum(per_seq), {"weight": n_labels, "ctc_per_utterance": jnp.mean(per_seq)}

  def make_iter():
    src = source(cfg, "train")
    return make_iterator(src, collate, batch_size=per_host, seed=cfg.trainer.seed, map_fn=_prepare)

  apply = jax.jit(lambda params, pose: model.apply({"params": params}, pose))

  def transcribe(params, split: str, n: int):
    src = source(cfg, split)
    refs, hyps = [], []
    for start in range(0, n, per_host):
      samples = [_prepare(src[i]) for i in range(start, min(start + per_host, n))]
      batch = collate([*samples])
      logp = apply(params, jnp.asarray(batch["pose"]))
      tokens, lengths = ctc_greedy(logp, jnp.asarray(batch["pose_lengths"]), blank=VOCAB.blank_id)
      tokens, lengths = np.asarray(tokens), np.asarray(lengths)
      for i, s in enumerate(samples):
        refs.append(" ".join(VOCAB.decode(s["labels"])))
        hyps.append(" ".join(VOCAB.decode(tokens[i, :lengths[i]])))
    return refs, hyps

  def eval_fn(variables, step):
    del step
    refs, hyps = transcribe(variables["params"], "test", cfg.data.eval_samples)
    return {"syllable_error_rate_heldout_speakers": wer(refs, hyps)}

  def sample_fn(variables, step, out_dir):
    del step
    refs, hyps = transcribe(variables["params"], "test", 8)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "transcripts.txt"), "w", encoding="utf-8") as f:
      for r, h in zip(refs, hyps):
        f.write(f"ref: {r}\nhyp: {h}\n\n")

  task = train_lib.Task(init_params=init_params, loss_fn=loss_fn, make_train_iter=make_iter,
                        eval_fn=eval_fn, sample_fn=sample_fn)
  task.transcribe = transcribe
  return task


def main():
  cfg = cli.train_config()
  cli.start_distributed()
  task = make_task(cfg)
  result = train_lib.train(cfg, task, cli.FLAGS.workdir)
  if jax.process_index() == 0:
    params = result.state.params
    refs, hyps = task.transcribe(params, "test", cfg.data.eval_samples)
    print(f"{result.status} at step {result.step}: syllable error rate on held-out speakers "
          f"{wer(refs, hyps):.3f} ({len(refs)} utterances)", flush=True)
    for r, h in list(zip(refs, hyps))[:3]:
      print(f"  ref: {r}\n  hyp: {h}")


if __name__ == "__main__":
  cli.define_flags()
  cli.run(main)
