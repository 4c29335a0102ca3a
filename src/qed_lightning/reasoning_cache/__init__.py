"""Reasoning cache (RC): reason -> summarize -> reason-again cycles over (problem,
summary) states, shared by RC training and test-time RC. Engine-free: generation is
passed in as callables."""
from qed_lightning.reasoning_cache.cycle import (
    THINK_END, THINK_START, chain_of_thought, cut_summary, run_cycles, summary_text, update_summary,
)
from qed_lightning.reasoning_cache.prompts import (
    FIRST_REASONING_PROMPT, FIRST_SUMMARY_PROMPT, REASONING_PROMPT, SUMMARY_PROMPT, RCPrompts, fill_template,
    reasoning_prompt, summary_prompt,
)
from qed_lightning.reasoning_cache.states import sample_states, servable
from qed_lightning.reasoning_cache.trajectory import (
    CycleStats, State, Trajectory, TurnOutput, cycle_stats, final_answer,
)

__all__ = [
    "FIRST_REASONING_PROMPT", "FIRST_SUMMARY_PROMPT", "REASONING_PROMPT", "SUMMARY_PROMPT", "THINK_END",
    "THINK_START", "CycleStats", "RCPrompts", "State", "Trajectory", "TurnOutput", "chain_of_thought",
    "cut_summary", "cycle_stats", "fill_template", "final_answer", "reasoning_prompt", "run_cycles",
    "sample_states", "servable", "summary_prompt", "summary_text", "update_summary",
]
