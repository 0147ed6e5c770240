# Two commands set everything up on a fresh machine with Python 3.11:
#   make book   create .venv, install everything, build the book into _build/html
#   make test   the whole test suite (library, grader, notebooks, book build + browser check)
#   make bench  rerun every benchmark in benchmarks/ and rewrite benchmarks/results/ (claims checked first)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OFFLINE := book/_offline

.PHONY: book test bench env offline clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	touch $@

offline: $(OFFLINE)/.complete

$(OFFLINE)/.complete: tools/fetch_offline_assets.sh
	bash tools/fetch_offline_assets.sh $(OFFLINE)

book: env offline
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo
	@echo "Book built. Open _build/html/index.html, or serve it:"
	@echo "  $(BIN)/python -m http.server -d _build/html 8000   # then http://127.0.0.1:8000"

test: env offline
	$(BIN)/python -m pytest --nbval-lax tests chapters solutions

bench: env
	@for script in benchmarks/[!_]*.py; do \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

clean:
	rm -rf _build
