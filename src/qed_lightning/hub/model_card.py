"""The model card of a Hugging Face export: ``README.md`` in the hub's model-card format
(YAML metadata, then markdown), written with every export and written again when
``qed eval`` evaluates the export.

An export folder holds, beside the model files:

    README.md          the card
    qed_run.json       the facts the card is written from (``run_facts``)
    qed_config.yaml    the run's resolved config (credential-named settings blanked)
    eval_results.json  what ``qed eval`` measured on this export (``eval_results``), if run

The card labels where each number comes from: this run's training, an evaluation of
this export, or the QED-Nano paper (reference only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from qed_lightning.hub.redact import scrub

__all__ = ["CARD_FILE", "CONFIG_FILE", "EVAL_FILE", "FACTS_FILE", "card_metadata", "render_card",
           "rewrite_card", "write_card_files"]

CARD_FILE, FACTS_FILE, CONFIG_FILE, EVAL_FILE = "README.md", "qed_run.json", "qed_config.yaml", "eval_results.json"
PROJECT = "qed-lightning"
STAGE_TEXT = {
    "SFT": "supervised fine-tuning on reasoning traces and proofs",
    "RL": "reinforcement learning (GRPO-style) with rewards from a rubric judge",
    "RC": "reinforcement learning with a reasoning cache (reason, summarize, continue) and a rubric judge",
}
STAGE_TAGS = {"SFT": "sft", "RL": "grpo", "RC": "reasoning-cache"}
DASH = "–"


def card_metadata(facts: Mapping) -> "ModelCardData":
    """The card's YAML metadata (what the hub indexes)."""
    from huggingface_hub import ModelCardData

    base = facts.get("base_model") or {}
    datasets = [d["hub_id"] for d in facts.get("datasets") or [] if d.get("hub_id")]
    tags = [PROJECT, STAGE_TAGS.get(facts.get("stage"), str(facts.get("stage")).lower()), "olympiad-proofs"]
    return ModelCardData(base_model=base.get("hub_id") or base.get("lineage_base"), datasets=datasets or None,
                         library_name="transformers", license=base.get("license"), pipeline_tag="text-generation",
                         tags=tags)


def _fmt(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value)


def _cell(value: Any) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def _pct(value: Any) -> str:
    return DASH if value is None else f"{float(value):.1f}"


def _score(entry: Mapping) -> str:
    if entry.get("kind") == "answer":
        return f"accuracy {_pct(entry.get('accuracy'))}%"
    spread = entry.get("spread")
    score = f"avg@{entry.get('samples')} {_pct(entry.get('avg'))}"
    return score if spread is None else f"{score} ({float(spread):.1f})"


def _training(facts: Mapping, has_config: bool) -> list[str]:
    base = facts.get("base_model") or {}
    git = facts.get("git") or {}
    commit = git.get("commit") or "unknown"
    if commit != "unknown" and git.get("dirty"):
        commit += " (with uncommitted changes)"
    base_text = base.get("name") or DASH
    if base.get("lineage_base"):
        base_text += f" (itself trained from {base['lineage_base']})"
    lines = ["## Training", "",
             f"- Stage: **{facts.get('stage')}**, {STAGE_TEXT.get(facts.get('stage'), 'a qed-lightning run')}",
             f"- Base model: {base_text}" + (f" at revision `{base['revision']}`" if base.get("revision") else ""),
             f"- Optimizer steps trained: {_fmt(facts.get('steps'))}"]
    lines += [f"- {name.capitalize()}: {_fmt(value)}" for name, value in (facts.get("tokens") or {}).items()]
    lines += [f"- Trained with {PROJECT} {facts.get('qed_version')}, git commit {commit}", ""]
    datasets = facts.get("datasets") or []
    if datasets:
        lines += ["### Data", "",
                  *_table(["source", "config", "split", "revision"],
                          [[d.get("source"), d.get("config_name"), d.get("split"), d.get("revision") or "not pinned"]
                           for d in datasets]), ""]
    lines += ["### Key settings", "", *_table(["setting", "value"], facts.get("settings") or []), ""]
    if has_config:
        lines += [f"The full resolved config is `{CONFIG_FILE}` beside this card "
                  f"(`qed fit --config {CONFIG_FILE}` reruns it).", ""]
    final = facts.get("final_metrics") or {}
    if final:
        lines += ["### Final training metrics (measured by this run)", "",
                  f"The last logged value of each, as of step {_fmt(facts.get('steps'))}.", "",
                  *_table(["metric", "value"], [[k, v] for k, v in final.items()]), ""]
    return lines


def _evaluations(facts: Mapping, results: list[Mapping]) -> list[str]:
    from qed_lightning.evaluation.paper_results import PAPER_JUDGE, PAPER_METRIC, paper_results

    lines = ["## Evaluation", ""]
    if results:
        header = ["benchmark", "judge", "k", "score", "pass@1", "pass@k", "tokens/sample", "problems", "evaluated"]
        rows = [[e.get("benchmark"), e.get("judge"), e.get("samples"), _score(e), _pct(e.get("pass_at_1")),
                 _pct(e.get("pass_at_k")), _fmt(None if e.get("tokens_mean") is None else round(e["tokens_mean"])),
                 e.get("problems"), e.get("evaluated_at")] for e in results]
        lines += ["### Measured on this model with `qed eval`", "", *_table(header, rows), "",
                  "Proof benchmarks: avg@k is the mean grade as a % of 7 over k samples per problem (std across "
                  "the k runs in parentheses); pass@1 and pass@k as `qed eval` reports them. Scores from "
                  "different judges do not compare.", ""]
    during = facts.get("training_eval")
    if during:
        lines += ["### Measured during training (evaluation callback)", "",
                  *_table(["step", "benchmark", "judge", "k", "score", "problems"],
                          [[during.get("step"), during.get("benchmark"), during.get("judge"), during.get("samples"),
                            _score(during), during.get("problems")]]), "",
                  "A slice of the benchmark, evaluated by the training run itself at its last step.", ""]
    if not results and not during:
        lines += ["Not evaluated yet: `qed eval --policy.init_args.model=<this folder>` adds its results here.", ""]
    benches = list(dict.fromkeys(e.get("benchmark") for e in results)) or list(PAPER_METRIC)
    shown = [b for b in benches if b in PAPER_METRIC]
    published = paper_results(shown)
    if published:
        by_model: dict[str, dict] = {}
        for r in published:
            by_model.setdefault(r.model, {})[r.benchmark] = r
        rows = [[f"paper: {model}"] + [_pct(cells[b].value) + ("" if cells[b].spread is None
                                                                 else f" ({cells[b].spread:.1f})")
                                       if b in cells else DASH for b in shown]
                for model, cells in by_model.items()]
        lines += ["### Published numbers (QED-Nano paper, not measured here)", "",
                  *_table(["model"] + [f"{b} {PAPER_METRIC[b]}" for b in shown], rows), "",
                  f"For reference only: the paper's own setup and judge ({PAPER_JUDGE}); "
                  "they are not results of this model.", ""]
    return lines


def render_card(facts: Mapping, results: list[Mapping] | None = None, has_config: bool = True) -> str:
    """The card's text: metadata, then what the model is, how it was trained, its results."""
    from huggingface_hub import ModelCard

    base = (facts.get("base_model") or {}).get("name") or "a base model"
    stage = facts.get("stage")
    body = [f"# {base} after {stage} with {PROJECT}", "",
            f"This model is {base} after {STAGE_TEXT.get(stage, 'training')}, trained with {PROJECT}, "
            "a PyTorch Lightning implementation of the QED-Nano recipe for writing Olympiad proofs. "
            "Numbers below are labelled by where they come from: this training run, an evaluation of this model, "
            "or the QED-Nano paper.", ""]
    body += _training(facts, has_config)
    body += _evaluations(facts, list(results or []))
    body += ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             'model = AutoModelForCausalLM.from_pretrained("<this repo or folder>")',
             'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")', "```", "",
             "The generation config sets only the end-of-turn tokens; choose the sampling settings per request.", ""]
    card = ModelCard(f"---\n{card_metadata(facts).to_yaml()}\n---\n\n" + "\n".join(body))
    return scrub(str(card))


def _read_json(path: Path, default):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def write_card_files(directory: str | Path, facts: Mapping, config_text: str | None = None) -> Path:
    """Write the facts, the config copy (when given) and the card into ``directory``;
    returns the card's path."""
    directory = Path(directory)
    (directory / FACTS_FILE).write_text(scrub(json.dumps(facts, indent=2, default=str)) + "\n", encoding="utf-8")
    if config_text is not None:
        (directory / CONFIG_FILE).write_text(scrub(_redacted_config(config_text)), encoding="utf-8")
    return rewrite_card(directory)


def _redacted_config(text: str) -> str:
    import yaml

    from qed_lightning.hub.redact import redact_settings

    config = yaml.safe_load(text)
    redacted = redact_settings(config)
    return text if redacted == config else yaml.safe_dump(redacted, sort_keys=False)


def rewrite_card(directory: str | Path) -> Path:
    """Write ``README.md`` again from the folder's facts and evaluation results."""
    directory = Path(directory)
    facts = _read_json(directory / FACTS_FILE, None)
    if facts is None:
        raise FileNotFoundError(f"{directory} has no {FACTS_FILE}: not an export written by qed")
    results = _read_json(directory / EVAL_FILE, [])
    path = directory / CARD_FILE
    path.write_text(render_card(facts, results, (directory / CONFIG_FILE).is_file()), encoding="utf-8")
    return path
