"""``qed data``: building FineProofs-style SFT and RL datasets from problems.

One module per command (``distill``, ``rubrics``, ``filter_problems``, ``difficulty``,
``decontaminate``) over shared pieces: input rows (``inputs``), the resumable result
store (``store``), concurrent requests (``requests``), the ``</think>`` split
(``think``), the marking-scheme checker (``rubric_check``), the classifier's JSON
(``classify``), n-gram overlap (``overlap``) and the summary file (``summary``).
Outputs use FineProofs' column names, so ``SFTDataModule`` and ``RolloutDataModule``
read them with no column mapping.
"""

# sub-command -> (module, function): imported only when run (vLLM, torch are heavy)
SUBCOMMANDS = {
    "distill": ("qed_lightning.data_pipeline.distill", "distill",
                "teacher proofs through an OpenAI-compatible server or an in-process engine"),
    "rubrics": ("qed_lightning.data_pipeline.rubrics", "rubrics",
                "7-point marking schemes from problem + official solution, checked"),
    "filter": ("qed_lightning.data_pipeline.filter_problems", "filter_problems",
               "an LLM classifier's JSON flags and a keep rule"),
    "difficulty": ("qed_lightning.data_pipeline.difficulty", "difficulty",
                   "n graded rollouts per problem: FineProofs-RL's reward columns"),
    "decontaminate": ("qed_lightning.data_pipeline.decontaminate", "decontaminate",
                      "exact, sentence-set and n-gram overlap with benchmarks; a filtered set"),
}
