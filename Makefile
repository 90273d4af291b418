# The two commands of the README. Both work on a fresh Debian or Azure Linux machine, as root.
#   make demo   installs what it needs, builds keel, stores examples/distro and shows its graph
#   make test   installs what the tests need, then fmt, clippy and the whole suite (locked)

CARGO ?= cargo
KEEL := target/release/keel
DEMO_TREE := examples/distro
# The demo keeps its store inside target/, so it starts from nothing after `cargo clean`.
DEMO_STORE := $(CURDIR)/target/demo-store

.PHONY: demo test build deps-demo deps-test

demo: deps-demo build
	@echo "== storing the example tree $(DEMO_TREE) =="
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_TREE) store add $(DEMO_TREE)/SPECS/*/*
	@echo "== the whole tree: files already stored are known to the stat cache and not read again =="
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_TREE) store add $(DEMO_TREE)
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_TREE) store verify
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_TREE) store stats
	@echo "== the example distribution's package graph =="
	$(KEEL) -C $(DEMO_TREE) graph
	$(KEEL) -C $(DEMO_TREE) query path hello libgreet

build:
	$(CARGO) build --release --locked

test: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked

deps-demo:
	@scripts/install-deps.sh demo

deps-test:
	@scripts/install-deps.sh test
