# OrgAuthz: build, test, serve, bench. `make test` is what CI runs.
SWIFT ?= swift
CONFIG ?= debug

.PHONY: deps build release test serve bench api-fuzz clean

# The system packages the build needs (CI and a new machine start bare).
deps:
	@command -v pkg-config >/dev/null && pkg-config --exists libmicrohttpd && pkg-config --exists sqlite3 && pkg-config --exists zlib || { \
	  echo "installing libmicrohttpd-dev, libsqlite3-dev, zlib1g-dev and pkg-config"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmicrohttpd-dev libsqlite3-dev zlib1g-dev pkg-config >/dev/null; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product authz

test: build
	$(SWIFT) test
	.build/debug/authz test policies/

# The decision endpoint: release build, shipped policy, 127.0.0.1:8180, store data/authz.sqlite
# (seeded with the demo data when empty). The admin token defaults to a development value.
AUTHZ_ADMIN_TOKEN ?= dev-admin-token
export AUTHZ_ADMIN_TOKEN
serve: release
	.build/release/authz serve --policy policies/daytona.yaml --store data/authz.sqlite --data examples/daytona-demo.jsonl

# Every benchmark (in-process, HTTP vs. the libmicrohttpd ceiling, sync at 1M); rewrites benchmarks/RESULTS.md.
bench:
	benchmarks/run-all.sh

clean:
	rm -rf .build

# Property-based API check: schemathesis (PyPI) generates requests from docs/openapi.yaml
# against a release server and checks for 5xx and for answers that break the spec.
api-fuzz: release
	@command -v schemathesis >/dev/null || pip install -q schemathesis
	rm -rf /tmp/authz-api-fuzz; AUTHZ_ADMIN_TOKEN=fuzz-admin .build/release/authz serve --port 18399 \
	  --store /tmp/authz-api-fuzz/store.sqlite --data examples/daytona-demo.jsonl & pid=$$!; sleep 2; \
	schemathesis run docs/openapi.yaml --url http://127.0.0.1:18399 -H "Authorization: Bearer fuzz-admin" \
	  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
	  --exclude-path /v1/sync --max-examples 200; status=$$?; kill $$pid; exit $$status
