# The study's two commands (see README.md):
#   make book [PROFILE=smoke|default|paper]   execute every notebook, then render the book
#             [PUBLIC_CT_ROOT=dir]            the public CT cases' folder (default: the profile's)
#             [SCHEDULER=dask|tcp://host:port] where chapters 1-3 run their per-scan jobs
#   make test [PYTEST_ARGS="-k frame"]        run the test suite
# Both create the environment (.venv, from the pins of pyproject.toml) when it is missing, and
# refresh it when pyproject.toml changes.

PROFILE ?= default
PYTHON3 ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Marks an environment that holds exactly the current pins; newer than pyproject.toml when up to date.
VENV_STAMP := $(VENV)/.installed

.PHONY: book test env clean

book: $(VENV_STAMP)
	$(PY) -m sapsam_utils.report.runner --profile $(PROFILE) $(if $(PUBLIC_CT_ROOT),--public-ct-root "$(PUBLIC_CT_ROOT)") \
	  $(if $(SCHEDULER),--scheduler "$(SCHEDULER)")
	$(VENV)/bin/jupyter-book build . -n -W --keep-going
	@echo "The book: _build/html/index.html"

test: $(VENV_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

env: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install -e .
	touch $(VENV_STAMP)

# Removes the rendered book and the executed notebooks; keeps .venv and the workdirs (work/).
clean:
	rm -rf _build book/executed
