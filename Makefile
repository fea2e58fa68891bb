.PHONY: deploy test lint docs

PROFILE ?=

# Installs the pinned Ansible into .venv and deploys the profile on the hosts of the default
# inventory (this machine): make deploy PROFILE=multi
deploy:
	tools/venv.sh
	.venv/bin/ansible-playbook site.yml -e profile=$(PROFILE)

# Installs what the tests need on a fresh Debian machine, lints, and runs every test.
test:
	tests/run.sh

lint:
	tests/run.sh lint

# Rewrites each role README's variable table from its meta/argument_specs.yml.
docs:
	tools/venv.sh
	.venv/bin/python tools/role_docs.py
