"""XLA flags for the suite and for the subprocesses tests start (workers, CLI runs)."""

# LLVM optimisation level 0: the suite's programs are small and each is compiled about once, so compile time
# dominates (about a quarter less CPU time for the suite); numerics are unchanged (the HLO passes still run)
FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a CPU process with `devices` simulated devices and fast compiles."""
  return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
