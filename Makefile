# The two commands of the README. Both work on a fresh Debian or Azure Linux machine, as root.
#   make demo   installs what it needs, builds keel, then builds the example distribution from
#               nothing (real rpmbuild in the sandbox) with its two images, builds it again
#               (nothing to do), edits a comment (cut off), edits a package of one image (only
#               that image is rebuilt), and explains
#   make test   installs what the tests need, then fmt, clippy and the whole suite (locked),
#               every test binary even when one fails, ending with one line of totals

CARGO ?= cargo
KEEL := target/release/keel
DEMO_TREE := examples/distro
# The demo keeps its store inside target/, so it starts from nothing after `cargo clean`.
DEMO_STORE := $(CURDIR)/target/demo-store

.PHONY: demo test build deps-demo deps-test

# The demo works on a scratch copy of the tree, so that its edits never touch the checkout.
DEMO_COPY := $(CURDIR)/target/demo-tree

demo: deps-demo build
	@rm -rf $(DEMO_STORE) $(DEMO_COPY) && mkdir -p $(DEMO_COPY)
	@cp -r $(DEMO_TREE)/keel.toml $(DEMO_TREE)/toolchain.txt $(DEMO_TREE)/SPECS $(DEMO_TREE)/imageconfigs $(DEMO_TREE)/src $(DEMO_TREE)/regen-sources.sh $(DEMO_COPY)/
	@echo "== the example distribution's package graph =="
	$(KEEL) -C $(DEMO_COPY) graph
	@echo "== building it from nothing: sources checked, SRPMs and RPMs built by rpmbuild in the sandbox, and the images keel.toml names =="
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) build
	@echo "== the images: a container (tar.gz and OCI) and a GPT disk (ESP + ext4 root, raw and qcow2), each with a package manifest =="
	find $(DEMO_COPY)/out/images -maxdepth 2 | sort
	sfdisk --dump $(DEMO_COPY)/out/images/demo-disk/demo.raw
	@echo "== the program built against the library, run in a sandbox of its runtime closure =="
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) run -p hello -- hello
	@echo "== building again: nothing changed, nothing runs =="
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) build
	@echo "== a comment in libgreet's spec: libgreet is rebuilt, its RPMs come out the same, hello is cut off =="
	echo '# a comment' >> $(DEMO_COPY)/SPECS/libgreet/libgreet.spec
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) build --dry-run
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) build
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) explain libgreet
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) explain hello
	@echo "== tally's man page changes: tally and the container that ships it are rebuilt, the disk image is not =="
	sed -i 's/tally/Tally/' $(DEMO_COPY)/src/tally-1.0/tally.1 && $(DEMO_COPY)/regen-sources.sh
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) build
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) explain image:docs-container
	$(KEEL) --store $(DEMO_STORE) -C $(DEMO_COPY) explain image:demo-disk
	@echo "== the published repository =="
	find $(DEMO_COPY)/out -name '*.rpm' -o -name repomd.xml | sort

build:
	$(CARGO) build --release --locked

# The remote-cache tests start BuildGrid's `bgd`: from the PATH, else where install-deps.sh
# puts it.
export KEEL_TEST_BGD ?= $(shell command -v bgd 2>/dev/null || echo /opt/keel-buildgrid/bin/bgd)

test: deps-test
	CARGO=$(CARGO) scripts/test.sh

deps-demo:
	@scripts/install-deps.sh demo

deps-test:
	@scripts/install-deps.sh test
