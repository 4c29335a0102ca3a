"""Rollout engines behind the ``RolloutEngine`` contract.

``engines.vllm_engine`` (the only vllm import) and ``engines.hf_engine`` are imported
by name so that nothing here pulls in vLLM unless a config asks for it.
"""
