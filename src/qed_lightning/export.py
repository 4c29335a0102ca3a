"""Hugging Face–format export: model, tokenizer and a generation config whose EOS ids
are set, in a directory that vLLM and transformers load directly, with a model card
(``README.md``, see ``hub.model_card``) and the run's resolved config. Works on the live
module at the end of a run and on any saved checkpoint (``qed export``), and can upload
the folder to the hub (``hub.push``)."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from qed_lightning.models import eos_token_ids

log = logging.getLogger(__name__)


def save_hf_export(model, tokenizer, output_dir: str | Path, state_dict: dict | None = None,
                   card_facts: dict | None = None, config_text: str | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` to ``output_dir``, replacing it only once the
    new export is complete (an interrupted export leaves the old one readable).
    ``state_dict``: the full weights to write instead of the model's own (a sharded
    model's, gathered). ``card_facts`` (``hub.run_facts``): write the model card too,
    with ``config_text`` (the resolved config) beside it."""
    output_dir = Path(output_dir).expanduser().resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        eos = eos_token_ids(model, tokenizer)
        # Sampling settings are the trainer's business, set per request: the export
        # carries only what ends a turn, so a server cannot inherit stale defaults.
        model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if card_facts is not None:
            from qed_lightning.hub.model_card import write_card_files

            write_card_files(tmp, card_facts, config_text)
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output_dir.rename(old)
            tmp.rename(output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported Hugging Face model to %s", output_dir)
    return output_dir


def export_checkpoint(checkpoint: str, output_dir: str, push_to_hub: str | None = None,
                      private: bool = True) -> Path:
    """Export the policy of a saved qed checkpoint (final or intermediate), with its
    model card, and optionally upload it.

    Args:
        checkpoint: Path of a ``.ckpt`` written by ``qed fit``.
        output_dir: Directory to write the Hugging Face model into.
        push_to_hub: A hub repo id (``owner/name``) to upload the export to; the token
            comes from the environment variable ``HF_TOKEN`` only.
        private: Create the hub repo private (an existing repo keeps its visibility).
    """
    import torch
    from lightning.pytorch import LightningModule

    from qed_lightning.hub.run_facts import collect_run_facts

    if push_to_hub:  # before any work: a missing token, a bad repo id, an unwritable repo fail at once
        from qed_lightning.hub.push import prepare_repo

        prepare_repo(push_to_hub, private=private)
    # mmap: the step count and settings without reading the weights twice
    saved = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    module = LightningModule.load_from_checkpoint(checkpoint, map_location="cpu")
    config, config_text, log_dir = _run_config(Path(checkpoint), saved, module)
    facts = collect_run_facts(config, int(saved.get("global_step", 0)), log_dir)
    out = save_hf_export(module.policy, module.tokenizer, output_dir, card_facts=facts, config_text=config_text)
    if push_to_hub:
        from qed_lightning.hub.push import push_export

        push_export(out, push_to_hub, private=private, create=False)
    return out


def _run_config(checkpoint: Path, saved: dict, module) -> tuple[dict, str | None, Path | None]:
    """(resolved config, its text, the run's log directory) of a checkpoint: the
    ``config.yaml`` of the run it was saved by (``<log_dir>/checkpoints/x.ckpt``), else
    what the checkpoint itself holds (the module's and the data's hyperparameters)."""
    import yaml

    log_dir = checkpoint.resolve().parent.parent
    if (log_dir / "config.yaml").is_file():
        text = (log_dir / "config.yaml").read_text(encoding="utf-8")
        return yaml.safe_load(text) or {}, text, log_dir
    cls = type(module)
    hparams = {k: v for k, v in dict(saved.get("hyper_parameters") or {}).items() if not str(k).startswith("_")}
    data = {k: v for k, v in dict(saved.get("datamodule_hyper_parameters") or {}).items() if not str(k).startswith("_")}
    config = {"model": {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": hparams},
              "data": {"init_args": data}}
    log.warning("no config.yaml beside %s: the model card is written from the checkpoint's own settings",
                checkpoint.name)
    return config, None, None
