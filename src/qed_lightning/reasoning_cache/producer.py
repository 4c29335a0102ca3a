"""RC training's rollouts: build (problem, summary) states, then sample groups on them.

For the problems of a step, the current policy runs the reasoning-cache cycles (one
trajectory per problem) with a frozen summarizer, or with itself; ``states_per_problem``
of each trajectory's states are kept and ``sampling.n`` rollouts drawn from each, each
graded by the judge against the *original* problem and its rubric (the statement inside
the RL proof prompt, as the paper's RC grader sees it). A group is the
rollouts of one state; only those rollouts are trained, never the summaries. With a
``StatePool`` attached (``ReasoningCacheCallback``), problems whose states are in the
pool are served from it instead of being built in the step.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from qed_lightning.contracts import GradingItem, Problem, SamplingSettings
from qed_lightning.judging.base import rewards_from_verdicts
from qed_lightning.judging.client import CompletionClient
from qed_lightning.reasoning_cache.cycle import run_cycles
from qed_lightning.reasoning_cache.pool import StatePool
from qed_lightning.reasoning_cache.prompts import RCPrompts
from qed_lightning.reasoning_cache.roles import chat_overhead, client_generator, count_text_tokens, engine_generator
from qed_lightning.reasoning_cache.states import sample_states
from qed_lightning.reasoning_cache.trajectory import State, Trajectory
from qed_lightning.rollouts.batch import RolloutBatch
from qed_lightning.rollouts.producer import RolloutProducer
from qed_lightning.rollouts.prompts import PROOF_PROMPT

__all__ = ["ReasoningCacheProducer", "ReasoningCacheSettings", "graded_problem", "state_problem"]

log = logging.getLogger(__name__)


@dataclass
class ReasoningCacheSettings:
    """RC training (the recipe's numbers are the defaults).

    Args:
        cycles: Reason -> summarize cycles per trajectory; ``cycles + 1`` states.
        states_per_problem: States trained per problem (groups per problem).
        reasoning_max_tokens: max_tokens of the state-building reasoning turns (None:
            the RL sampling's).
        summary_temperature, summary_top_p, summary_top_k, summary_max_tokens: The
            summary turn's sampling when the policy summarizes itself (no summarizer);
            a frozen summarizer's sampling is its client's.
        max_summary_tokens: Summaries longer than this are cut (and counted); None: no cut
            beyond the summarizer's own max_tokens.
        grade_cycle_turns: Grade the state-building reasoning turns against the problem
            too, for per-turn rewards and turn-over-turn improvement (metrics only).
        grader_problem_template: The problem statement the judge grades against, around
            ``{problem}``. The paper's RC grader gets the original problem wrapped in the
            RL proof prompt (its RC prompts carry the raw statement, so the grader would
            otherwise see a different problem text from plain RL's prompt); ``{problem}``
            passes the raw statement.
    """

    cycles: int = 3
    states_per_problem: int = 2
    reasoning_max_tokens: int | None = None
    summary_temperature: float = 0.7
    summary_top_p: float = 0.8
    summary_top_k: int = 20
    summary_max_tokens: int = 2048
    max_summary_tokens: int | None = None
    grade_cycle_turns: bool = True
    grader_problem_template: str = PROOF_PROMPT

    def __post_init__(self) -> None:
        if self.grader_problem_template.count("{problem}") != 1:
            raise ValueError("reasoning_cache.grader_problem_template must contain '{problem}' exactly once, "
                             f"got {self.grader_problem_template!r}")
        if self.cycles < 1 or self.states_per_problem < 1:
            raise ValueError(f"reasoning_cache: cycles ({self.cycles}) and states_per_problem "
                             f"({self.states_per_problem}) must be >= 1")


# Kept in a Python-built module's hyperparameters: loadable with ``weights_only=True``
# (see modules/rl_settings.py).
torch.serialization.add_safe_globals([ReasoningCacheSettings])


def state_problem(state: State, grader_template: str = "{problem}") -> Problem:
    """The problem of a state's group: the original problem (its rubric, and its
    statement inside ``grader_template``, are what the judge grades against) under an id
    that names the turn, so the group's sample seeds and records differ from the other
    states of the same problem."""
    return dataclasses.replace(graded_problem(state.problem, grader_template), id=f"{state.problem.id}#rc{state.turn}")


def graded_problem(problem: Problem, grader_template: str) -> Problem:
    """``problem`` with its statement as the judge should see it (a plain replace: LaTeX
    braces in the statement are not format fields)."""
    return dataclasses.replace(problem, statement=grader_template.replace("{problem}", problem.statement))


class ReasoningCacheProducer:
    """Args:
        rollouts: The step's ``RolloutProducer`` (policy engine, judge, sampling ``n``).
        settings: ``ReasoningCacheSettings``.
        summarizer: A frozen model behind a ``CompletionClient``; None: the policy
            summarizes with the settings' summary sampling.
        prompts: The RC prompt templates.
        seed: Run seed (state picks and turn seeds derive from it).
    """

    def __init__(self, rollouts: RolloutProducer, settings: ReasoningCacheSettings,
                 summarizer: CompletionClient | None = None, prompts: RCPrompts = RCPrompts(), seed: int = 0) -> None:
        self.rollouts, self.settings, self.summarizer, self.prompts, self.seed = (
            rollouts, settings, summarizer, prompts, seed)
        self.pool: StatePool | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_states: list[State] = []
        self.last_step: int | None = None
        self._refresh_metrics: dict[str, float] = {}
        self._refresh_error: Exception | None = None

    @property
    def pad_id(self) -> int:
        return self.rollouts.pad_id

    def _count_tokens(self, text: str) -> int:
        return count_text_tokens(self.rollouts.tokenizer, text)

    def build(self, problems: Sequence[Problem], step: int) -> tuple[list[Trajectory], dict[str, float]]:
        """Runs the cycles with the policy's current weights; returns the trajectories
        and their metrics (``rc/*``)."""
        rp, s = self.rollouts, self.settings
        reasoning = dataclasses.replace(rp.sampling, n=1, max_tokens=s.reasoning_max_tokens or rp.sampling.max_tokens)
        reason = engine_generator(rp.engine, rp.tokenizer, reasoning, self.seed, step, "rc_reason")
        if self.summarizer is None:
            summary = SamplingSettings(temperature=s.summary_temperature, top_p=s.summary_top_p,
                                       top_k=s.summary_top_k, max_tokens=s.summary_max_tokens, n=1)
            summarize = engine_generator(rp.engine, rp.tokenizer, summary, self.seed, step, "rc_summary")
        else:
            summarize = client_generator(self.summarizer, self._count_tokens)
        limit = getattr(rp.engine, "max_model_len", None)
        # The longest state prompt must leave room for the chat template and for both the
        # building turns and the rollouts.
        room = max(reasoning.max_tokens, rp.sampling.max_tokens) + chat_overhead(rp.tokenizer)
        start = time.perf_counter()
        trajectories, stats = run_cycles(
            problems, reason, summarize, s.cycles, prompts=self.prompts, count_tokens=self._count_tokens,
            max_prompt_tokens=None if limit is None else limit - room, max_summary_tokens=s.max_summary_tokens)
        seconds = time.perf_counter() - start
        tokens = sum(t.total_tokens for t in trajectories)
        metrics = stats.metrics()
        metrics.update({"rc/build_s": seconds, "rc/build_tokens": float(tokens),
                        "rc/build_tokens_per_s": tokens / max(seconds, 1e-9),
                        "rc/truncated_reasoning_share": stats.truncated_reasoning_turns / max(stats.reasoning_turns, 1)})
        if s.grade_cycle_turns:
            metrics.update(self._turn_rewards(trajectories))
        return trajectories, metrics

    def refresh_pool(self, problems: Sequence[Problem], step: int) -> None:
        """Replaces the pool's contents with states of ``problems`` built now; their
        metrics are logged with the step that follows. A failed build (e.g. the judge
        down, with ``grade_cycle_turns``) is raised by the next ``produce``: the refresh
        runs on each rank on its own, the step's rollouts where the ranks agree on
        failures (``modules/rank_failures.py``)."""
        if self.pool is None:
            raise RuntimeError("refresh_pool needs a StatePool attached (producer.pool)")
        try:
            trajectories, metrics = self.build(problems, step)
        except Exception as error:  # noqa: BLE001 - raised by produce, inside the step
            self._refresh_error = error
            return
        self.pool.clear()
        self.pool.put(trajectories, step)
        self._refresh_metrics = {**metrics, "rc/pool_refreshed": 1.0, "rc/pool_problems": float(len(self.pool))}

    def _turn_rewards(self, trajectories: list[Trajectory]) -> dict[str, float]:
        template = self.settings.grader_problem_template
        items = [GradingItem(graded_problem(t.problem, template), turn.text) for t in trajectories for turn in t.reasoning]
        if not items:
            return {}
        verdicts = self.rollouts.judge.grade(items)
        rewards, valid = (self.rollouts.judge.rewards(verdicts) if hasattr(self.rollouts.judge, "rewards")
                          else rewards_from_verdicts(verdicts))
        per_turn: dict[int, list[float]] = {}
        gains: dict[int, list[float]] = {}
        i = 0
        for t in trajectories:
            previous = None
            for k in range(len(t.reasoning)):
                r = float(rewards[i]) if bool(valid[i]) else None
                if r is not None:
                    per_turn.setdefault(k + 1, []).append(r)
                    if previous is not None:
                        gains.setdefault(k + 1, []).append(r - previous)
                previous, i = r, i + 1
        out = {f"rc/cycle_turn{k}_reward": sum(v) / len(v) for k, v in per_turn.items()}
        out.update({f"rc/improvement_turn{k}": sum(v) / len(v) for k, v in gains.items()})
        return out

    def produce(self, problems: Sequence[Problem], step: int, expected_version: int | None = None) -> RolloutBatch:
        """The step's rollout batch: ``sampling.n`` rollouts on each of the sampled states."""
        if self._refresh_error is not None:  # the pool's refresh before this step failed
            error, self._refresh_error = self._refresh_error, None
            raise error
        served = {p.id: self.pool.get(p.id) for p in problems} if self.pool is not None else {}
        missing = [p for p in problems if served.get(p.id) is None]
        metrics, self._refresh_metrics = self._refresh_metrics, {}
        state_lists = {}
        if missing:
            trajectories, built = self.build(missing, step)
            metrics.update(built)
            state_lists.update({t.problem.id: t.states for t in trajectories})
        state_lists.update({pid: states for pid, states in served.items() if states is not None})
        ordered = [state_lists[p.id] for p in problems]
        states = sample_states(ordered, self.settings.states_per_problem, self.seed, step)
        if not states:
            raise ValueError(f"step {step}: no servable reasoning-cache state for any of {len(problems)} problems")
        messages = [self.prompts.reason(st.problem.statement, st.summary) for st in states]
        graded = [state_problem(st, self.settings.grader_problem_template) for st in states]
        batch = self.rollouts.produce(graded, step, expected_version, messages=messages)
        kept_states = [states[i] for i in self.rollouts.last_kept]
        metrics.update(self.rollouts.last_metrics)
        metrics.update(_state_rewards(batch, kept_states))
        metrics["rc/pool_served_problems"] = float(len(problems) - len(missing))
        self.last_metrics, self.last_states, self.last_step = metrics, kept_states, step
        return batch

    def state_dict(self) -> dict:
        """The states the last step trained on (for inspection; a resumed step rebuilds its own)."""
        return {"step": self.last_step, "states": [StatePool.encode(s) for s in self.last_states]}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state.get("step")
        self.last_states = [StatePool.decode(s) for s in state.get("states", [])]


def _state_rewards(batch: RolloutBatch, states: list[State]) -> dict[str, float]:
    """Mean reward of the trained rollouts per state turn (1-based, as the paper counts)."""
    turns = torch.tensor([states[int(g)].turn + 1 for g in batch.group_ids])  # [N]
    out = {}
    for k in sorted(set(turns.tolist())):
        out[f"rc/turn{k}_reward"] = float(batch.rewards[turns == k].mean())
        out[f"rc/turn{k}_groups"] = float(sum(1 for s in states if s.turn + 1 == k))
    return out
