# Two commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Each creates its virtual environment if missing and installs the pinned stack from
# constraints/<stack>.txt, then this project in editable mode. The stamp file makes a
# second run install nothing (it is redone when the pins or pyproject.toml change).

PYTHON ?= python3
PYTEST_ARGS ?=

CURRENT_VENV := .venv
LEGACY_VENV := .venv-legacy

.PHONY: demo test test-legacy demo-legacy bench venv venv-legacy clean-venvs

venv: $(CURRENT_VENV)/.ovq-installed
venv-legacy: $(LEGACY_VENV)/.ovq-installed

$(CURRENT_VENV)/.ovq-installed: constraints/current.in constraints/current.txt pyproject.toml
	test -x $(CURRENT_VENV)/bin/python || $(PYTHON) -m venv $(CURRENT_VENV)
	$(CURRENT_VENV)/bin/pip install --disable-pip-version-check -q -r constraints/current.in -c constraints/current.txt -e '.[test,models]'
	touch $@

# The legacy pins are within the machine's pip cap, so no config change is needed.
$(LEGACY_VENV)/.ovq-installed: constraints/legacy.in constraints/legacy.txt pyproject.toml
	test -x $(LEGACY_VENV)/bin/python || $(PYTHON) -m venv $(LEGACY_VENV)
	$(LEGACY_VENV)/bin/pip install --disable-pip-version-check -q -r constraints/legacy.in -c constraints/legacy.txt -e '.[test,models]'
	touch $@

# -p no:logging: torch's DEBUG trace records would otherwise flood every failure report.
test: venv
	$(CURRENT_VENV)/bin/python -m pytest tests -p no:logging $(PYTEST_ARGS)

test-legacy: venv-legacy
	$(LEGACY_VENV)/bin/python -m pytest tests -p no:logging $(PYTEST_ARGS)

# The main job: the model-regression suite (tests/models, models from the root conftest.py).
DEMO_ARGS := tests/models -v -p no:logging --ovq-show-lowering

demo: venv
	$(CURRENT_VENV)/bin/python -m pytest $(DEMO_ARGS) $(PYTEST_ARGS)

demo-legacy: venv-legacy
	$(LEGACY_VENV)/bin/python -m pytest $(DEMO_ARGS) $(PYTEST_ARGS)

bench: venv
	$(CURRENT_VENV)/bin/python bench/speedup.py

clean-venvs:
	rm -rf $(CURRENT_VENV) $(LEGACY_VENV)
