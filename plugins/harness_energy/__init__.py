"""Built-in energy meters for harness: NVML energy counter, NVML power sampling, RAPL,
and a CPU-time × watts-per-core estimate (labelled an estimate)."""
