"""The rollout DataModule: a stream of prompt lists, one list per RL step.

It yields *problems*, not completions: generation runs in the training step, after
the previous step's weight push, so Lightning's one-batch prefetch cannot make the
step off-policy. The problem order is a function of (seed, epoch) and the step index
alone; the stream position saved in a checkpoint is the number of finished steps, so
a resume continues with exactly the prompts the run would have seen.
"""
from __future__ import annotations

import logging
from typing import Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from qed_lightning.contracts import Problem
from qed_lightning.data.bad_rows import BadRows, check_policy
from qed_lightning.data.judge_ready import problems_for_judge
from qed_lightning.data.sources import DataSourceError, iter_rows
from qed_lightning.rollouts.problems import ProblemColumns, judge_columns, rows_to_problems
from qed_lightning.seeding import run_seed

__all__ = ["ProblemBatch", "RolloutDataModule", "problems_for_step"]

log = logging.getLogger(__name__)


def problems_for_step(problems: list[Problem], step: int, per_step: int, seed: int) -> list[Problem]:
    """The ``per_step`` problems of ``step``: epochs are seeded permutations walked in order."""
    n = len(problems)
    orders: dict[int, torch.Tensor] = {}  # one permutation per epoch the step touches
    out = []
    for k in range(step * per_step, (step + 1) * per_step):
        epoch, index = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(problems[int(orders[epoch][index])])
    return out


class ProblemBatch:
    """One step's problems for this rank. A plain container on purpose: Lightning's
    batch transfer walks lists and dataclasses and cannot rebuild frozen ones."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __repr__(self) -> str:
        return f"ProblemBatch({[p.id for p in self.problems]})"


class _StepStream(torch.utils.data.IterableDataset):
    def __init__(self, dm: "RolloutDataModule") -> None:
        self.dm = dm

    def __iter__(self) -> Iterator[ProblemBatch]:
        dm = self.dm
        rank, world = dm.rank_and_world()
        step = dm.start_step
        while True:
            batch = problems_for_step(dm.problems, step, dm.prompts_per_step, dm.seed)
            yield ProblemBatch(batch[rank::world])  # whole groups per rank: group baselines need no communication
            step += 1


class RolloutDataModule(pl.LightningDataModule):
    """Problems for RL.

    Args:
        source: ``demo``, a local file (.jsonl/.json/.csv/.parquet) or a hub id
            (``lm-provers/FineProofs-RL``; pin ``revision``).
        config_name, split, revision: Hub dataset selection.
        problem_column, rubric_column, id_column, reference_column: Column mapping.
        difficulty_filter: Keep mean reward < ``max_reward_mean`` and std > ``min_reward_std``
            (the paper's FineProofs-RL selection; needs ``reward_mean``/``reward_std``).
        prompts_per_step: Problems per RL step across all ranks (paper: 64).
        seed: Seed of the problem order (None: the run's ``seed_everything``).
        on_bad_row: ``error`` (stop, naming file, row and column) or ``skip`` (count by
            reason, log the first rows of each, and log the counts as ``data/skipped/*``
            metrics). At setup, before any generation, a problem lacking what the
            trainer's judge fills into its prompt (a rubric for ``{{marking_scheme}}``)
            is a bad row too. Duplicate ids are an error either way.
    """

    def __init__(
        self,
        source: str = "demo",
        config_name: str | None = None,
        split: str = "train",
        revision: str | None = None,
        problem_column: str = "problem",
        rubric_column: str | None = "rubrics",
        id_column: str | None = None,
        reference_column: str | None = None,
        difficulty_filter: bool = False,
        max_reward_mean: float = 0.7,
        min_reward_std: float = 0.08,
        prompts_per_step: int = 64,
        seed: int | None = None,
        on_bad_row: str = "error",
    ) -> None:
        super().__init__()
        if prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {prompts_per_step}")
        self.on_bad_row = check_policy(on_bad_row)
        self.bad_rows = BadRows(on_bad_row, source)
        self.source, self.config_name, self.split, self.revision = source, config_name, split, revision
        self.columns = ProblemColumns(problem=problem_column, rubric=rubric_column, id=id_column,
                                      reference_solution=reference_column)
        self.difficulty_filter, self.max_reward_mean, self.min_reward_std = difficulty_filter, max_reward_mean, min_reward_std
        self.prompts_per_step, self.seed = prompts_per_step, run_seed(seed)
        self.problems: list[Problem] = []
        self.filtered = 0  # problems the difficulty filter removed
        self.start_step = 0

    def rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _judge(self):
        # The trainer's module grades with it; the SFT data module takes its tokenizer the same way.
        return getattr(getattr(self.trainer, "lightning_module", None), "judge", None)

    def setup(self, stage: str) -> None:
        if self.problems:
            return
        bad = self.bad_rows = BadRows(self.on_bad_row, self.source)
        rows = iter_rows(self.source, config_name=self.config_name, split=self.split, revision=self.revision)
        problems, filtered = rows_to_problems(rows, self.columns, self.difficulty_filter,
                                              self.max_reward_mean, self.min_reward_std, bad_rows=bad)
        self.filtered = filtered
        judge = self._judge()
        if judge is not None:
            problems = problems_for_judge(problems, judge, judge_columns(self.columns), bad)
        if not problems and (filtered or not bad.total):
            also = f"; {bad.describe()}" if bad.total else ""
            raise DataSourceError(
                f"{self.source}: no problems left ({filtered} removed by the difficulty filter{also})")
        if not problems:
            raise bad.nothing_left("problems")
        self.problems = problems
        _, world = self.rank_and_world()
        if self.prompts_per_step % world:
            raise ValueError(f"prompts_per_step {self.prompts_per_step} must divide evenly over {world} ranks")
        rank_zero_info(f"rollout problems: {len(self.problems)} from {self.source} "
                       f"({filtered} filtered out by the difficulty filter, {bad.describe()})")
        bad.log_to(self.trainer)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        # batch_size=None: each item already is one step's prompt list
        return torch.utils.data.DataLoader(_StepStream(self), batch_size=None, collate_fn=lambda x: x)

    def state_dict(self) -> dict:
        trainer = self.trainer
        return {"next_step": trainer.global_step if trainer is not None else self.start_step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint's problem order seed {state['seed']} differs from the config's {self.seed}")
        self.start_step = int(state["next_step"])
