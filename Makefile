# The book's commands. Every target sets up .venv on first use (python3 -m venv + requirements.txt + -e .).
#
#   make book                 render the committed, CI-validated outputs to _build/html (fast)
#   make book EXECUTE=1       re-execute every chapter while rendering
#   make test                 kernel tests, papermill smoke runs, nbval at book scale, strict book build, browser
#   make execute NB=book/x.ipynb   refresh one chapter's committed outputs (NB unset: every chapter)
#   make run NB=book/x.ipynb P="SCALE=paper SEED=1" [NPROC=8]   one papermill run into _build/runs/ (NPROC:
#                             training processes under torchrun, for the chapters that train language models)
#   make bench                the kernel benchmark table, with its targets (hit/miss), also in _build/bench.json
#   make native               build the compiled kernels (kernels/csrc/, system C++ compiler; one line if none)
#   make lab                  JupyterLab on book/ (127.0.0.1) with the book's kernel, "Ten Papers from Scratch"
#   make sync                 bring each chapter's .ipynb and its text form text/<part>/<slug>.md in line (jupytext)

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
JOBS ?= 2
EXECUTE ?=
NB ?=
P ?=

# The book's arithmetic (booktools/arith.py): one BLAS/OpenMP thread per process, and on x86_64 with AVX2 the
# same SIMD paths in torch, MKL, oneDNN, OpenBLAS, NumPy and faiss, so that AVX2 and AVX-512 machines compute
# the same bits. A variable already set in the environment wins. Every command below inherits them.
ARITH_PINS := $(shell $(PYTHON) -m booktools.arith make)
$(foreach pin,$(ARITH_PINS),$(eval export $(pin)))
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export JUPYTER_PLATFORM_DIRS := 1

PYTEST := $(PY) -m pytest
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: book test venv execute run bench native lab sync clean test-unit test-smoke test-nbval test-build test-browser

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "The book needs Python 3.11 or newer (its pinned numpy, scipy, matplotlib and scikit-learn do);"; \
	  echo "'$(PYTHON)' is $$($(PYTHON) --version 2>&1). Run with PYTHON=python3.11 (or newer), e.g. make test PYTHON=python3.12"; \
	  exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@$(PY) -c 'from booktools import lab; lab.install_kernel()'   # the book's python3 kernel (booktools/lab.py)
	@# the WebLLM chapter's browser page: onnxruntime-web pinned by kernels/web/package-lock.json (best effort:
	@# without npm or the registry, its browser test and spotlight say so in one line)
	@if command -v npm >/dev/null 2>&1; then (cd kernels/web && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
	  || echo "npm ci failed in kernels/web: the WebLLM browser run will be skipped"; else echo "no npm: the WebLLM browser run will be skipped"; fi
	@touch $@

venv: $(STAMP)

book: $(STAMP)
	$(PY) -m booktools build $(if $(EXECUTE),--execute)

# Four stages; each runs even if an earlier one failed, and `make test` fails if any did.
test: $(STAMP)
	@rm -rf _build/timings; start=$$(date +%s); fail=0; \
	for stage in test-unit test-smoke test-nbval test-build test-browser; do \
	  echo "=== make $$stage"; $(MAKE) --no-print-directory $$stage || { fail=1; echo "=== make $$stage FAILED"; }; \
	done; \
	echo "=== timings"; $(PY) -m booktools timings; \
	echo "make test: $$(( $$(date +%s) - start )) s in all, $$([ $$fail = 0 ] && echo passed || echo FAILED)"; \
	exit $$fail

# 1. unit tests of kernels/ and of the book's tooling, JupyterLab through its REST API, the jupytext pairs
#    (the browser tests are stage 5; exit 5 = no tests collected is not a failure)
test-unit: $(STAMP)
	@$(PY) -m kernels.native
	BOOK_STAGE=unit $(PYTEST) tests --ignore=tests/test_chapters.py --ignore=tests/test_browser.py --ignore=tests/test_webllm_browser.py -q -n $(JOBS) || [ $$? -eq 5 ]

# 2. every chapter through papermill at SCALE="smoke"; glued claim values present; bad SCALE fails fast
test-smoke: $(STAMP)
	BOOK_STAGE=smoke $(PYTEST) tests/test_chapters.py -q -n $(JOBS)

# 3. nbval: re-execute every chapter at its committed SCALE="book", compare outputs, claims asserted.
#    The appendix measures the machine, so it runs alone first; the chapters then run two at a time.
test-nbval: $(STAMP)
	@fail=0; \
	appendix=$$($(PY) -m booktools chapters | grep '^book/appendix/' || true); \
	if [ -n "$$appendix" ]; then BOOK_STAGE=nbval-appendix $(PYTEST) $$appendix $(NBVAL) -q || fail=1; fi; \
	chapters=$$($(PY) -m booktools chapters | grep -v '^book/appendix/' || true); \
	if [ -n "$$chapters" ]; then BOOK_STAGE=nbval $(PYTEST) $$chapters $(NBVAL) -q -n $(JOBS) --dist loadfile || fail=1; fi; \
	exit $$fail

# 4. strict build: a broken cross-reference, glue key or toc entry is an error (the dashboard page shows the
#    wall times of this run's stages, so they are tabulated first)
test-build: $(STAMP)
	@$(PY) -m booktools timings --quiet
	$(PY) -m booktools build --record

# 5. the rendered book in headless Chromium: offline, no console error, math typeset, images, one line per
#    progress bar, claims tables inside the column; skipped with one line where there is no Chromium
test-browser: $(STAMP)
	BOOK_STAGE=browser $(PYTEST) tests/test_browser.py tests/test_webllm_browser.py -q -p no:xdist || [ $$? -eq 5 ]

execute: $(STAMP)
	$(PY) -m booktools execute $(NB)

run: $(STAMP)
	@test -n "$(NB)" || { echo 'usage: make run NB=book/<chapter>.ipynb P="SCALE=paper SEED=1"'; exit 2; }
	$(PY) -m booktools run $(NB) $(P) $(if $(NPROC),NPROC=$(NPROC))

native: $(STAMP)
	$(PY) -m kernels.native

bench: $(STAMP)
	$(PY) -m kernels.bench --json _build/bench.json

lab: $(STAMP)
	$(PY) -m booktools lab

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync $$($(PY) -m booktools chapters)

clean:
	rm -rf _build
