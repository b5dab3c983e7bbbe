# Two commands on a fresh machine:  `make run` (install + launch the app)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: run test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) main.py

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: install
	$(PY) -m engine bench train
	$(PY) -m engine bench tokenizer
	$(PY) -m engine bench generate

clean:
	rm -rf $(VENV) build *.egg-info
