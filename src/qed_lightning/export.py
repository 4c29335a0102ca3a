"""Hugging Face–format export: model, tokenizer and a generation config whose EOS ids
are set, in a directory that vLLM and transformers load directly. Works on the live
module at the end of a run and on any saved checkpoint (``qed export``)."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from qed_lightning.models import eos_token_ids

log = logging.getLogger(__name__)


def save_hf_export(model, tokenizer, output_dir: str | Path, state_dict: dict | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` to ``output_dir``, replacing it only once the
    new export is complete (an interrupted export leaves the old one readable).
    ``state_dict``: the full weights to write instead of the model's own (a sharded
    model's, gathered)."""
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


def export_checkpoint(checkpoint: str, output_dir: str) -> Path:
    """Export the policy of a saved qed checkpoint (final or intermediate).

    Args:
        checkpoint: Path of a ``.ckpt`` written by ``qed fit``.
        output_dir: Directory to write the Hugging Face model into.
    """
    from lightning.pytorch import LightningModule

    module = LightningModule.load_from_checkpoint(checkpoint, map_location="cpu")
    return save_hf_export(module.policy, module.tokenizer, output_dir)
