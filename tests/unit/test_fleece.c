/*
 * test_fleece.c - a running guest's point-in-time view and dirty bitmaps
 * (repl_fleece.c) against a real QEMU (the installed one, TCG, firmware
 * idling: no kernel needed) with a raw disk (drive0), a qcow2 disk
 * (drive1) and a qcow2 v2 disk (drive2, cannot hold bitmaps). "The guest" writes through the block layer with HMP qemu-io,
 * which dirties bitmaps as a guest's writes do. Checked: the first sync
 * sends allocated extents; the view stays as of begin while the guest
 * writes, and those writes are the next sync's; a failed sync keeps both
 * syncs' blocks; two disks share the NBD server; a crashed sync (a child
 * that dies after begin) is swept and its frozen bitmap merged; a foreign
 * NBD server is refused; forget; a qcow2 bitmap survives a QEMU restart, a
 * raw or qcow2 v2 one does not, and one QEMU was killed over is not trusted; extents
 * across block status requests and at a ragged end; reads from another
 * thread while the guest overwrites what they read. Skipped without
 * qemu-system-x86_64 and qemu-img.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "migrate/mig.h"
#include "replicate/repl.h"

#define MIB (1ull << 20)
#define K64 (64ull << 10)
/* Over one NBD block status request (4 GiB - 64 KiB) and not a multiple
 * of the 64 KiB block; sparse, so free. */
#define DISK_SIZE ((5ull << 30) + (32u << 10))

static struct {
	bool skip;
	char dir[64];     /* temp dir: the disks and run/ */
	char run[96];
	char disk[3][128];
	struct mig_qemu *g;
} fx;

/* ---- the QEMU ------------------------------------------------------------------ */

static bool start_qemu(void)
{
	struct mig_qemu_spec s = {
		.name = "fleece", .dir = fx.run, .mem_bytes = 32 * MIB, .cpus = 1,
		.disks = { fx.disk[0], fx.disk[1], fx.disk[2] }, .ndisks = 3, .accel = MIG_ACCEL_TCG,
		.start_timeout_ms = 10000,
	};
	struct err *e = NULL;

	fx.g = mig_qemu_start(&s, &e);
	if (!fx.g) {
		print_message("  cannot start QEMU: %s\n", e->msg);
		err_free(e);
	}
	return fx.g != NULL;
}

static void stop_qemu(void)
{
	assert_true(mig_qemu_stop(fx.g, 5000, NULL));
	fx.g = NULL;
}

static int setup(void **state)
{
	char cmd[512];
	int fd;

	(void)state;
	if (system("command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null")) {
		print_message("  (no qemu-system-x86_64 or qemu-img: fleecing tests skipped)\n");
		fx.skip = true;
		return 0;
	}
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/vmm-fleece-XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	snprintf(fx.run, sizeof(fx.run), "%s/run", fx.dir);
	snprintf(fx.disk[0], sizeof(fx.disk[0]), "%s/d0.raw", fx.dir);
	snprintf(fx.disk[1], sizeof(fx.disk[1]), "%s/d1.qcow2", fx.dir);
	snprintf(fx.disk[2], sizeof(fx.disk[2]), "%s/d2.qcow2", fx.dir);
	fd = open(fx.disk[0], O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || ftruncate(fd, DISK_SIZE) < 0)
		return -1;
	close(fd);
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s %llu", fx.disk[1],
		 (unsigned long long)DISK_SIZE);
	if (system(cmd))
		return -1;
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -o compat=0.10 %s %llu",
		 fx.disk[2], (unsigned long long)DISK_SIZE);
	if (system(cmd))
		return -1;
	return start_qemu() ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	if (fx.skip)
		return 0;
	if (fx.g)
		mig_qemu_stop(fx.g, 5000, NULL);
	if (getenv("TEST_KEEP"))
		return 0;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx.dir);
	return system(cmd) ? -1 : 0;
}

static struct tp_qmp *qmp(void)
{
	return fx.g->qmp;
}

static char *hmp(const char *line)
{
	struct json_object *a = json_object_new_object(), *r;
	struct err *e = NULL;
	char *out;

	json_object_object_add(a, "command-line", json_object_new_string(line));
	r = tp_qmp_call(qmp(), "human-monitor-command", a, 10000, &e);
	if (!r)
		fail_msg("HMP '%s': %s", line, e->msg);
	out = strdup(json_object_get_string(r));
	json_object_put(r);
	return out;
}

/* A write by "the guest" through drive N's block backend. */
static void gwrite(unsigned drive, int pattern, uint64_t off, uint64_t len)
{
	char line[160], *out;

	snprintf(line, sizeof(line), "qemu-io drive%u \"write -P 0x%x %" PRIu64 " %" PRIu64 "\"",
		 drive, pattern, off, len);
	out = hmp(line);
	/* qemu-io reports to QEMU's stdout; the monitor gets only errors */
	if (*out && !strstr(out, "wrote"))
		fail_msg("%s: %s", line, out);
	free(out);
}

static struct json_object *qcall(const char *cmd)
{
	struct err *e = NULL;
	struct json_object *r = tp_qmp_call(qmp(), cmd, NULL, 10000, &e);

	if (!r)
		fail_msg("%s: %s", cmd, e->msg);
	return r;
}

static bool listed(const char *cmd, const char *key, const char *name)
{
	struct json_object *l = qcall(cmd), *v;
	bool found = false;

	for (size_t i = 0; i < json_object_array_length(l); i++)
		if (json_object_object_get_ex(json_object_array_get_idx(l, i), key, &v) &&
		    !strcmp(json_object_get_string(v), name))
			found = true;
	json_object_put(l);
	return found;
}

/* Bitmaps of job on diskN. */
static int bitmaps(unsigned drive, const char *job)
{
	struct json_object *a = json_object_new_object(), *l, *v, *b;
	char disk[16], prefix[64];
	int n = -1;

	snprintf(disk, sizeof(disk), "disk%u", drive);
	snprintf(prefix, sizeof(prefix), "vmm-repl-%s-%u-", job, drive);
	json_object_object_add(a, "flat", json_object_new_boolean(true));
	l = tp_qmp_call(qmp(), "query-named-block-nodes", a, 10000, NULL);
	assert_non_null(l);
	for (size_t i = 0; i < json_object_array_length(l); i++) {
		struct json_object *node = json_object_array_get_idx(l, i);

		if (!json_object_object_get_ex(node, "node-name", &v) ||
		    strcmp(json_object_get_string(v), disk))
			continue;
		n = 0;
		if (json_object_object_get_ex(node, "dirty-bitmaps", &b))
			for (size_t k = 0; k < json_object_array_length(b); k++)
				if (json_object_object_get_ex(json_object_array_get_idx(b, k),
							      "name", &v) &&
				    !strncmp(json_object_get_string(v), prefix, strlen(prefix)))
					n++;
	}
	json_object_put(l);
	return n;
}

/* Nothing of a sync is left but the one recording bitmap. */
static void assert_clean(unsigned drive, const char *job, int nbitmaps)
{
	char name[48], path[256];

	snprintf(name, sizeof(name), "vmmf%u-%s", drive, job);
	snprintf(path, sizeof(path), "%s/fleece/%u-%s.qcow2", fx.run, drive, job);
	assert_false(listed("query-block-exports", "id", name));
	assert_false(listed("query-jobs", "id", name));
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(bitmaps(drive, job), nbitmaps);
}

/* ---- syncs ------------------------------------------------------------------- */

static struct repl_fleece *begin(unsigned drive, const char *job)
{
	struct err *e = NULL;
	struct repl_fleece *f = repl_fleece_begin(qmp(), fx.run, drive, job, &e);

	if (!f)
		fail_msg("begin drive%u job %s: %s", drive, job, e->msg);
	assert_int_equal(repl_fleece_size(f), DISK_SIZE);
	return f;
}

/* The dirty extents, as "off+len ..." in KiB, and whether complete. */
static const char *dirty(struct repl_fleece *f, bool want_complete)
{
	static char buf[1024];
	struct tp_extent *ext = NULL;
	struct err *e = NULL;
	size_t n = 0, used = 0;
	bool complete = !want_complete;

	if (!repl_fleece_dirty(f, &ext, &n, &complete, &e))
		fail_msg("dirty: %s", e->msg);
	assert_int_equal(complete, want_complete);
	buf[0] = '\0';
	for (size_t i = 0; i < n && used < sizeof(buf) - 64; i++)
		used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%" PRIu64 "+%" PRIu64,
					 i ? " " : "", ext[i].offset >> 10, ext[i].length >> 10);
	free(ext);
	return buf;
}

static void check_read(struct repl_fleece *f, uint64_t off, uint64_t len, int pattern)
{
	unsigned char *buf = malloc(len);
	struct err *e = NULL;

	assert_non_null(buf);
	if (!repl_fleece_read(f, buf, len, off, &e))
		fail_msg("read at %" PRIu64 ": %s", off, e->msg);
	for (uint64_t i = 0; i < len; i++)
		if (buf[i] != pattern)
			fail_msg("byte %" PRIu64 " reads 0x%02x, not 0x%02x", off + i, buf[i],
				 pattern);
	free(buf);
}

/* A first sync, to have a bitmap recording. */
static void first_sync(unsigned drive, const char *job)
{
	struct repl_fleece *f = begin(drive, job);

	dirty(f, false);
	repl_fleece_end(f, true);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_first_sync(void **state)
{
	struct repl_fleece *f;
	struct err *e = NULL;
	char byte;

	(void)state;
	if (fx.skip)
		skip();
	gwrite(0, 0x5a, 1 * MIB, 2 * K64);
	gwrite(1, 0x5b, 2 * MIB, K64);
	f = begin(0, "first");
	assert_string_equal(dirty(f, false), "1024+128");
	check_read(f, 1 * MIB, 2 * K64, 0x5a);
	check_read(f, 32 * MIB, K64, 0);
	assert_false(repl_fleece_read(f, &byte, 1, DISK_SIZE, &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	repl_fleece_end(f, true);
	assert_clean(0, "first", 1);

	f = begin(1, "first");
	assert_string_equal(dirty(f, false), "2048+64");
	check_read(f, 2 * MIB, K64, 0x5b);
	repl_fleece_end(f, true);
	assert_clean(1, "first", 1);
}

static void test_point_in_time(void **state)
{
	struct repl_fleece *f;

	(void)state;
	if (fx.skip)
		skip();
	first_sync(0, "pit");
	gwrite(0, 0x11, 4 * MIB, K64);
	f = begin(0, "pit");
	assert_string_equal(dirty(f, true), "4096+64");
	/* The guest writes on; the view stays as of begin. */
	gwrite(0, 0xa5, 4 * MIB, K64);
	gwrite(0, 0xa6, 8 * MIB, 3 * K64);
	check_read(f, 4 * MIB, K64, 0x11);
	check_read(f, 8 * MIB, 3 * K64, 0);
	assert_string_equal(dirty(f, true), "4096+64");
	repl_fleece_end(f, true);
	assert_clean(0, "pit", 1);

	f = begin(0, "pit");
	assert_string_equal(dirty(f, true), "4096+64 8192+192");
	check_read(f, 4 * MIB, K64, 0xa5);
	check_read(f, 8 * MIB, 3 * K64, 0xa6);
	repl_fleece_end(f, true);

	f = begin(0, "pit");
	assert_string_equal(dirty(f, true), "");
	repl_fleece_end(f, true);
	assert_clean(0, "pit", 1);
}

/* Reads along a plan come from the read-ahead (many extents, some longer
 * than one request, read in pieces as a sender does); reads off the plan,
 * a gap skipped and a read past the plan's end are still right; the view
 * is still the point in time. */
static void test_read_ahead(void **state)
{
	struct tp_extent plan[40];
	struct repl_fleece *f;
	struct err *e = NULL;

	(void)state;
	if (fx.skip)
		skip();
	for (unsigned i = 0; i < 40; i++) {
		plan[i] = (struct tp_extent){ 12 * MIB + i * 2 * K64, K64 };
		gwrite(0, 0x40 + (int)i, plan[i].offset, K64);
	}
	plan[39].length = 3 * MIB; /* one extent of several requests */
	gwrite(0, 0x67, plan[39].offset, 3 * MIB);
	f = begin(0, "ra");
	assert_true(repl_fleece_plan(f, plan, 40, &e));
	gwrite(0, 0x99, plan[0].offset, K64); /* after begin: not in the view */
	for (unsigned i = 0; i < 39; i++) {
		if (i == 7)
			continue; /* skipped: its request is dropped unread */
		check_read(f, plan[i].offset, K64 / 2, 0x40 + (int)i);
		check_read(f, plan[i].offset + K64 / 2, K64 / 2, 0x40 + (int)i);
	}
	check_read(f, plan[7].offset, K64, 0x47);          /* behind the reader now */
	check_read(f, plan[39].offset, 1 * MIB + 4096, 0x67);
	check_read(f, plan[39].offset + 1 * MIB + 4096, 2 * MIB - 4096, 0x67);
	check_read(f, 40 * MIB, K64, 0);                    /* past the plan */
	assert_true(repl_fleece_plan(f, NULL, 0, &e));
	check_read(f, plan[3].offset, K64, 0x43);
	repl_fleece_end(f, true);
	/* Job pit (test_point_in_time's) recorded these writes: a sync of it
	 * leaves it clean for the tests after this one. */
	f = begin(0, "pit");
	dirty(f, true);
	repl_fleece_end(f, true);
}

static void test_failed_sync_keeps_both(void **state)
{
	struct repl_fleece *f;

	(void)state;
	if (fx.skip)
		skip();
	first_sync(1, "fail");
	gwrite(1, 0x31, 10 * MIB, K64);
	f = begin(1, "fail");
	assert_string_equal(dirty(f, true), "10240+64");
	gwrite(1, 0x32, 12 * MIB, 2 * K64);
	repl_fleece_end(f, false);
	assert_clean(1, "fail", 1);

	f = begin(1, "fail");
	assert_string_equal(dirty(f, true), "10240+64 12288+128");
	repl_fleece_end(f, false);
	f = begin(1, "fail");
	assert_string_equal(dirty(f, true), "10240+64 12288+128");
	check_read(f, 12 * MIB, 2 * K64, 0x32);
	repl_fleece_end(f, true);

	f = begin(1, "fail");
	assert_string_equal(dirty(f, true), "");
	repl_fleece_end(f, true);
	assert_clean(1, "fail", 1);
}

static void test_two_disks_share_server(void **state)
{
	struct repl_fleece *f0, *f1;
	char sock[256];

	(void)state;
	if (fx.skip)
		skip();
	snprintf(sock, sizeof(sock), "%s/fleece/nbd.sock", fx.run);
	f0 = begin(0, "two");
	f1 = begin(1, "two");
	check_read(f0, 1 * MIB, K64, 0x5a);
	check_read(f1, 2 * MIB, K64, 0x5b);
	repl_fleece_end(f0, true);
	/* drive1's sync still reads through the shared server */
	assert_int_equal(access(sock, F_OK), 0);
	check_read(f1, 2 * MIB, K64, 0x5b);
	dirty(f1, false);
	repl_fleece_end(f1, true);
	assert_int_equal(access(sock, F_OK), -1); /* the last one stopped it */
	assert_clean(0, "two", 1);
	assert_clean(1, "two", 1);
}

/* A sync whose process dies after begin: export, job, overlay and a
 * frozen bitmap stay in QEMU until the next begin sweeps them. */
static void test_crash_is_swept(void **state)
{
	char sock[256], path[256];
	struct repl_fleece *f;
	int st;
	pid_t pid;

	(void)state;
	if (fx.skip)
		skip();
	snprintf(sock, sizeof(sock), "%s/qmp.sock", fx.run);
	snprintf(path, sizeof(path), "%s/fleece/1-crash.qcow2", fx.run);
	first_sync(1, "crash");
	gwrite(1, 0x41, 16 * MIB, K64);
	/* QEMU's monitor takes one client: the child gets it. */
	tp_qmp_close(fx.g->qmp);
	fx.g->qmp = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tp_qmp *q = tp_qmp_connect(sock, 5000, NULL);

		_exit(q && repl_fleece_begin(q, fx.run, 1, "crash", NULL) ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	fx.g->qmp = tp_qmp_connect(sock, 5000, NULL);
	assert_non_null(fx.g->qmp);
	assert_true(listed("query-block-exports", "id", "vmmf1-crash"));
	assert_true(listed("query-jobs", "id", "vmmf1-crash"));
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(bitmaps(1, "crash"), 2);

	gwrite(1, 0x42, 20 * MIB, K64);
	f = begin(1, "crash");
	/* the frozen bitmap's block and the one written after the crash */
	assert_string_equal(dirty(f, true), "16384+64 20480+64");
	check_read(f, 16 * MIB, K64, 0x41);
	check_read(f, 20 * MIB, K64, 0x42);
	repl_fleece_end(f, true);
	assert_clean(1, "crash", 1);
	/* the crashed sync's server was reused, and stopped by this end */
	snprintf(path, sizeof(path), "%s/fleece/nbd.sock", fx.run);
	assert_int_equal(access(path, F_OK), -1);
	f = begin(1, "crash");
	assert_string_equal(dirty(f, true), "");
	repl_fleece_end(f, true);
}

static void test_foreign_server_refused(void **state)
{
	struct json_object *a = json_object_new_object(), *addr = json_object_new_object(),
			   *data = json_object_new_object();
	struct err *e = NULL;
	char other[256];

	(void)state;
	if (fx.skip)
		skip();
	snprintf(other, sizeof(other), "%s/other.sock", fx.dir);
	json_object_object_add(data, "path", json_object_new_string(other));
	json_object_object_add(addr, "type", json_object_new_string("unix"));
	json_object_object_add(addr, "data", data);
	json_object_object_add(a, "addr", addr);
	assert_true(tp_qmp_run(qmp(), "nbd-server-start", a, 10000, NULL));
	assert_null(repl_fleece_begin(qmp(), fx.run, 0, "pit", &e));
	assert_int_equal(e->code, ERR_CONFLICT);
	err_free(e);
	assert_true(tp_qmp_run(qmp(), "nbd-server-stop", NULL, 10000, NULL));
	/* the failed begin changed no bitmap: the next sync is complete */
	assert_clean(0, "pit", 1);
	gwrite(0, 0x61, 30 * MIB, K64);
	{
		struct repl_fleece *f = begin(0, "pit");

		assert_string_equal(dirty(f, true), "30720+64");
		repl_fleece_end(f, true);
	}
}

static void test_bad_arguments(void **state)
{
	struct err *e = NULL;

	(void)state;
	if (fx.skip)
		skip();
	assert_null(repl_fleece_begin(qmp(), fx.run, 0, "bad job", &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	e = NULL;
	assert_null(repl_fleece_begin(qmp(), fx.run, 0, "123456789012345678901234", &e));
	assert_int_equal(e->code, ERR_INVAL);
	err_free(e);
	e = NULL;
	assert_null(repl_fleece_begin(qmp(), fx.run, 5, "nodisk", &e));
	assert_int_equal(e->code, ERR_NOTFOUND);
	err_free(e);
	assert_clean(5, "nodisk", -1);
}

static void test_forget(void **state)
{
	struct repl_fleece *f;

	(void)state;
	if (fx.skip)
		skip();
	first_sync(0, "forget");
	f = begin(0, "forget");
	repl_fleece_end(f, false);
	assert_int_equal(bitmaps(0, "forget"), 1);
	assert_true(repl_fleece_forget(qmp(), 0, "forget", NULL));
	assert_int_equal(bitmaps(0, "forget"), 0);
	f = begin(0, "forget");
	dirty(f, false);
	repl_fleece_end(f, true);
	assert_true(repl_fleece_forget(qmp(), 0, "forget", NULL));
	assert_int_equal(bitmaps(0, "forget"), 0);
}

static void test_qemu_restart(void **state)
{
	struct repl_fleece *f;

	(void)state;
	if (fx.skip)
		skip();
	first_sync(0, "rst");
	first_sync(1, "rst");
	first_sync(2, "rst");
	gwrite(0, 0x51, 24 * MIB, K64);
	gwrite(1, 0x52, 24 * MIB, K64);
	gwrite(2, 0x52, 24 * MIB, K64);
	/* qcow2 v2: the bitmap is kept in memory only, and works */
	f = begin(2, "rst");
	assert_string_equal(dirty(f, true), "24576+64");
	repl_fleece_end(f, false);
	stop_qemu();
	assert_true(start_qemu());

	/* qcow2: the persistent bitmap came back */
	f = begin(1, "rst");
	assert_string_equal(dirty(f, true), "24576+64");
	check_read(f, 24 * MIB, K64, 0x52);
	repl_fleece_end(f, true);
	/* raw: gone with the old QEMU; every allocated extent then */
	assert_int_equal(bitmaps(0, "rst"), 0);
	f = begin(0, "rst");
	assert_non_null(strstr(dirty(f, false), "24576+64"));
	repl_fleece_end(f, true);
	f = begin(2, "rst");
	assert_non_null(strstr(dirty(f, false), "24576+64"));
	repl_fleece_end(f, true);

	/* Killed: a bitmap QEMU loaded is marked in use in the image and
	 * comes back inconsistent; not trusted. (One added since the start
	 * was never stored: it is simply missing.) */
	stop_qemu();
	assert_true(start_qemu());
	gwrite(1, 0x53, 26 * MIB, K64);
	free(hmp("qemu-io drive1 flush")); /* or the qcow2 metadata of it dies too */
	kill(fx.g->pid, SIGKILL);
	stop_qemu();
	assert_true(start_qemu());
	assert_int_equal(bitmaps(1, "rst"), 1);
	f = begin(1, "rst");
	assert_non_null(strstr(dirty(f, false), "26624+64"));
	repl_fleece_end(f, true);
	assert_clean(1, "rst", 1);
	f = begin(1, "rst");
	assert_string_equal(dirty(f, true), "");
	repl_fleece_end(f, true);
}

/* Extents that cross block status requests, and the disk's ragged end. */
static void test_walk_large_disk(void **state)
{
	const uint64_t chunk_end = (4ull << 30) - K64; /* first request's end */
	struct repl_fleece *f;

	(void)state;
	if (fx.skip)
		skip();
	for (unsigned d = 0; d < 2; d++) {
		first_sync(d, "walk");
		gwrite(d, 0x71, chunk_end - K64, 2 * K64);
		gwrite(d, 0x72, DISK_SIZE - 4096, 4096);
		f = begin(d, "walk");
		/* The bitmap is exact to REPL_DIRTY_GRAIN (4 KiB): just the
		 * tail's 4 KiB. */
		assert_string_equal(dirty(f, true), "4194176+128 5242908+4");
		check_read(f, chunk_end - K64, 2 * K64, 0x71);
		check_read(f, DISK_SIZE - 4096, 4096, 0x72);
		repl_fleece_end(f, true);
		/* and the same through the allocation walk */
		assert_true(repl_fleece_forget(qmp(), d, "walk", NULL));
		f = begin(d, "walk");
		/* Allocation is per file block (raw) or per 64 KiB cluster
		 * (qcow2, the tail's whole last cluster). */
		assert_non_null(strstr(dirty(f, false), d == 0 ? "4194176+128 5242908+4" :
								 "4194176+128 5242880+32"));
		repl_fleece_end(f, true);
	}
}

struct reader {
	struct repl_fleece *f;
	uint64_t off, len;
	volatile bool stop;
	int rounds, bad;
	char why[128];
};

static void *read_loop(void *opaque)
{
	struct reader *r = opaque;
	unsigned char *buf = malloc(K64);

	while (buf && (!r->stop || r->rounds < 2)) {
		for (uint64_t off = r->off; off < r->off + r->len; off += K64) {
			struct err *e = NULL;

			if (!repl_fleece_read(r->f, buf, K64, off, &e)) {
				snprintf(r->why, sizeof(r->why), "%s", e->msg);
				err_free(e);
				r->bad++;
				continue;
			}
			for (uint64_t i = 0; i < K64; i++)
				if (buf[i] != 0x77) {
					snprintf(r->why, sizeof(r->why), "byte %" PRIu64 " is 0x%02x",
						 off + i, buf[i]);
					r->bad++;
					break;
				}
		}
		r->rounds++;
	}
	free(buf);
	return NULL;
}

/* Another thread reads the view while the guest overwrites all of it, in
 * writes that straddle the 64 KiB blocks: it sees the old data only. */
static void test_view_stable_under_writes(void **state)
{
	struct reader r = { .off = 40 * MIB, .len = 4 * MIB };
	struct repl_fleece *f;
	pthread_t t;

	(void)state;
	if (fx.skip)
		skip();
	first_sync(0, "busy");
	gwrite(0, 0x77, r.off, r.len);
	f = begin(0, "busy");
	r.f = f;
	assert_int_equal(pthread_create(&t, NULL, read_loop, &r), 0);
	for (uint64_t off = r.off + 4096; off < r.off + r.len; off += K64)
		gwrite(0, 0x88, off, K64);
	r.stop = true;
	pthread_join(t, NULL);
	if (r.bad)
		fail_msg("%d bad reads in %d rounds: %s", r.bad, r.rounds, r.why);
	repl_fleece_end(f, true);
	f = begin(0, "busy");
	assert_string_equal(dirty(f, true), "40964+4096");
	check_read(f, r.off + 4096, r.len - 4096, 0x88);
	repl_fleece_end(f, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_sync),
		cmocka_unit_test(test_point_in_time),
		cmocka_unit_test(test_read_ahead),
		cmocka_unit_test(test_failed_sync_keeps_both),
		cmocka_unit_test(test_two_disks_share_server),
		cmocka_unit_test(test_crash_is_swept),
		cmocka_unit_test(test_foreign_server_refused),
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_forget),
		cmocka_unit_test(test_walk_large_disk),
		cmocka_unit_test(test_view_stable_under_writes),
		cmocka_unit_test(test_qemu_restart),
	};

	if (!getenv("VMM_LOG"))
		log_set_level(LOG_ERROR);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests_name("fleece", tests, setup, teardown);
}
