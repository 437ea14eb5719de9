# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing, installs the project once (re-runs skip it), then runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# This machine has the CPU build of torch 2.13.0 on disk; a plain `torch` would pull a multi-GB CUDA
# build. On a GPU machine: make TORCH_SPEC="torch" (or install your CUDA torch into .venv first).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,bench,data,app,heic
STAMP  := $(VENV)/.installed-$(shell echo "$(TORCH_SPEC) $(EXTRAS)" | md5sum | cut -c1-8)

.PHONY: demo test fuzz install tiny-model tiny-bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/magicmotion demo --out outputs/demo
	@echo "magicmotion is installed in $(VENV): run 'source $(VENV)/bin/activate' to use it from this shell"

test: $(STAMP)
	$(PY) -m pytest

# The fuzzer's long profile (tests/test_fuzz.py; `make test` runs its short one): FUZZ_EXAMPLES cases per
# command, counts appended to fuzz-counts.jsonl. A finding becomes a row of tests/test_hostile.py.
FUZZ_EXAMPLES ?= 300
fuzz: $(STAMP)
	MAGICMOTION_FUZZ=long MAGICMOTION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MAGICMOTION_FUZZ_LOG=fuzz-counts.jsonl \
		$(PY) -m pytest tests/test_fuzz.py -q -s --hypothesis-show-statistics

# The shipped tiny model from scratch (2 h here), then its evidence: the ablations and the benchmark
# report of docs/tiny-model.md (`make tiny-bench`, after it). Both resume where they stopped.
# On a GPU: make tiny-model DEVICE=cuda (docs/tiny-model.md, "On a GPU").
DEVICE ?= cpu
TINY := $(PY) -m magicmotion.training.tiny --out src/magicmotion/assets/tiny --work runs/tiny --device $(DEVICE)

tiny-model: $(STAMP)
	$(TINY) --phases data,vae,base,maps,stages,examples

tiny-bench: $(STAMP)
	$(TINY) --phases ablations,bench

# Mutation testing of one core module against its tests (docs/testing.md): make mutate MODULE=trajectory/render
# (make mutate lists the modules). Minutes to hours per module; not part of `make test` or CI.
mutate: $(STAMP)
	nice $(PY) tools/mutate.py $(MODULE)

clean:
	rm -rf outputs runs .pytest_cache
