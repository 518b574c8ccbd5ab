# Build, test and run the zone_sync module.
#
#   make run     build nginx + the module, start a local 3-node cluster
#   make test    cargo test + the perl suite (installs what is missing)
#   make check   rustfmt + clippy
#   make deb     the Debian package, for the distribution's nginx
#   make test-debian  install it, run the suite against /usr/sbin/nginx, purge
#   make test-asan    the perl suite under AddressSanitizer + UBSan (nightly)
#   make fuzz-smoke   every fuzz target for a few seconds (part of `test`)
#
# Long runs are scripts: scripts/fuzz, scripts/chaos, scripts/soak
# (docs/TESTING.md).
#
# Built files land in build/: build/nginx (the vendored nginx the module is
# built against) and build/ngx_stream_zone_sync_module.so.
#
# To build against another configured nginx tree (e.g. Debian's nginx-dev):
#   make NGINX_BUILD_DIR=/path/to/nginx/objs build

SHELL       := /bin/bash
CARGO       ?= cargo
PROFILE     ?= release
BUILD       := build
MODULE      := $(BUILD)/ngx_stream_zone_sync_module.so
NGINX       := $(BUILD)/nginx
PROVE_JOBS  ?= 1

# Debian packages the build and the tests need.
DEB_PACKAGES := clang libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config \
                openssl curl faketime libio-socket-ssl-perl libnet-dns-perl \
                golang-go golang-github-nginxinc-nginx-plus-go-client-dev \
                prometheus-nginx-exporter chromium gdb iproute2 ethtool

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAG := --release
else
CARGO_PROFILE_FLAG :=
endif

ifneq ($(NGINX_BUILD_DIR),)
CARGO_FEATURES := --no-default-features
export NGINX_BUILD_DIR
else
CARGO_FEATURES :=
endif

.PHONY: all deps build test unittest prove check run stop clean deb test-debian \
        test-asan fuzz-smoke

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build $(CARGO_PROFILE_FLAG) $(CARGO_FEATURES) -p ngx_stream_zone_sync_module
	@mkdir -p $(BUILD)
	@# install(1) replaces the file instead of rewriting it in place, so a
	@# running nginx that has the old module mapped is not disturbed.
	install -m 0644 target/$(PROFILE)/libngx_stream_zone_sync_module.so $(MODULE)
	@if [ -z "$(NGINX_BUILD_DIR)" ]; then \
	    install -m 0755 "$$(cat target/$(PROFILE)/nginx-build-dir)/nginx" $(NGINX); \
	    echo "built $(NGINX) and $(MODULE)"; \
	else \
	    echo "built $(MODULE) against $(NGINX_BUILD_DIR)"; \
	fi

unittest:
	$(CARGO) test -p zone-sync-core

prove: build
	prove -I t/lib -j$(PROVE_JOBS) t/

# test-debian runs too where it can (Debian-based, root): TEST_DEBIAN=0 skips it.
# The suite includes t/chaos_partition.t (network namespaces: root only).
test: deps unittest fuzz-smoke prove
	PROVE_JOBS=$(PROVE_JOBS) scripts/test-debian --if-possible

# libnginx-mod-stream-zone-sync_<version>_<arch>.deb for the distribution's
# nginx (built against its nginx-dev tree, in target/debian and build/debian)
deb:
	scripts/build-deb

# build, install, run the perl suite against /usr/sbin/nginx, remove, purge
test-debian:
	PROVE_JOBS=$(PROVE_JOBS) scripts/test-debian

# FUZZ_SMOKE_SECONDS per target; skipped (said) without a nightly toolchain
FUZZ_SMOKE_SECONDS ?= 5
fuzz-smoke:
	@if rustup run nightly rustc --version >/dev/null 2>&1; then \
	    scripts/fuzz --seconds $(FUZZ_SMOKE_SECONDS); \
	else \
	    echo "fuzz-smoke: skipped: no nightly Rust toolchain (rustup toolchain install nightly)"; \
	fi

# builds its own nginx and module under target/asan (not build/)
test-asan: deps
	PROVE_JOBS=$(PROVE_JOBS) scripts/test-asan

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGO_PROFILE_FLAG) --all-targets -- -D warnings

run: build
	scripts/run-cluster

stop:
	scripts/run-cluster stop

clean:
	$(CARGO) clean
	rm -rf $(BUILD) t/tmp
