"""Sharing a trained model the way the Hugging Face ecosystem expects: a model card in
every export (``model_card``, from ``run_facts``), results of ``qed eval`` recorded
against the export (``eval_results``), and upload to the hub (``push``)."""
