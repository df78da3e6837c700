# OrgAuthz: build, test, serve, bench. `make test` is what CI runs.
SWIFT ?= swift
CONFIG ?= debug

.PHONY: deps build release test serve bench clean

# The system packages the build needs (CI and a new machine start bare).
deps:
	@command -v pkg-config >/dev/null && pkg-config --exists libmicrohttpd || { \
	  echo "installing libmicrohttpd-dev and pkg-config"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmicrohttpd-dev pkg-config >/dev/null; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product authz

test: build
	$(SWIFT) test
	.build/debug/authz test policies/

# In-process benchmarks (benchmarks/README.md); results go to benchmarks/RESULTS.md by hand.
bench:
	cd benchmarks && $(SWIFT) package --disable-sandbox benchmark

clean:
	rm -rf .build
