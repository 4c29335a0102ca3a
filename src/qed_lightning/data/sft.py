"""The SFT DataModule: rows from a source, rendered through the policy's chat
template, over-long samples dropped (counted) or refused, and served as one
optimizer step per batch (see ``steps.py``)."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from qed_lightning.data.bad_rows import BadRowError, BadRows, check_policy
from qed_lightning.data.records import SFTColumns, rows_to_sft_examples
from qed_lightning.data.rendering import RenderError, TokenizedExample, render_sft_example
from qed_lightning.data.sources import DataSourceError, iter_rows
from qed_lightning.data.steps import ExampleList, StepCollator, StepSampler
from qed_lightning.seeding import run_seed

OVERLONG_POLICIES = ("drop", "error")


# The datamodule's own state (saved with every checkpoint) restores the position in
# the epoch; Lightning only checks whether the DataLoader object is stateful.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


@dataclass
class SFTDataStats:
    rows: int = 0
    skipped_bad_rows: int = 0  # by reason: SFTDataModule.bad_rows.counts
    empty_reasoning: int = 0  # kept rows trained with an empty think block
    dropped_overlong: int = 0
    train_examples: int = 0
    val_examples: int = 0
    train_tokens: int = 0


class SFTDataModule(pl.LightningDataModule):
    """Supervised fine-tuning data.

    Args:
        source: ``demo`` (shipped), a local .jsonl/.json/.csv/.parquet file, or a hub dataset id.
        config_name: Hub dataset config (FineProofs-SFT: ``default`` or ``all``).
        split: Dataset split.
        revision: Hub dataset revision (commit or tag) for reproducible runs.
        problem_column: Column with the problem statement.
        response_column: Column with the proof (the text after the reasoning).
        reasoning_column: Column with the chain of thought, or null.
        id_column: Column with a row id, or null to name rows by position.
        prompt_template: User turn; ``{problem}`` is replaced by the statement.
        system_prompt: Optional system turn.
        max_length: Longest sample in tokens (prompt + completion).
        on_overlong: ``drop`` (count and log) or ``error`` (name the row).
        on_bad_row: ``error`` (stop, naming file, row and column) or ``skip`` (count by
            reason, log the first rows of each, and log the counts as ``data/skipped/*``
            metrics). See "Data validation" in docs/data.md.
        samples_per_step: Samples per optimizer step, across all ranks (global batch).
        packing: Pack samples into rows with per-sample position ids; else pad.
        micro_batch_tokens: Tokens per packed micro-batch row (>= max_length).
        micro_batch_size: Samples per padded micro-batch (when packing is off).
        val_fraction: Share of examples held out for validation loss.
        shuffle: Reshuffle the training examples every epoch.
        seed: Seed of the shuffle and of the validation split (None: the run's ``seed_everything``).
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        source: str = "demo",
        config_name: str | None = None,
        split: str = "train",
        revision: str | None = None,
        problem_column: str = "problem",
        response_column: str = "proof",
        reasoning_column: str | None = "reasoning_content",
        id_column: str | None = None,
        prompt_template: str = "{problem}",
        system_prompt: str | None = None,
        max_length: int = 4096,
        on_overlong: str = "drop",
        on_bad_row: str = "error",
        samples_per_step: int = 32,
        packing: bool = True,
        micro_batch_tokens: int = 8192,
        micro_batch_size: int = 4,
        val_fraction: float = 0.0,
        shuffle: bool = True,
        seed: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if on_overlong not in OVERLONG_POLICIES:
            raise ValueError(f"on_overlong must be one of {OVERLONG_POLICIES}, got {on_overlong!r}")
        check_policy(on_bad_row)
        if packing and micro_batch_tokens < max_length:
            raise ValueError(
                f"micro_batch_tokens ({micro_batch_tokens}) must be >= max_length ({max_length}) when packing"
            )
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.hparams.seed = run_seed(seed)
        self.columns = SFTColumns(
            problem=problem_column, response=response_column, reasoning=reasoning_column, id=id_column
        )
        self.tokenizer = None
        self.stats = SFTDataStats()
        self.bad_rows = BadRows(on_bad_row, source)
        self.resume_step: int | None = None  # set by a checkpoint: where the epoch's order continues
        self._train_loader_built = False
        self.train_examples: list[TokenizedExample] = []
        self.val_examples: list[TokenizedExample] = []

    def _tokenizer(self):
        if self.tokenizer is None:
            if self.trainer is None or not hasattr(self.trainer.lightning_module, "tokenizer"):
                raise RuntimeError("SFTDataModule needs a tokenizer: attach it to a Trainer with an SFTModule or set .tokenizer")
            self.tokenizer = self.trainer.lightning_module.tokenizer
        return self.tokenizer

    def load_examples(self) -> list[TokenizedExample]:
        hp = self.hparams
        rows = iter_rows(hp.source, config_name=hp.config_name, split=hp.split, revision=hp.revision)
        bad = self.bad_rows = BadRows(hp.on_bad_row, hp.source)
        examples, report = rows_to_sft_examples(
            rows, self.columns, prompt_template=hp.prompt_template,
            system_prompt=hp.system_prompt, bad_rows=bad,
        )
        self.stats.rows = report.kept + report.total_skipped
        tokenizer = self._tokenizer()
        kept = []
        for example in examples:
            try:
                tokenized = render_sft_example(tokenizer, example)
            except RenderError as err:
                bad.add(BadRowError(example.origin or example.id, "does_not_render", str(err)))
                continue
            if len(tokenized.input_ids) > hp.max_length:
                if hp.on_overlong == "error":
                    raise DataSourceError(
                        f"{example.id}: {len(tokenized.input_ids)} tokens exceed max_length={hp.max_length} "
                        "(raise max_length, or set on_overlong: drop)"
                    )
                self.stats.dropped_overlong += 1
                continue
            kept.append(tokenized)
            self.stats.empty_reasoning += example.reasoning == ""
        self.stats.skipped_bad_rows = bad.total
        if not kept and self.stats.dropped_overlong:
            raise DataSourceError(
                f"{hp.source}: all {self.stats.dropped_overlong} usable examples exceed max_length={hp.max_length}"
                + (f" ({bad.describe()})" if bad.total else "")
            )
        if not kept:
            raise bad.nothing_left("SFT rows")
        return kept

    def setup(self, stage: str | None = None) -> None:
        if self.train_examples:
            return
        examples = self.load_examples()
        n_val = int(len(examples) * self.hparams.val_fraction)
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        self.val_examples = [examples[i] for i in order[:n_val]]
        self.train_examples = [examples[i] for i in sorted(order[n_val:])]
        s = self.stats
        s.train_examples, s.val_examples = len(self.train_examples), len(self.val_examples)
        s.train_tokens = sum(len(e.input_ids) for e in self.train_examples)
        rank_zero_info(
            f"SFT data from {self.hparams.source}: {s.rows} rows, {self.bad_rows.describe()}, "
            f"{s.empty_reasoning} with empty reasoning, "
            f"{s.dropped_overlong} over max_length={self.hparams.max_length} dropped, "
            f"{s.train_examples} train / {s.val_examples} val examples, {s.train_tokens} train tokens"
        )
        self.bad_rows.log_to(self.trainer)

    def _loader(self, examples: list[TokenizedExample], shuffle: bool) -> torch.utils.data.DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        hp = self.hparams
        sampler = StepSampler(
            len(examples), hp.samples_per_step, shuffle=shuffle, seed=hp.seed, rank=rank, world_size=world,
            lengths=[len(e.input_ids) for e in examples],
        )
        if examples is self.train_examples and self.resume_step is not None:
            # One batch is one optimizer step: the steps done so far fix the position.
            sampler.skip_steps, self.resume_step = self.resume_step % len(sampler), None
        collate = StepCollator(
            self._tokenizer().pad_token_id, packing=hp.packing,
            micro_batch_tokens=hp.micro_batch_tokens, micro_batch_size=hp.micro_batch_size,
        )
        return torch.utils.data.DataLoader(
            ExampleList(examples), batch_sampler=sampler, collate_fn=collate, num_workers=hp.num_workers
        )

    def state_dict(self) -> dict:
        trainer = self.trainer
        return {"global_step": trainer.global_step if trainer is not None else 0, "seed": self.hparams.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.hparams.seed) != self.hparams.seed:
            raise ValueError(f"checkpoint's data seed {state['seed']} differs from the config's {self.hparams.seed}")
        self.resume_step = int(state["global_step"])
        trainer = self.trainer
        if self._train_loader_built and trainer is not None:
            # Sharded strategies (FSDP, ModelParallel) restore after their setup, where
            # sizing the schedule (estimated_stepping_batches) already built the train
            # loader, and may have fetched a batch from the unskipped order: have the
            # fit loop build it again, from the restored position.
            trainer.fit_loop._combined_loader = None

    def train_dataloader(self):
        self._train_loader_built = True
        return self._loader(self.train_examples, self.hparams.shuffle)

    def val_dataloader(self):
        return self._loader(self.val_examples, False) if self.val_examples else []
