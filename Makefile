# The two commands of the README, and the checks behind them.
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test setup setup-test lint unit e2e molecule bench clean

## Run the main job on this machine: install what is missing, bring the lab up, roll releases.
demo: setup
	$(BIN)/python -m deployer.demo

## Run the whole test suite (installs what is missing first).
test: setup-test
	scripts/test

setup:
	scripts/bootstrap.sh

setup-test:
	scripts/bootstrap.sh --test

lint: setup-test
	scripts/lint

bench: setup-test
	$(BIN)/python -m bench

clean:
	-$(BIN)/deployer lab down
	rm -rf $(VENV) .deployer .lab
