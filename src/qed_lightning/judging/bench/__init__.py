"""``qed judge bench``: measuring a judge against human grades (``run.py``), with its
metrics (``metrics.py``), bootstrap intervals (``bootstrap.py``), data layouts
(``data.py``), report (``report.py``) and judge ensembles (``ensemble.py``).

Only the ensemble is imported here: it is a judge a config names
(``qed_lightning.judging.bench.JudgeEnsemble``); the command's modules load when it runs.
"""
from qed_lightning.judging.bench.ensemble import COMBINERS, JudgeEnsemble, combine_scores

__all__ = ["COMBINERS", "JudgeEnsemble", "combine_scores"]
