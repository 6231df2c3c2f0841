# vmmigrate - live migration and replication for KVM guests.
#
#   make            all binaries (build/)
#   make check      install missing Debian packages, build, unit tests under
#                   ASan/UBSan, CLI checks under valgrind, integration tests
#   make demo       3-node test cluster + a live migration with progress
#   make bench      benchmarks (tests/bench/), figures as ratios to baselines
#   make fuzz       libFuzzer targets for a bounded time each (clang)
#   make install    PREFIX=/usr/local DESTDIR= (binaries, man pages, unit, completion)
#   make deb        the Debian package into build/deb/ (dpkg-buildpackage -us -uc -b)
#   make pkg-check  builds the package, installs it into a Debian 12 chroot, checks it
#   make clean

PREFIX  ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR  ?= $(PREFIX)/share/man
COMPDIR ?= $(PREFIX)/share/bash-completion/completions
# One version, from debian/changelog ("0.11.0-1" -> "0.11.0").
VERSION := $(shell sed -n '1s/^[^ ]* [^0-9]*\([0-9][^-]*\)-.*/\1/p' debian/changelog 2>/dev/null)
# Man pages carry the source's date, not the build's (reproducible builds).
MAN_DATE := $(shell if [ -n "$$SOURCE_DATE_EPOCH" ]; then date -u -d "@$$SOURCE_DATE_EPOCH" +%F; \
	else git log -1 --format=%cs 2>/dev/null || date -u +%F; fi)
B       := build
CC      ?= gcc
PKGS    := json-c sqlite3 libcpg libquorum libvotequorum libcmap libssh2 libzstd libvirt libcrypto libnbd liburing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
PROBE_DIR  := $(PREFIX)/lib/vmmigrate/probe

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
CFLAGS  += $(WARN) -std=gnu11 -D_GNU_SOURCE -I. $(PKG_CFLAGS) \
           -DVMM_PROBE_DIR_DEFAULT='"$(PROBE_DIR)"'
LDLIBS  := $(PKG_LIBS) -lpthread

SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# The engine library: every folder but cli/ and tests/.
LIB_SRC := $(wildcard common/*.c transport/*.c migrate/*.c cluster/*.c replicate/*.c)
CLI_COMMON := cli/cli_opt.c cli/cli_table.c cli/progress.c
VMGUEST_SRC := cli/vmguest.c cli/guest_common.c $(wildcard cli/guest_[a-z]*.c)
VMGUEST_SRC := $(sort $(VMGUEST_SRC))
BINS    := $(B)/vmguest $(B)/vmmd $(B)/vmstore $(B)/vmctl

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_HELPERS := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/asan/%,$(UNIT_SRC))

obj  = $(patsubst %.c,$(B)/obj/%.o,$(1))
aobj = $(patsubst %.c,$(B)/asan/obj/%.o,$(1))

# Keep objects make would see as intermediate.
.SECONDARY:

.PHONY: all deps check unit cli-check integration demo bench fuzz install clean guest check-tcg-bug faults check-full \
	man completion deb pkg-check

all: $(BINS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"; $(CC) $(CPPFLAGS) $(CFLAGS) $(SAN) -MMD -MP -c $< -o $@

$(B)/libvmm.a: $(call obj,$(LIB_SRC))
	@rm -f $@
	@echo "  AR $@"; ar rcs $@ $^

$(B)/asan/libvmm.a: $(call aobj,$(LIB_SRC))
	@rm -f $@
	@echo "  AR $@"; ar rcs $@ $^

$(B)/vmguest: $(call obj,$(VMGUEST_SRC) $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Small tools whose commands share one file.
$(B)/%: $(call obj,cli/%.c $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the ASan/UBSan build of the library and of the CLI parser.
$(B)/asan/test_%: $(call aobj,tests/unit/test_%.c) $(call aobj,$(UNIT_HELPERS) $(CLI_COMMON)) $(B)/asan/libvmm.a
	@echo "  LD asan $@"; $(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS) -lcmocka

deps:
	@scripts/deps.sh

guest: deps
	@scripts/build-guest.sh $(B)/guest

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

cli-check: all
	@tests/cli/run.sh $(B)

integration: all guest
	@tests/integration/run.sh $(B)

# The fault matrices of online migration (tests/faults/run.sh) and of
# replication (tests/faults/repl.sh): the quick sets by default, FAULTS=full
# for every cell; FAULTS_ONLY=REGEX picks cells (of either). Then kill -9
# rounds against the store (STORE_CRASH_ROUNDS, default 10).
FAULTS ?= quick
faults: all guest
	@tests/faults/run.sh $(B) $(FAULTS) $(FAULTS_ONLY)
	@tests/faults/repl.sh $(B) $(FAULTS) $(FAULTS_ONLY)
	@tests/faults/store_crash.sh $(B)

# Order matters: cheap checks first so a broken build fails in seconds.
check: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory cli-check
	@$(MAKE) --no-print-directory pkg-check
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory faults

# Everything (hours): check, both whole fault matrices, hundreds of kill -9
# rounds against replicas and the store, and every fuzz target for longer.
check-full: deps
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory faults FAULTS=full
	@REPL_CRASH_ROUNDS=200 tests/integration/run.sh $(B) t_51_vmrepl_crash.sh
	@STORE_CRASH_ROUNDS=300 tests/faults/store_crash.sh $(B)
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=300

# Shows why test guests have RAM 8 KiB short of a round size (minutes).
check-tcg-bug: all guest
	@B=$(abspath $(B)) tests/integration/tcg_ram_bug.sh

demo: deps
	@$(MAKE) --no-print-directory all guest
	@scripts/demo.sh $(B)

BENCH_TOOLS := $(patsubst tests/bench/%.c,$(B)/%,$(wildcard tests/bench/*.c))
$(B)/%: tests/bench/%.c $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: deps
	@$(MAKE) --no-print-directory all guest $(BENCH_TOOLS)
	@tests/bench/run.sh $(B)

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 30
$(B)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRC) $(wildcard */*.h tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -D_GNU_SOURCE -I. $(PKG_CFLAGS) -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined \
		-o $@ $< $(LIB_SRC) $(filter-out cli/vm%.c,$(filter cli/%.c,$^)) $(LDLIBS)

# The command-line target runs the programs' mains (it includes cli/vm*.c
# itself) over the parser, so it links every command but their mains.
$(B)/fuzz/fuzz_cli_args: $(filter-out cli/vm%.c,$(wildcard cli/*.c)) $(wildcard cli/vm*.c)

fuzz: deps $(FUZZ_BIN)
	@scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# Admin tools and the daemon go to sbin (FHS: system administration); the
# units' and the environment file's paths follow PREFIX and SYSCONFDIR.
# State (/var/lib/vmmigrate) and runtime (/run/vmmigrate) directories are
# made by systemd (StateDirectory=, RuntimeDirectory=) and by the tools.
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/doc/vmmigrate \
		$(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(COMPDIR) $(DESTDIR)$(SYSCONFDIR)/vmmigrate
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/sbin/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/vmmigrate/
	install -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		-e 's|@DOCDIR@|$(PREFIX)/share/doc/vmmigrate|g' scripts/vmmd.service \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/vmmd.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/vmmd.service
	@# An operator's edits survive a reinstall (the package marks it a conffile).
	[ -e $(DESTDIR)$(SYSCONFDIR)/vmmigrate/vmmd.env ] || \
		install -m 0644 scripts/vmmd.env $(DESTDIR)$(SYSCONFDIR)/vmmigrate/vmmd.env
	@# One completion script; bash-completion looks it up by command name.
	install -m 0644 $(B)/completion/vmmigrate $(DESTDIR)$(COMPDIR)/vmmigrate
	for p in $(filter-out vmmigrate,$(PROGS)); do ln -sf vmmigrate $(DESTDIR)$(COMPDIR)/$$p; done
	@if [ -f $(B)/guest/vmlinux ]; then \
		install -d $(DESTDIR)$(PROBE_DIR) && \
		install -m 0644 $(B)/guest/vmlinux $(B)/guest/initramfs.cpio.gz $(DESTDIR)$(PROBE_DIR)/; \
	fi

# The Debian package (debian/), built from a copy of the tree: its
# `make clean` must not touch build/.
deb:
	@scripts/mkdeb.sh $(B)/deb

# The package installed into a fresh Debian 12 chroot: runs, man pages, lintian.
pkg-check: deb
	@tests/pkg/run.sh $(B)/deb

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ---- vmctl: guest management (cli/vmctl.c + cli/ctl_*.c) -------------------
# guest_common.c brings cli_guest_accel(), the accelerator choice vmguest uses.
$(B)/vmctl: $(call obj,cli/vmctl.c $(wildcard cli/ctl_*.c) cli/guest_common.c $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- vmcluster: one file per command (cli/cluster_*.c) -----------------------
VMCLUSTER_SRC := cli/vmcluster.c $(sort $(wildcard cli/cluster_*.c))
BINS += $(B)/vmcluster
all: $(B)/vmcluster
$(B)/vmcluster: $(call obj,$(VMCLUSTER_SRC) $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- vmmigrate: migration worker, status/cancel and the target's agent -------
# It starts target QEMUs as vmctl does, so it links the ctl_*.c helpers,
# and syncs replicas when it migrates to a replication target (repl_*.c).
VMMIGRATE_SRC := cli/vmmigrate.c $(sort $(wildcard cli/migrate_*.c)) \
	$(filter-out cli/vmctl.c,$(wildcard cli/ctl_*.c)) cli/guest_common.c \
	$(sort $(wildcard cli/repl_*.c))
BINS += $(B)/vmmigrate
all: $(B)/vmmigrate
$(B)/vmmigrate: $(call obj,$(VMMIGRATE_SRC) $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- vmrepl: replication jobs, runs and the target's agent ------------------
# It shares vmmigrate's peers/SSH settings (migrate_common.c) and vmctl's
# helpers.
VMREPL_SRC := cli/vmrepl.c $(sort $(wildcard cli/repl_*.c)) cli/migrate_common.c \
	$(filter-out cli/vmctl.c,$(wildcard cli/ctl_*.c)) cli/guest_common.c
BINS += $(B)/vmrepl
all: $(B)/vmrepl
$(B)/vmrepl: $(call obj,$(VMREPL_SRC) $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- vmmd: the daemon, with the replication scheduler (cli/repl_sched.c) ----
# and the recovery after crashed migration workers (cli/migrate_recover.c).
VMMD_SRC := cli/vmmd.c $(sort $(wildcard cli/repl_*.c)) cli/migrate_common.c cli/migrate_recover.c \
	$(filter-out cli/vmctl.c,$(wildcard cli/ctl_*.c)) cli/guest_common.c
$(B)/vmmd: $(call obj,$(VMMD_SRC) $(CLI_COMMON)) $(B)/libvmm.a
	@echo "  LD $@"; $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- man pages and completion, from the programs' own command tables ----------
# `PROG --cli-table` (cli/cli_table.c) + prose next to the tables
# (cli/man/PROG.8.in); config pages are written by hand (cluster/man/).
PROGS := vmcluster vmctl vmmigrate vmrepl vmmd vmstore vmguest
MAN8  := $(patsubst %,$(B)/man/%.8,$(PROGS))
MAN5  := $(patsubst cluster/man/%.in,$(B)/man/%,$(wildcard cluster/man/*.5.in))
all: man completion
man: $(MAN8) $(MAN5)
completion: $(B)/completion/vmmigrate

$(B)/man/%.8: cli/man/%.8.in $(B)/% scripts/mkman.sh
	@mkdir -p $(dir $@)
	@echo "  MAN $@"; scripts/mkman.sh $(B)/$* $< "$(MAN_DATE)" "$(VERSION)" > $@.tmp && mv $@.tmp $@

$(B)/man/%.5: cluster/man/%.5.in
	@mkdir -p $(dir $@)
	@echo "  MAN $@"; sed -e 's|@DATE@|$(MAN_DATE)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

$(B)/completion/vmmigrate: $(addprefix $(B)/,$(PROGS)) scripts/mkcompletion.sh
	@mkdir -p $(dir $@)
	@echo "  GEN $@"; scripts/mkcompletion.sh $(addprefix $(B)/,$(PROGS)) > $@.tmp && mv $@.tmp $@
