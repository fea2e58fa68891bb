.PHONY: test lint docs

# Installs what the tests need on a fresh Debian machine, lints, and runs every test.
test:
	tests/run.sh

lint:
	tests/run.sh lint

# Rewrites each role README's variable table from its meta/argument_specs.yml.
docs:
	.venv/bin/python tools/role_docs.py
