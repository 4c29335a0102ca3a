"""The rollout prompt: the recipe's instruction around the problem, as one user turn
through the policy's chat template with the generation prompt (for a thinking model
the template opens ``<think>``)."""
from __future__ import annotations

from qed_lightning.models import user_turn_ids

__all__ = ["PROOF_PROMPT", "render_rollout_prompt"]

PROOF_PROMPT = "Generate a rigorous proof to the following question:\n\n{problem}"


def render_rollout_prompt(tokenizer, statement: str, template: str = PROOF_PROMPT) -> list[int]:
    """Token ids of the prompt; ``template`` must contain ``{problem}`` once."""
    if template.count("{problem}") != 1:
        raise ValueError(f"rollout prompt template must contain '{{problem}}' exactly once, got {template!r}")
    return user_turn_ids(tokenizer, template.replace("{problem}", statement))
