"""Helpers for tests and benchmarks, not for training runs.

``testing.fault_server`` is a fault-injecting OpenAI-compatible server (standard
library only, run in its own process) and ``testing.fault_server_handle.FaultServer``
starts and stops it from a test or a benchmark. ``testing.interruptions`` holds
callbacks that signal, kill or slow a run at a chosen step (preemption tests and
``bench/preemption.py``). All are imported by name.
"""
