# Shortcuts for the scripts the README names (the scripts work without make).
.PHONY: demo gameday test lint bench clean

demo:
	scripts/demo

gameday:
	scripts/gameday

test:
	scripts/test

lint:
	scripts/bootstrap.sh --test
	PATH="$(CURDIR)/.venv/bin:$$PATH" scripts/lint

bench:
	scripts/bootstrap.sh --test
	.venv/bin/python -m bench

clean:
	-.venv/bin/deployer lab down
	rm -rf .venv .deployer
