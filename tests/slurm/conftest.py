"""The session's local SLURM cluster (see ``local_cluster.py``).

Tests that use ``slurm_cluster`` carry the ``slurm`` marker, so ``-m slurm`` runs them
as a group and ``-m "not slurm"`` leaves them out. Without root or the Debian packages
``slurm-wlm`` and ``munge`` they are skipped with the reason.
"""
from __future__ import annotations

import pytest

from .local_cluster import LocalSlurmCluster, cluster_unavailable_reason


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: runs jobs on a real one-node SLURM cluster (root, slurm-wlm, munge)")


@pytest.fixture(scope="session")
def slurm_cluster():
    reason = cluster_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = LocalSlurmCluster()
    try:
        cluster.start()  # stops what it started if it fails
        yield cluster
    finally:
        cluster.stop()
