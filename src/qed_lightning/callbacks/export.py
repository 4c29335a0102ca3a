"""Hugging Face–format export of the policy at the end of ``fit``, with its model card,
optionally uploaded to the hub."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from qed_lightning.callbacks.preemption import preempted
from qed_lightning.engines.full_weights import is_sharded, iter_full_weights
from qed_lightning.export import save_hf_export


class HFExportCallback(Callback):
    """Writes ``<log_dir>/<dirname>`` when training ends: model, tokenizer, generation
    config, and the model card (``README.md``) with the run's resolved config beside it.
    A sharded policy (FSDP) is gathered one parameter at a time by every rank and written
    by rank 0 (writing the sharded model from rank 0 alone would wait for ranks that
    never join its gathers).

    Args:
        enabled: Set False to skip the export.
        dirname: Folder name under the run's log directory.
        push_to_hub: A hub repo id (``owner/name``) to upload the export to when fit
            ends. The token comes from the environment variable ``HF_TOKEN`` only; it is
            checked, and the repo created, when fit starts, so a missing token or an
            unwritable repo fails before training.
        private: Create the hub repo private (an existing repo keeps its visibility).
    """

    def __init__(self, enabled: bool = True, dirname: str = "hf_export", push_to_hub: str | None = None,
                 private: bool = True) -> None:
        self.enabled = enabled
        self.dirname = dirname
        self.push_to_hub = push_to_hub
        self.private = private
        self.export_dir: Path | None = None
        self.pushed_url: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not (self.enabled and self.push_to_hub) or stage != "fit":
            return
        from qed_lightning.hub.push import check_repo_id, hub_token, prepare_repo

        token = hub_token()  # every rank: the same refusal everywhere, no rank left waiting
        check_repo_id(self.push_to_hub)
        if trainer.is_global_zero:
            prepare_repo(self.push_to_hub, private=self.private, token=token)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.enabled or preempted(trainer):
            return  # a preempted run is not finished: its requeued start exports at the end
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        out = log_dir / self.dirname
        policy = pl_module.policy
        state_dict = None
        if is_sharded(policy):
            # every rank takes part in each gather (one parameter at a time); rank 0 keeps
            # the full tensors on the CPU and writes them
            state_dict = _gathered_on_rank_zero(policy, trainer.is_global_zero)
        if trainer.is_global_zero:
            facts, config_text = _card_facts(trainer, pl_module, log_dir)
            self.export_dir = save_hf_export(policy, pl_module.tokenizer, out, state_dict=state_dict,
                                             card_facts=facts, config_text=config_text)
            if self.push_to_hub:
                from qed_lightning.hub.push import push_export

                # the repo was created at setup
                self.pushed_url = push_export(self.export_dir, self.push_to_hub, private=self.private, create=False)
        trainer.strategy.barrier("hf_export")


def _card_facts(trainer, pl_module, log_dir: Path) -> tuple[dict, str | None]:
    """The card's facts from the run's files (rank 0); the loggers flush first, so
    ``metrics.csv`` holds the last step."""
    import yaml

    from qed_lightning.hub.run_facts import collect_run_facts

    for logger in trainer.loggers:
        logger.save()
    path = log_dir / "config.yaml"
    config_text = path.read_text(encoding="utf-8") if path.is_file() else None
    if config_text is not None:
        config = yaml.safe_load(config_text) or {}
    else:  # a Trainer built in Python, without the CLI's saved config
        cls = type(pl_module)
        config = {"model": {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": dict(pl_module.hparams)}}
    return collect_run_facts(config, trainer.global_step, log_dir, _training_eval(trainer, pl_module)), config_text


def _training_eval(trainer, pl_module) -> dict | None:
    """The evaluation callback's last result, as the card shows it."""
    callback = next((c for c in trainer.callbacks if type(c).__name__ == "EvaluationCallback"), None)
    if callback is None or not getattr(callback, "history", None):
        return None
    from qed_lightning.evaluation.benchmarks import BENCHMARKS
    from qed_lightning.evaluation.runner import judge_label
    from qed_lightning.hub.eval_results import SUMMARY_KEYS

    step, summary = callback.history[-1]
    spec = BENCHMARKS.get(callback.benchmark)
    judge = callback.judge if callback.judge is not None else getattr(pl_module, "judge", None)
    return {"step": step, "benchmark": callback.benchmark, "kind": spec.kind if spec is not None else "proof",
            "judge": judge_label(judge), "samples": callback.samples, **{k: summary.get(k) for k in SUMMARY_KEYS}}


def _gathered_on_rank_zero(policy, keep: bool) -> dict | None:
    state: dict = {}
    last_gathered = last_copy = None
    for name, tensor in iter_full_weights(policy):
        if keep:
            if tensor is not last_gathered:  # tied names come in a row and share one tensor
                last_gathered, last_copy = tensor, tensor.to("cpu", copy=True)
            state[name] = last_copy
    return state if keep else None
