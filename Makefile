# Two commands set everything up on a fresh machine with Python 3.11:
#   make book   create .venv, install everything, build the book into _build/html
#   make test   the whole test suite (library, grader, notebooks, book build + browser check)
#   make bench  rerun every benchmark in benchmarks/ and rewrite benchmarks/results/ (claims checked first)
#   make pages  regenerate the generated book pages (minilib reference, performance appendix, paper index)
#   make serve  serve the built book at http://127.0.0.1:8000 (PORT=... to change)
#   make clean  remove the built book
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
OFFLINE := book/_offline

.PHONY: book test bench pages serve env offline clean
PORT ?= 8000

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
	@echo "Book built. Serve it with \`make serve\` (http://127.0.0.1:$(PORT))."

test: env offline
	$(BIN)/python -m pytest --nbval-lax tests chapters solutions

bench: env
	@for script in benchmarks/[!_]*.py; do \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

pages: env
	$(BIN)/python tools/api_reference.py
	$(BIN)/python tools/performance_appendix.py
	$(BIN)/python tools/paper_index.py
	$(BIN)/python tools/glossary.py

serve:
	@test -f _build/html/index.html || { echo "no built book: run \`make book\` first"; exit 1; }
	$(BIN)/python -m http.server -d _build/html --bind 127.0.0.1 $(PORT)

clean:
	rm -rf _build
