"""Every notebook under ``notebooks/`` runs top to bottom in a fresh kernel.

The kernel must be *this* interpreter (the project's venv), not whatever ``python3``
kernelspec a user or system Jupyter install happens to register first: when the
``python3`` spec would start another interpreter, a spec pointing at
``sys.executable`` is written to a temporary ``JUPYTER_PATH`` entry, which Jupyter
searches before the user and system folders.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL = "python3"
TIMEOUT_S = 600
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _spec_python(kernel_name: str) -> str | None:
    """The interpreter the named kernelspec would launch, or None when there is no such spec."""
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        return None
    if not spec.argv:
        return None
    exe = spec.argv[0]
    # jupyter_client launches a bare "python"/"python3"/"python3.X" as sys.executable.
    if exe in {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        return sys.executable
    return exe if os.path.isabs(exe) else shutil.which(exe)


def _same_interpreter(a: str | None, b: str) -> bool:
    # No realpath: a venv's python is a symlink to the base interpreter, yet it is the
    # path (not the target) that selects the venv's site-packages.
    return a is not None and os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Makes the ``python3`` kernelspec resolve to ``sys.executable``; yields the env changes."""
    mp = pytest.MonkeyPatch()
    if not _same_interpreter(_spec_python(KERNEL), sys.executable):
        from ipykernel.kernelspec import install

        prefix = tmp_path_factory.mktemp("jupyter_prefix")
        install(kernel_name=KERNEL, prefix=str(prefix))  # argv[0] = sys.executable
        paths = [str(prefix / "share" / "jupyter")]
        if os.environ.get("JUPYTER_PATH"):
            paths.append(os.environ["JUPYTER_PATH"])
        mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
    resolved = _spec_python(KERNEL)
    assert _same_interpreter(resolved, sys.executable), (
        f"kernel {KERNEL!r} would run {resolved}, not {sys.executable}"
    )
    # The notebooks build models into $QED_CACHE_DIR: a throwaway one, never the user's cache.
    mp.setenv("QED_CACHE_DIR", str(tmp_path_factory.mktemp("qed_cache")))
    # Their tempfile.mkdtemp() outputs land under pytest's temp folder, which pytest prunes.
    mp.setenv("TMPDIR", str(tmp_path_factory.mktemp("notebook_tmp")))
    yield
    mp.undo()


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks under {NOTEBOOKS_DIR}"


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_env):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        # str(err) holds the failing cell's source and its traceback (ANSI colours stripped).
        pytest.fail(f"{path.name}: a cell raised\n{ANSI.sub('', str(err))}", pytrace=False)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {len(nb.cells)} cells in {elapsed:.1f}s")
    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error outputs {[e.get('ename') for e in errors]}"
