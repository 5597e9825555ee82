"""Scaling experiments for every system: plan, run and read a scaling study, and size a run for hardware you
do not have (`python -m shared.scaling sweep|cell|fit|compile|flops`; shared/scaling/__main__.py).

  flops.py       analytic FLOPs of a train step, counted from the program's matmuls (3 x forward)
  validation.py  the low-variance validation loss helpers behind Task.val_loss_fn
  systems.py     a config's system module (make_task, scale_config, batch_spec); parameter counts
  sweep.py       isoFLOP sweeps: cells (budget x width), resumable, summary rows; cluster launch commands
  fit.py         Chinchilla approach 2 (isoFLOP parabolas, optimal size vs compute) and the L(C) frontier
                 with bootstrap intervals; plots.py draws them
  aot.py         ahead-of-time compile of the real train step for a TPU slice (libtpu) or 8 GPUs:
                 per-device memory, whether it fits, FLOPs
"""
