# snapmount — build, test and package.
#
#   make check   the quick feedback (a few minutes, no root, no QEMU): build, run the tests
#                that need neither, lint the man pages and the shell scripts, and check
#                that no test can pass on the wrong outcome
#   make test    install what the build and tests need, build, run the whole suite,
#                then build the release binary and check its size and linkage, boot it under
#                QEMU, run the release-side demo (publish and push), check that no
#                secret reached a log line, and write the reliability report from the run
#                into .build/evidence/RELIABILITY.md. It changes no tracked file.
#   make reliability   the reliability matrices alone, and docs/RELIABILITY.md from them
#   make build   the release binary (static Swift runtime), stripped into dist/
#   make package the .deb and .rpm in dist/, judged by lintian and rpmlint
#   make test-vm real boots of the installed .deb in a Debian 12 guest under QEMU
#   make demo    snapmount's boot against the local cloud; make demo-release: publish and push
#
# Run as root on Debian 12 with the Swift toolchain at /opt/swift (or on PATH).

SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

SWIFT ?= swift
DIST := dist

# Every Debian package the build and the tests need. Installed only when missing.
#   pkg-config + the -dev packages: the four system-library targets (Package.swift)
#   openssl: the TLS tests make a throwaway CA and run `openssl s_server`
#   binutils: strip, readelf (make build)
#   mandoc: the man pages are linted (make lint-man); shellcheck: the shell scripts (make lint-shell)
#   e2fsprogs, xfsprogs, dosfstools, fdisk, cryptsetup-bin, util-linux: mkfs/fsck in the product; the
#     root tests build snapshot images (ext4, xfs, vfat, partition tables, LUKS, swap) and use losetup
#   systemd: systemd-analyze verify of the unit; curl, python3: make demo
#   patchelf: drops the $ORIGIN search path from the release binary; rpm, lintian, rpmlint:
#     make package; qemu-system-x86, qemu-utils, debootstrap, socat: make test-vm; time,
#     python3-venv: make bench (GNU time's rusage; the AWS CLI in a throw-away venv)
#   openssh-server, openssh-client, rsync: snapmount push's tests and make demo-release start
#     their own sshd per loopback address and push with rsync over ssh
APT_PACKAGES := openssh-server openssh-client rsync patchelf rpm lintian rpmlint qemu-system-x86 qemu-utils debootstrap socat time python3-venv pkg-config libcurl4-openssl-dev libssl-dev libblkid-dev libxml2-dev openssl binutils ca-certificates mandoc shellcheck \
	e2fsprogs xfsprogs dosfstools fdisk cryptsetup-bin util-linux systemd curl python3

# -Osize: a boot agent is bound by I/O, not by CPU, and the binary must stay small.
# lld with --gc-sections and --icf=all drops unreferenced and folds identical code (-250 KB).
# --no-export-dynamic undoes the -export-dynamic of the static stdlib's link arguments: an
# executable need not export its 4,100 public Swift symbols, and unexported code can be
# collected (-377 KB). The cost: a crash backtrace of the stripped binary shows addresses only.
RELEASE_FLAGS := -c release --static-swift-stdlib -Xswiftc -Osize -Xswiftc -use-ld=lld -Xlinker --gc-sections -Xlinker --icf=all -Xlinker --no-export-dynamic

.PHONY: check lint-shell check-tests all deps build package test-vm bench bench-storm bench-smoke test reliability reliability-report lint-man verify-unit fuzz fuzz-smoke devcloud demo demo-release test-release-model clean

all: build

deps:
	@missing=""; \
	for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$package" 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing — run as root, or install them" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "make: no swift on PATH (expected /opt/swift/usr/bin)" >&2; exit 1; }
	@# moto, a second EC2 emulator the interoperability tests run the agent against (PyPI).
	@python3 -c 'import moto, flask, boto3' 2>/dev/null || { echo "installing: moto[server]"; python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.1' \
	  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]==5.2.1'; }

build: deps
	$(SWIFT) build $(RELEASE_FLAGS) --product snapmount
	@mkdir -p $(DIST)
	strip -o $(DIST)/snapmount "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)/snapmount"
	@# The static Swift runtime needs no $$ORIGIN search path; a packaged binary must not carry one.
	patchelf --remove-rpath $(DIST)/snapmount
	@scripts/check-binary $(DIST)/snapmount

# dist/snapmount_<version>_amd64.deb and dist/snapmount-<version>.x86_64.rpm from the release
# binary, judged by lintian and rpmlint (packaging/ holds the templates and the overrides).
package: build
	scripts/package $(DIST)/snapmount $(DIST)

# Real boots of the installed .deb in a Debian 12 guest under QEMU (TCG): scripts/test-vm.
# The guest image is built once with debootstrap and cached in .build/vm.
VM_CACHE := $(CURDIR)/.build/vm
test-vm: deps
	@test -f $(DIST)/snapmount || $(MAKE) --no-print-directory package
	@ls $(DIST)/snapmount_*_amd64.deb > /dev/null 2>&1 || $(MAKE) --no-print-directory package
	$(SWIFT) build --product devcloud
	scripts/test-vm "$$(ls $(DIST)/snapmount_*_amd64.deb | tail -1)" "$$($(SWIFT) build --show-bin-path)/devcloud" $(VM_CACHE)

# snapmount beside the script users would write, and a 200-instance storm; writes
# docs/PERFORMANCE.md. Not part of make test (a busy machine changes the figures); the smoke
# below is. BENCH_ARGS: e.g. --create 4s --attach 6s, --storm 50, --retry-modes adaptive.
BENCH_ARGS ?=
bench: package
	$(SWIFT) build -c release --product devcloud
	scripts/bench $(DIST)/snapmount "$$($(SWIFT) build -c release --show-bin-path)/devcloud" --write docs/PERFORMANCE.md $(BENCH_ARGS)

bench-storm: package
	$(SWIFT) build -c release --product devcloud
	scripts/bench $(DIST)/snapmount "$$($(SWIFT) build -c release --show-bin-path)/devcloud" --storm-only $(BENCH_ARGS)

# One iteration at the default delays and a storm of 10, into .build/bench: the bench cannot rot.
bench-smoke: deps
	@mkdir -p .build/bench
	scripts/bench $(DIST)/snapmount "$$($(SWIFT) build --show-bin-path)/devcloud" --iterations 1 --slow none --storm 10 --write .build/bench/PERFORMANCE.md

# A test run's evidence: the matrices' rows, every log line and every secret DevCloud issued.
EVIDENCE := $(CURDIR)/.build/evidence
EVIDENCE_ENV := SNAPMOUNT_RELIABILITY_REPORT=$(EVIDENCE)/report SNAPMOUNT_TEST_LOG_DIR=$(EVIDENCE)/logs

# The state of the checkout before the run: `make test` must leave it as it found it.
CLEAN_BEFORE := $(EVIDENCE)/git-status-before

# The quick run: every test that needs neither root nor QEMU (the root suites are skipped,
# saying so, even as root), and the lints. make test is the whole suite CI runs.
check: deps lint-man lint-shell check-tests
	$(SWIFT) build --build-tests
	SNAPMOUNT_TESTS=unprivileged $(SWIFT) test --skip-build

test: deps lint-man lint-shell check-tests
	@mkdir -p $(EVIDENCE) && git status --porcelain --untracked-files=all > $(CLEAN_BEFORE) 2>/dev/null || true
	$(SWIFT) build --build-tests
	rm -rf $(EVIDENCE)/report $(EVIDENCE)/logs
	$(EVIDENCE_ENV) $(SWIFT) test --skip-build
	$(MAKE) --no-print-directory build
	$(MAKE) --no-print-directory verify-unit
	$(MAKE) --no-print-directory package
	$(MAKE) --no-print-directory test-vm
	$(MAKE) --no-print-directory test-release-model
	$(MAKE) --no-print-directory bench-smoke
	$(MAKE) --no-print-directory reliability-report REPORT=$(EVIDENCE)/RELIABILITY.md
	@scripts/check-unchanged $(CLEAN_BEFORE)

# The reliability matrices alone (fault, crash, refusal, concurrency, secrets, fuzz smoke),
# then docs/RELIABILITY.md from their rows: the one target that writes a tracked file.
reliability: deps
	$(SWIFT) build --build-tests
	rm -rf $(EVIDENCE)/report $(EVIDENCE)/logs
	$(EVIDENCE_ENV) $(SWIFT) test --skip-build --filter 'FaultMatrixTests|CrashTests|BootFlowTests'
	$(MAKE) --no-print-directory reliability-report REPORT=docs/RELIABILITY.md

# Secrets never in a log line; the fuzz smoke run; the report written from the rows.
REPORT ?= $(EVIDENCE)/RELIABILITY.md
reliability-report:
	scripts/check-secrets $(EVIDENCE)/logs $(EVIDENCE)/report
	$(MAKE) --no-print-directory fuzz-smoke
	scripts/reliability-report $(EVIDENCE)/report $(REPORT)

# systemd-analyze verify needs ExecStart= to exist: check a copy pointing at the built binary.
verify-unit: build
	@tmp=$$(mktemp -d) && sed "s|/usr/sbin/snapmount|$(CURDIR)/$(DIST)/snapmount|" systemd/snapmount.service > $$tmp/snapmount.service \
	  && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no $$tmp/snapmount.service; status=$$?; rm -rf $$tmp; \
	  [ $$status = 0 ] && echo "systemd-analyze verify: ok"; exit $$status

lint-man: deps
	mandoc -Tlint -W warning man/snapmount.8 man/snapmount.conf.5

# Every shell script of the repository (the Python ones are not shell).
SHELL_SCRIPTS := .ci/run $(shell grep -l '^\#!/usr/bin/env bash' scripts/*)
lint-shell: deps
	shellcheck -S warning $(SHELL_SCRIPTS)

# No `guard case … else { return }` in Tests/: a test that needs an outcome fails without it.
check-tests:
	scripts/check-tests Tests

# libFuzzer campaigns: FUZZ_SECONDS per target (default 600); fuzz-smoke is CI's short run.
FUZZ_SECONDS ?= 600
fuzz: deps
	RESULTS=docs/fuzz-campaign.tsv scripts/fuzz $(FUZZ_SECONDS)

fuzz-smoke: deps
	RESULTS=$(EVIDENCE)/report/fuzz-smoke.tsv scripts/fuzz 5

# snapmount end to end against the local cloud, as root; leaves nothing behind.
demo: build
	$(SWIFT) build --product devcloud
	scripts/demo

# The release model's scenario test: the demo below, then a half-failed push, reboots, a
# publish, a rollback, the release server's reboot, a refused push — one whole release on
# every host after each step (scripts/demo-release --scenario). As root.
test-release-model: build
	$(SWIFT) build --product devcloud
	scripts/demo-release --scenario

# The article's whole workflow: publish a new release, push it to three running instances
# over ssh, boot a fourth during the publish; all four end on the new release. As root.
demo-release: build
	$(SWIFT) build --product devcloud
	scripts/demo-release

# The local cloud on 127.0.0.1, printing its endpoints; Ctrl-C stops it.
devcloud: deps
	$(SWIFT) build --product devcloud
	"$$($(SWIFT) build --show-bin-path)/devcloud" --snapshot snap-0123456789abcdef0:1

clean:
	rm -rf .build $(DIST)
