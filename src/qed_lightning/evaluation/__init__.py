"""Evaluation: benchmarks, answer checking, metrics, reports and the `qed eval` runner."""
