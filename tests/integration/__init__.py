"""Integration tests: the CLI and pipeline end to end, training, reports, the error analysis, profiling, scale-out."""
