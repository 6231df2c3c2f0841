/* test_replica.c - the replica on the target (replicate/repl_replica.c):
 * create and incremental updates from real tp_streams compared byte for
 * byte with the images they must produce (holes punched where zeros were
 * sent); refusals that change nothing (wrong generation, job or size, a
 * damaged or truncated stream, an existing file); recovery from every
 * state a crash can leave, from a failed application, from hand-made
 * garbage, and its refusal while an update holds the delta; and the crash
 * test: updates and recoveries SIGKILLed at random instants, after which
 * recovery must leave exactly the old or the new image with the matching
 * generation. Files live in /dev/shm when it exists (fsyncs are cheap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "replicate/repl.h"

#define KiB (1024ull)
#define MiB (1024ull * 1024)
#define SIZE (4 * MiB + 5120) /* whole sectors (qcow2), not whole pages */
#define T0 1700000000

/* ---- images ------------------------------------------------------------ */

/* A change to an image: random bytes from seed, or zeros (seed 0). */
struct mod {
	uint64_t off, len;
	unsigned seed;
};

static void apply_mods(uint8_t *img, const struct mod *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t x = m[i].seed * 0x9e3779b97f4a7c15ull + m[i].off;

		for (uint64_t k = 0; k < m[i].len; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			img[m[i].off + k] = m[i].seed ? (uint8_t)(x >> 24) | 1 : 0;
		}
	}
}

/* Generation 1: data, a hole, data across a MiB boundary, zeros, a tail. */
static const struct mod img_a[] = {
	{ 0, 1 * MiB, 1 }, { 1536 * KiB, 1536 * KiB + 100, 2 }, { SIZE - 1000, 1000, 3 },
};
/* Generation 2, each change an extent of the update: new data, data to
 * zeros (a punched hole), data into a hole, a run of over a MiB across a
 * hole's end, an unchanged extent, an unaligned change near the end. */
static const struct mod mods_b[] = {
	{ 64 * KiB, 128 * KiB, 10 }, { 512 * KiB, 256 * KiB, 0 }, { 1 * MiB + 64 * KiB, 64 * KiB, 11 },
	{ 1472 * KiB, 1228 * KiB, 12 }, { SIZE - 700, 100, 13 },
};
static const struct tp_extent ext_b[] = {
	{ 64 * KiB, 128 * KiB }, { 512 * KiB, 256 * KiB }, { 1 * MiB + 64 * KiB, 64 * KiB },
	{ 1472 * KiB, 1228 * KiB }, { 3 * MiB, 64 * KiB }, { SIZE - 700, 100 },
};
/* Generation 3: zeros inside a data block (sent as data), a MiB of zeros. */
static const struct mod mods_c[] = {
	{ 0, 4 * KiB, 20 }, { 1548 * KiB, 8 * KiB, 0 }, { 2 * MiB, 1 * MiB, 0 }, { SIZE - 5000, 5000, 21 },
};
static const struct tp_extent ext_c[] = {
	{ 0, 4 * KiB }, { 1548 * KiB, 8 * KiB }, { 2 * MiB, 1 * MiB }, { SIZE - 5000, 5000 },
};

struct fx {
	char dir[64], path[96];
	uint8_t *a, *b, *c; /* the images of generations 1, 2, 3 */
};

static uint8_t *image(const uint8_t *from, const struct mod *m, size_t n)
{
	uint8_t *img = calloc(1, SIZE);

	assert_non_null(img);
	if (from)
		memcpy(img, from, SIZE);
	apply_mods(img, m, n);
	return img;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	/* tmpfs when there is one: a thousand fsyncs stay off the disk. */
	strcpy(f->dir, access("/dev/shm", W_OK) == 0 ? "/dev/shm/test_replica.XXXXXX"
						     : "/tmp/test_replica.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/vm-100-disk-0.raw", f->dir);
	f->a = image(NULL, img_a, ARRAY_SIZE(img_a));
	f->b = image(f->a, mods_b, ARRAY_SIZE(mods_b));
	f->c = image(f->b, mods_c, ARRAY_SIZE(mods_c));
	*state = f;
	return 0;
}

/* The same, with a qcow2 volume (written through qemu-nbd); skipped
 * where qemu-img or qemu-nbd is missing. */
static int setup_qcow2(void **state)
{
	struct fx *f;

	if (system("command -v qemu-img >/dev/null && command -v qemu-nbd >/dev/null")) {
		print_message("  (no qemu-img or qemu-nbd: qcow2 replica tests skipped)\n");
		*state = NULL;
		return 0;
	}
	setup(state);
	f = *state;
	snprintf(f->path, sizeof(f->path), "%s/vm-100-disk-0.qcow2", f->dir);
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	DIR *d = f ? opendir(f->dir) : NULL;
	struct dirent *de;

	if (!f)
		return 0;
	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.')
			unlinkat(dirfd(d), de->d_name, 0);
	if (d)
		closedir(d);
	rmdir(f->dir);
	free(f->a);
	free(f->b);
	free(f->c);
	free(f);
	return 0;
}

/* ---- streams ------------------------------------------------------------ */

static bool mem_read(void *opaque, void *buf, size_t len, uint64_t off, struct err **errp)
{
	(void)errp;
	memcpy(buf, (const uint8_t *)opaque + off, len);
	return true;
}

/* The extents of img as a stream in a memfd, at offset 0. */
static int stream_of(const uint8_t *img, const struct tp_extent *x, size_t n)
{
	int fd = memfd_create("stream", MFD_CLOEXEC);
	struct err *e = NULL;

	assert_true(fd >= 0);
	if (!tp_stream_send_extents_fn(fd, SIZE, x, n, mem_read, (void *)img, NULL, NULL, &e))
		fail_msg("send: %s", e->msg);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* A full stream of img, sent from a sparse file as a first sync is. */
static int full_stream_of(const struct fx *f, const uint8_t *img)
{
	char src[128];
	int fd = memfd_create("stream", MFD_CLOEXEC), s;
	struct err *e = NULL;

	snprintf(src, sizeof(src), "%s/source", f->dir);
	s = open(src, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0 && s >= 0);
	assert_int_equal(ftruncate(s, SIZE), 0);
	for (uint64_t off = 0; off < SIZE; off += 4096) {
		size_t n = SIZE - off < 4096 ? SIZE - off : 4096;
		for (size_t i = 0; i < n; i++)
			if (img[off + i]) {
				assert_int_equal(pwrite(s, img + off, n, (off_t)off), (ssize_t)n);
				break;
			}
	}
	close(s);
	if (!tp_stream_send_file(fd, src, NULL, NULL, &e))
		fail_msg("send: %s", e->msg);
	unlink(src);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* ---- checks ------------------------------------------------------------- */

static char *side(const struct fx *f, const char *suffix)
{
	static char buf[4][128];
	static unsigned i;
	char *s = buf[i++ % 4];

	snprintf(s, sizeof(buf[0]), "%s%s", f->path, suffix);
	return s;
}

static bool exists(const char *p)
{
	return access(p, F_OK) == 0;
}

static uint8_t *slurp(const char *p, size_t *len)
{
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *b;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
	b[st.st_size] = 0;
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

/* Offset of the first byte where the replica differs from img, or -1.
 * (No allocation: the crash test forks, and a parent that churned its
 * heap, under ASan, forks slowly.) */
static int64_t differs_qcow2(const struct fx *f, const uint8_t *img);

static int64_t differs(const struct fx *f, const uint8_t *img)
{
	static uint8_t b[256 * KiB];
	int fd;
	uint64_t off = 0;
	ssize_t r = 1;

	if (util_volume_is_qcow2(f->path))
		return differs_qcow2(f, img);
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	while (off <= SIZE && (r = pread(fd, b, sizeof(b), (off_t)off)) > 0) {
		size_t n = (size_t)r, i = 0;

		if (off + n > SIZE || memcmp(b, img + off, n)) {
			while (off + i < SIZE && b[i] == img[off + i])
				i++;
			close(fd);
			return (int64_t)(off + i);
		}
		off += n;
	}
	close(fd);
	assert_true(r >= 0);
	return off == SIZE ? -1 : (int64_t)off;
}

/* The same for a qcow2 replica: its guest view, read through qemu-nbd. */
static int64_t differs_qcow2(const struct fx *f, const uint8_t *img)
{
	static uint8_t b[256 * KiB];
	struct err *e = NULL;
	struct repl_vol *v = repl_vol_open(f->path, false, &e);
	int64_t at = -1;

	if (!v)
		fail_msg("open '%s': %s", f->path, e->msg);
	assert_int_equal(repl_vol_get_size(v), SIZE);
	for (uint64_t off = 0; off < SIZE && at < 0; off += sizeof(b)) {
		size_t n = SIZE - off < sizeof(b) ? (size_t)(SIZE - off) : sizeof(b);

		if (!repl_vol_read(v, b, n, off, &e))
			fail_msg("read '%s': %s", f->path, e->msg);
		for (size_t i = 0; i < n && at < 0; i++)
			if (b[i] != img[off + i])
				at = (int64_t)(off + i);
	}
	assert_true(repl_vol_close(v, &e));
	return at;
}

static void assert_image(const struct fx *f, const uint8_t *img)
{
	int64_t at = differs(f, img);

	if (at >= 0)
		fail_msg("the replica differs from the image at offset %" PRId64, at);
}

/* The replica is base with src's bytes in the extents x. */
static void assert_overlaid(const struct fx *f, const uint8_t *base, const uint8_t *src,
			    const struct tp_extent *x, size_t n)
{
	uint8_t *want = malloc(SIZE);

	assert_non_null(want);
	memcpy(want, base, SIZE);
	for (size_t k = 0; k < n; k++)
		memcpy(want + x[k].offset, src + x[k].offset, x[k].length);
	assert_image(f, want);
	free(want);
}

/* PATH.repl holds exactly what we wrote for generation gen. */
static void assert_meta(const struct fx *f, uint64_t gen)
{
	char want[256];
	size_t len;
	char *have = (char *)slurp(side(f, ".repl"), &len);
	struct stat st;

	snprintf(want, sizeof(want),
		 "{\"job\":\"100-0\",\"gen\":%" PRIu64 ",\"time\":%" PRIu64 ",\"size\":%llu,\"source\":\"node1\"}\n",
		 gen, T0 + gen, SIZE);
	assert_string_equal(have, want);
	free(have);
	assert_int_equal(stat(side(f, ".repl"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
}

/* Nothing but the volume and PATH.repl (and the test's own files). */
static void assert_no_side_files(const struct fx *f)
{
	DIR *d = opendir(f->dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".repl-") || strstr(de->d_name, ".part") ||
		    strstr(de->d_name, ".tmp."))
			fail_msg("left behind: '%s'", de->d_name);
	closedir(d);
}

/* *e is the expected error; it is freed and *e reset for the next call. */
static void expect(struct err **e, enum err_code code, const char *needle)
{
	if (!*e || (*e)->code != code || !strstr((*e)->msg, needle))
		fail_msg("expected %s error with '%s', got %s: '%s'", err_code_name(code), needle,
			 *e ? err_code_name((*e)->code) : "none", *e ? (*e)->msg : "");
	err_free(*e);
	*e = NULL;
}

/* Generation gen of the tests' replica, with its time. */
static struct repl_replica_info gen_info(uint64_t gen)
{
	return (struct repl_replica_info){ .job = "100-0", .gen = gen, .time = T0 + (int64_t)gen,
					   .size = SIZE, .source = "node1" };
}

static void create_a(struct fx *f)
{
	struct repl_replica_info i = gen_info(1);
	struct err *e = NULL;
	int in = full_stream_of(f, f->a);

	if (!repl_replica_create(f->path, in, &i, NULL, &e))
		fail_msg("create: %s", e->msg);
	close(in);
}

static bool update(struct fx *f, uint64_t gen, int in, struct tp_stream_progress *fin,
		   struct err **errp)
{
	struct repl_replica_info i = gen_info(gen);

	return repl_replica_update(f->path, in, &i, fin, errp);
}

/* [off, off + len) of the replica is a hole. */
static void assert_hole(const struct fx *f, uint64_t off, uint64_t len)
{
	int fd = open(f->path, O_RDONLY | O_CLOEXEC);
	off_t d;

	assert_true(fd >= 0);
	d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d >= 0 && (uint64_t)d < off + len)
		fail_msg("data at %jd inside the hole [%" PRIu64 ", +%" PRIu64 ")", (intmax_t)d, off, len);
	close(fd);
}

/* ---- tests -------------------------------------------------------------- */

/* Settles pend a little later, from another thread (the agent after its
 * reply, while a new session's recovery waits). */
struct settler {
	struct repl_replica_pending *pend;
	bool ok;
};

static void *settle_later(void *arg)
{
	struct settler *t = arg;

	usleep(200 * 1000);
	t->ok = repl_replica_settle(t->pend, NULL);
	return NULL;
}

static void test_create_update_round_trips(void **state)
{
	struct fx *f = *state;
	struct repl_replica_info got;
	struct tp_stream_progress fin = { 0 };
	struct err *e = NULL;
	uint64_t total = 0;
	int in;

	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 0);
	create_a(f);
	assert_image(f, f->a);
	assert_meta(f, 1);
	assert_no_side_files(f);
	assert_hole(f, 1 * MiB, 512 * KiB); /* a full stream keeps holes */

	in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));
	assert_true(update(f, 2, in, &fin, &e));
	close(in);
	for (size_t i = 0; i < ARRAY_SIZE(ext_b); i++)
		total += ext_b[i].length;
	assert_int_equal(fin.total, total);
	assert_int_equal(fin.covered, total);
	assert_image(f, f->b);
	assert_meta(f, 2);
	assert_no_side_files(f);
	assert_hole(f, 512 * KiB, 256 * KiB); /* data became zeros: punched */

	in = stream_of(f->c, ext_c, ARRAY_SIZE(ext_c));
	assert_true(update(f, 3, in, NULL, &e));
	close(in);
	assert_image(f, f->c);
	assert_meta(f, 3);
	assert_no_side_files(f);
	assert_hole(f, 2 * MiB, 1 * MiB);

	/* Recovery of a consistent replica changes nothing, every time. */
	for (int k = 0; k < 2; k++) {
		assert_true(repl_replica_recover(f->path, &got, &e));
		assert_int_equal(got.gen, 3);
		assert_int_equal(got.time, T0 + 3);
		assert_int_equal(got.size, SIZE);
		assert_string_equal(got.job, "100-0");
		assert_string_equal(got.source, "node1");
		assert_image(f, f->c);
	}
	/* An empty update moves the generation only. */
	in = stream_of(f->c, NULL, 0);
	assert_true(update(f, 4, in, NULL, &e));
	close(in);
	assert_image(f, f->c);
	assert_meta(f, 4);

	/* A durable update returns with the new generation committed and the
	 * replica reading as it; its generation is recorded, and the side
	 * files go, when the pending part settles. */
	in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));
	{
		struct repl_replica_info i5 = gen_info(5);
		struct repl_replica_pending pend;

		assert_true(repl_replica_update_durable(f->path, in, &i5, &pend, NULL, &e));
		assert_true(pend.dfd >= 0);
		assert_overlaid(f, f->c, f->b, ext_b, ARRAY_SIZE(ext_b));
		assert_meta(f, 4);
		assert_true(exists(side(f, ".repl-commit")) && exists(side(f, ".repl-delta")));
		/* Meanwhile a recovery waits for the lock (here 0.5 s), then gives up... */
		assert_false(repl_replica_recover(f->path, &got, &e));
		assert_int_equal(e->code, ERR_CONFLICT);
		err_free(e);
		e = NULL;
		/* ... or, settled in time, finds the new generation and nothing else. */
		{
			struct settler t = { .pend = &pend };
			pthread_t th;

			assert_int_equal(pthread_create(&th, NULL, settle_later, &t), 0);
			assert_true(repl_replica_recover(f->path, &got, &e));
			pthread_join(th, NULL);
			assert_true(t.ok);
			assert_int_equal(got.gen, 5);
			assert_no_side_files(f);
		}
		assert_int_equal(pend.dfd, -1);
		assert_true(repl_replica_settle(&pend, &e)); /* again: nothing to do */
	}
	close(in);
	assert_no_side_files(f);
	assert_meta(f, 5);
	assert_overlaid(f, f->c, f->b, ext_b, ARRAY_SIZE(ext_b));

	/* Dropped unsettled (the agent killed after its reply): recovery
	 * makes it the new generation all the same. */
	in = stream_of(f->c, ext_b, ARRAY_SIZE(ext_b));
	{
		struct repl_replica_info i6 = gen_info(6);
		struct repl_replica_pending pend;

		assert_true(repl_replica_update_durable(f->path, in, &i6, &pend, NULL, &e));
		repl_replica_pending_drop(&pend);
		assert_int_equal(pend.dfd, -1);
	}
	close(in);
	assert_meta(f, 5);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 6);
	assert_no_side_files(f);
	assert_meta(f, 6);
	assert_image(f, f->c);

	assert_true(repl_replica_remove(f->path, &e));
	assert_false(exists(f->path));
	assert_false(exists(side(f, ".repl")));
	assert_true(repl_replica_remove(f->path, &e)); /* again: nothing to do */
}

static void test_create_refusals(void **state)
{
	static const struct tp_extent most[] = { { 0, SIZE - 1 } };
	struct fx *f = *state;
	struct repl_replica_info i = gen_info(1);
	struct err *e = NULL;
	size_t len;
	uint8_t *b;
	int in, fd;

	/* An extents stream that leaves a byte out is not a replica. */
	in = stream_of(f->a, most, 1);
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_PROTO, "only some extents");
	close(in);
	assert_false(exists(f->path) || exists(side(f, ".part")) || exists(side(f, ".repl")));

	/* A damaged stream, a wrong size, bad names: nothing is left. */
	in = full_stream_of(f, f->a);
	b = malloc(SIZE);
	assert_non_null(b);
	len = (size_t)read(in, b, SIZE);
	b[len / 2] ^= 1;
	fd = memfd_create("bad", MFD_CLOEXEC);
	assert_int_equal(write(fd, b, len), (ssize_t)len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_false(repl_replica_create(f->path, fd, &i, NULL, &e));
	expect(&e, ERR_PROTO, "receive '");
	close(fd);
	free(b);
	assert_false(exists(f->path) || exists(side(f, ".part")) || exists(side(f, ".repl")));
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	i.size = SIZE + 1;
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_INVAL, "volume size mismatch");
	i.size = SIZE;
	strcpy(i.job, "a\"b");
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_INVAL, "invalid replica job: character 2 is not printable ASCII");
	i = gen_info(1);
	memset(i.source, 'x', sizeof(i.source));
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_INVAL, "invalid replica source 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': longer than 63 characters");
	i = gen_info(1);
	i.job[0] = 0;
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_INVAL, "invalid replica job: empty");
	i = gen_info(0);
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_INVAL, "invalid replica generation 0");
	assert_false(exists(f->path) || exists(side(f, ".part")) || exists(side(f, ".repl")));
	close(in);

	/* A file at the path is never overwritten, nor is a replica. */
	fd = open(f->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_int_equal(write(fd, "guest disk", 10), 10);
	close(fd);
	in = full_stream_of(f, f->a);
	i = gen_info(1);
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_CONFLICT, "exists");
	b = slurp(f->path, &len);
	assert_int_equal(len, 10);
	free(b);
	assert_true(repl_replica_remove(f->path, &e)); /* no PATH.repl: not ours */
	assert_true(exists(f->path));
	unlink(f->path);
	close(in);
	create_a(f);
	in = full_stream_of(f, f->a);
	assert_false(repl_replica_create(f->path, in, &i, NULL, &e));
	expect(&e, ERR_CONFLICT, "exists");
	close(in);
	assert_image(f, f->a);
	assert_meta(f, 1);
}

/* Refused updates leave every byte and file as it was. */
static void test_update_refusals(void **state)
{
	struct fx *f = *state;
	struct repl_replica_info i;
	struct err *e = NULL;
	size_t mlen, len;
	uint8_t *meta, *b;
	int in;

	in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));
	assert_false(update(f, 2, in, NULL, &e));
	expect(&e, ERR_STATE, "no replica at '");
	create_a(f);
	meta = slurp(side(f, ".repl"), &mlen);
	for (int k = 0; k < 6; k++) {
		static const char *const why[] = {
			"holds generation 1: generation 3 cannot follow",
			"holds generation 1: generation 1 cannot follow",
			"holds generation 1: generation 0 cannot follow",
			"belongs to job '100-0', not '100-1'",
			"has 4199424 bytes, the update 4199425",
			"receive '",
		};
		static const enum err_code code[] = { ERR_STATE, ERR_STATE, ERR_STATE, ERR_CONFLICT,
						      ERR_STATE, ERR_INVAL };
		i = gen_info(k == 0 ? 3 : k == 1 ? 1 : k == 2 ? 0 : 2);
		if (k == 3)
			strcpy(i.job, "100-1");
		if (k == 4)
			i.size = SIZE + 1;
		if (k == 5) { /* a stream of another size */
			close(in);
			in = memfd_create("s", MFD_CLOEXEC);
			assert_true(tp_stream_send_extents_fn(in, SIZE - 1, NULL, 0, mem_read, f->b,
							      NULL, NULL, &e));
			assert_int_equal(lseek(in, 0, SEEK_SET), 0);
		}
		assert_false(repl_replica_update(f->path, in, &i, NULL, &e));
		expect(&e, code[k], why[k]);
		assert_image(f, f->a);
		b = slurp(side(f, ".repl"), &len);
		assert_int_equal(len, mlen);
		assert_memory_equal(b, meta, len);
		free(b);
		assert_no_side_files(f);
	}
	close(in);
	free(meta);
}

/* A damaged or cut stream: the replica stays at the previous generation. */
static void test_damaged_stream(void **state)
{
	struct fx *f = *state;
	struct repl_replica_info got;
	struct err *e = NULL;
	size_t len;
	uint8_t *s;
	int in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));

	create_a(f);
	s = malloc(8 * MiB);
	assert_non_null(s);
	len = (size_t)read(in, s, 8 * MiB);
	close(in);
	for (int k = 0; k < 3; k++) {
		int fd = memfd_create("bad", MFD_CLOEXEC);
		size_t n = k == 2 ? len - 1 : len, at = k == 0 ? len / 2 : len - 20;

		if (k < 2)
			s[at] ^= 0x10;
		assert_int_equal(write(fd, s, n), (ssize_t)n);
		if (k < 2)
			s[at] ^= 0x10;
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		assert_false(update(f, 2, fd, NULL, &e));
		expect(&e, k == 2 ? ERR_CLOSED : ERR_PROTO, "stream corrupt at offset");
		close(fd);
		assert_image(f, f->a);
		assert_meta(f, 1);
		assert_no_side_files(f);
		assert_true(repl_replica_recover(f->path, &got, &e));
		assert_int_equal(got.gen, 1);
	}
	/* The intact stream still applies. */
	in = memfd_create("good", MFD_CLOEXEC);
	assert_int_equal(write(in, s, len), (ssize_t)len);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	assert_true(update(f, 2, in, NULL, &e));
	close(in);
	assert_image(f, f->b);
	free(s);
}

/* ---- recovery from hand-made states ------------------------------------- */

static void put(const char *p, const void *data, size_t len)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void put_str(const char *p, const char *text)
{
	put(p, text, strlen(text));
}

/* A delta as an update to f->b with ext_b leaves it: b's bytes in the
 * extents, holes where b has zeros and everywhere else. */
static void put_delta(struct fx *f)
{
	int fd = open(side(f, ".repl-delta"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	for (size_t i = 0; i < ARRAY_SIZE(mods_b); i++)
		if (mods_b[i].seed)
			assert_int_equal(pwrite(fd, f->b + mods_b[i].off, mods_b[i].len,
						(off_t)mods_b[i].off), (ssize_t)mods_b[i].len);
	assert_int_equal(pwrite(fd, f->b + 3 * MiB, 64 * KiB, 3 * MiB), 64 * KiB);
	close(fd);
}

static void put_commit(struct fx *f, uint64_t gen)
{
	char text[512];
	int n = snprintf(text, sizeof(text), "{\"gen\":%" PRIu64 ",\"time\":%" PRIu64 ",\"extents\":[",
			 gen, T0 + gen);

	for (size_t i = 0; i < ARRAY_SIZE(ext_b); i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "%s[%" PRIu64 ",%" PRIu64 "]",
			      i ? "," : "", ext_b[i].offset, ext_b[i].length);
	snprintf(text + n, sizeof(text) - (size_t)n, "]}\n");
	put_str(side(f, ".repl-commit"), text);
}

static void expect_recover(struct fx *f, uint64_t gen, const uint8_t *img)
{
	struct repl_replica_info got;
	struct err *e = NULL;

	if (!repl_replica_recover(f->path, &got, &e))
		fail_msg("recover: %s", e->msg);
	assert_int_equal(got.gen, gen);
	assert_image(f, img);
	assert_meta(f, gen);
	assert_no_side_files(f);
}

static void test_recover_states(void **state)
{
	struct fx *f = *state;
	struct repl_replica_info got;
	struct err *e = NULL;
	char tmp[160];
	int lock;

	create_a(f);
	/* A delta that never got its commit is dropped, as are temp files of
	 * writers that died (a live one's stays). */
	put_delta(f);
	snprintf(tmp, sizeof(tmp), "%s.repl-commit.tmp.999999999", f->path);
	put(tmp, "{", 1);
	snprintf(tmp, sizeof(tmp), "%s.repl.tmp.1", f->path);
	put(tmp, "{", 1);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_true(exists(tmp));
	unlink(tmp);
	expect_recover(f, 1, f->a);
	/* Unless an update still holds it: then it is in use. */
	put_delta(f);
	lock = open(side(f, ".repl-delta"), O_RDONLY | O_CLOEXEC);
	assert_true(lock >= 0 && flock(lock, LOCK_EX) == 0);
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_CONFLICT, ".repl-delta' is in use");
	assert_true(exists(side(f, ".repl-delta")));
	close(lock);
	expect_recover(f, 1, f->a);

	/* A commit for the next generation is applied, holes and all, and
	 * again if the first application was cut short. */
	put_delta(f);
	put_commit(f, 2);
	expect_recover(f, 2, f->b);
	assert_hole(f, 512 * KiB, 256 * KiB);
	put_delta(f);
	put_commit(f, 3);
	put_str(side(f, ".repl"), "{\"job\":\"100-0\",\"gen\":2,\"time\":1700000002,\"size\":4199424,\"source\":\"node1\"}\n");
	put(f->path, f->a, SIZE); /* as if killed mid-way: any mix */
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 3);
	assert_int_equal(got.time, T0 + 3);
	assert_int_equal(differs(f, f->b), -1);

	/* An application that fails (writes beyond 1 MiB refused) is an
	 * error that leaves the commit, and the next recovery applies it. */
	put(f->path, f->a, SIZE);
	put_str(side(f, ".repl"), "{\"job\":\"100-0\",\"gen\":1,\"time\":1700000001,\"size\":4199424,\"source\":\"node1\"}\n");
	put_delta(f);
	put_commit(f, 2);
	{
		struct rlimit was, lim;
		bool ok;

		signal(SIGXFSZ, SIG_IGN);
		assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
		lim = (struct rlimit){ 1 * MiB, was.rlim_max };
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		ok = repl_replica_recover(f->path, &got, &e);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
		signal(SIGXFSZ, SIG_DFL);
		assert_false(ok);
	}
	expect(&e, ERR_IO, "vm-100-disk-0.raw' at offset ");
	assert_true(exists(side(f, ".repl-commit")));
	expect_recover(f, 2, f->b);
	put_str(side(f, ".repl"), "{\"job\":\"100-0\",\"gen\":3,\"time\":1700000003,\"size\":4199424,\"source\":\"node1\"}\n");

	/* A commit of the generation held was applied already: not again. */
	put(f->path, f->a, SIZE);
	put_delta(f);
	put_commit(f, 3);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 3);
	assert_image(f, f->a);
	assert_no_side_files(f);

	/* A create that got as far as PATH.repl is finished. */
	assert_int_equal(rename(f->path, side(f, ".part")), 0);
	expect_recover(f, 3, f->a);
	/* One that did not is nobody's replica: no generation, and its
	 * part stays for the next create to replace. */
	unlink(side(f, ".repl"));
	assert_int_equal(rename(f->path, side(f, ".part")), 0);
	put_delta(f);
	put_commit(f, 2);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 0);
	assert_false(exists(side(f, ".repl-delta")) || exists(side(f, ".repl-commit")));
	assert_true(exists(side(f, ".part")));
	create_a(f);
	assert_false(exists(side(f, ".part")));
	assert_image(f, f->a);
}

/* What recovery refuses: each an error naming the file, nothing applied. */
/* A migration to the replica's node: the old source's disk is adopted as
 * the replica (no data moves; a wrong size or an existing replica is
 * refused and nothing is written), and the replica the guest now runs on
 * is released - an interrupted committed update is applied first, then
 * only the side files go. */
static void test_adopt_release(void **state)
{
	struct fx *f = *state;
	struct repl_replica_info i = gen_info(1), got;
	struct err *e = NULL;

	put(f->path, f->a, SIZE);
	i.size = SIZE + 1;
	assert_false(repl_replica_adopt(f->path, &i, &e));
	expect(&e, ERR_STATE, "bytes");
	assert_false(exists(side(f, ".repl")));
	i = gen_info(1);
	assert_true(repl_replica_adopt(f->path, &i, &e));
	assert_meta(f, 1);
	assert_image(f, f->a);
	assert_false(repl_replica_adopt(f->path, &i, &e));
	expect(&e, ERR_CONFLICT, "a replica exists");
	/* An update to generation 2 that was committed, not yet applied. */
	put_delta(f);
	put_commit(f, 2);
	if (!repl_replica_release(f->path, &e))
		fail_msg("release: %s", e->msg);
	assert_image(f, f->b);
	assert_false(exists(side(f, ".repl")));
	assert_no_side_files(f);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 0);
	assert_image(f, f->b); /* a plain volume now: recovery leaves it be */
}

static void test_recover_refusals(void **state)
{
	static const struct { const char *text, *why; } bad[] = {
		{ "", "at byte 0: expected '{'" },
		{ "{", "at byte 1: expected a string" },
		{ "{}", "missing key" },
		{ "[]", "expected '{'" },
		{ "{\"gen\":2,\"time\":1}", "missing key" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[],\"x\":1}", "at byte 31: unknown key" },
		{ "{\"gen\":2,\"gen\":2,\"time\":1,\"extents\":[]}", "at byte 9: duplicate key" },
		{ "{\"gen\":02,\"time\":1,\"extents\":[]}", "leading zero" },
		{ "{\"gen\":-2,\"time\":1,\"extents\":[]}", "expected a number" },
		{ "{\"gen\":2.0,\"time\":1,\"extents\":[]}", "not an integer" },
		{ "{\"gen\":2e0,\"time\":1,\"extents\":[]}", "not an integer" },
		{ "{\"gen\":\"2\",\"time\":1,\"extents\":[]}", "expected a number" },
		{ "{\"gen\":18446744073709551616,\"time\":1,\"extents\":[]}", "out of range" },
		{ "{\"gen\":2,\"time\":9223372036854775808,\"extents\":[]}", "out of range" },
		{ "{\"gen\":2,\"time\":- 1,\"extents\":[]}", "expected a number" },
		{ "{\"gen\":0,\"time\":1,\"extents\":[]}", "generation 0" },
		{ "{\"gen\":2,\"time\":1,\"extents\":{}}", "expected '['" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[1]]}", "expected ','" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[1,2,3]]}", "expected ']'" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[0,0]]}", "extent empty" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[0,8],[4,8]]}", "out of order" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[8,8],[0,4]]}", "out of order" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[4199420,5]]}", "beyond the volume" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[1,18446744073709551615]]}", "beyond the volume" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[[0,8],]}", "expected '['" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[]}x", "trailing bytes" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[]}\n\0{", "trailing bytes" },
		{ "{\"g\\u0065n\":2,\"time\":1,\"extents\":[]}", "unsupported character" },
		{ "{\"gen\":2,\"time\":1,\"extents\":[]", "expected ',' or '}'" },
		{ "{\"gen\":4,\"time\":1,\"extents\":[]}", "is an update to generation 4, but '" },
	};
	struct fx *f = *state;
	struct repl_replica_info got;
	struct err *e = NULL;
	char want[256];

	create_a(f);
	for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
		size_t len = strlen(bad[k].text);

		if (k == ARRAY_SIZE(bad) - 4)
			len += 3; /* the NUL and what follows it */
		put_delta(f);
		put(side(f, ".repl-commit"), bad[k].text, len);
		assert_false(repl_replica_recover(f->path, &got, &e));
		snprintf(want, sizeof(want), "'%s'", side(f, ".repl-commit"));
		if (!strstr(e->msg, want))
			fail_msg("case %zu: '%s' does not name %s", k, e->msg, want);
		expect(&e, k == ARRAY_SIZE(bad) - 1 ? ERR_STATE : ERR_PROTO, bad[k].why);
		assert_image(f, f->a);
		assert_meta(f, 1);
		assert_true(exists(side(f, ".repl-commit")));
	}
	/* JSON's freedom in what we write: spaces, key order. */
	put_str(side(f, ".repl-commit"), " {\"extents\" : [ [ 0 , 4096 ] ] ,\"time\":-5, \"gen\":1}\n\n");
	expect_recover(f, 1, f->a);

	/* A commit without its delta, a delta of the wrong size. */
	put_commit(f, 2);
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_STATE, ".repl-commit' has no delta '");
	put_delta(f);
	assert_int_equal(truncate(side(f, ".repl-delta"), SIZE - 1), 0);
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_STATE, ".repl-delta' has 4199423 bytes, the replica 4199424");
	assert_image(f, f->a);
	unlink(side(f, ".repl-commit"));
	/* A damaged PATH.repl, a volume of another size or none. */
	put_str(side(f, ".repl"), "{\"job\":\"100-0\",\"gen\":1}");
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_PROTO, ".repl' at byte 23: missing key");
	put_str(side(f, ".repl"), "{\"job\":\"100-0\",\"gen\":1,\"time\":1,\"size\":4199425,\"source\":\"\"}");
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_STATE, "vm-100-disk-0.raw' has 4199424 bytes, the replica 4199425");
	unlink(f->path);
	assert_false(repl_replica_recover(f->path, &got, &e));
	expect(&e, ERR_IO, "vm-100-disk-0.raw': No such file");
	assert_true(repl_replica_remove(f->path, &e));
	assert_no_side_files(f);
	assert_false(exists(side(f, ".repl")));
}

/* ---- the crash test ----------------------------------------------------- */

static uint64_t rnd_state;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The crash test's children come from a zygote forked before the tests
 * allocate: forking the test process itself, big with ASan's quarantine,
 * and tearing such a child down take milliseconds each. */
static int zygote = -1;

struct zreq {
	int64_t delay_us;       /* kill the child after it; < 0: never */
	bool update;            /* to generation 2 from `stream`, else recovery */
	char path[96], stream[96];
};

static void zygote_main(int sock)
{
	struct zreq q;

	while (read(sock, &q, sizeof(q)) == (ssize_t)sizeof(q)) {
		struct timespec ts = { q.delay_us / 1000000, q.delay_us % 1000000 * 1000 };
		struct repl_replica_info i = gen_info(2), got;
		int status = -1, in;
		pid_t pid = fork();

		if (pid == 0) {
			in = open(q.stream, O_RDONLY | O_CLOEXEC);
			_exit(q.update ? in < 0 || !repl_replica_update(q.path, in, &i, NULL, NULL)
				       : !repl_replica_recover(q.path, &got, NULL));
		}
		if (pid > 0 && q.delay_us >= 0) {
			nanosleep(&ts, NULL);
			kill(pid, SIGKILL);
		}
		if (pid > 0 && waitpid(pid, &status, 0) != pid)
			status = -1;
		if (write(sock, &status, sizeof(status)) != (ssize_t)sizeof(status))
			break;
	}
	_exit(0);
}

/* Runs the update or a recovery in a child killed after delay_us. */
static void run_killed(struct fx *f, int64_t delay_us, bool update)
{
	struct zreq q = { .delay_us = delay_us, .update = update };
	int status;

	snprintf(q.path, sizeof(q.path), "%s", f->path);
	snprintf(q.stream, sizeof(q.stream), "%s/stream", f->dir);
	assert_int_equal(write(zygote, &q, sizeof(q)), sizeof(q));
	assert_int_equal(read(zygote, &status, sizeof(status)), sizeof(status));
	if (status == -1 || (WIFEXITED(status) && WEXITSTATUS(status)))
		fail_msg("the %s failed on its own (seed %#" PRIx64 ")", update ? "update" : "recovery",
			 rnd_state);
}

/* iters kills; the old generation is put back from its volume's bytes
 * (a raw image, or a qcow2 file) after each new one. */
static void crash_consistency(struct fx *f, unsigned iters, bool need_mixed)
{
	size_t mlen, vlen;
	uint8_t *meta, *vol;
	int64_t slowest = 0, lo = -1, hi = -1;
	unsigned old = 0, young = 0, mixed = 0, committed = 0;
	char stream[128];
	int in;

	snprintf(stream, sizeof(stream), "%s/stream", f->dir);
	in = open(stream, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(in >= 0);
	assert_true(tp_stream_send_extents_fn(in, SIZE, ext_b, ARRAY_SIZE(ext_b), mem_read, f->b,
					      NULL, NULL, NULL));
	close(in);
	rnd_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	create_a(f);
	meta = slurp(side(f, ".repl"), &mlen);
	vol = slurp(f->path, &vlen);
	/* How long an update takes in a child, from the fork to its exit. */
	for (int k = 0; k < 3; k++) {
		int64_t t0 = now_us();

		run_killed(f, -1, true);
		slowest = now_us() - t0 > slowest ? now_us() - t0 : slowest;
		assert_image(f, f->b);
		put(f->path, vol, vlen);
		put(side(f, ".repl"), meta, mlen);
	}
	for (unsigned it = 0; it < iters; it++) {
		struct repl_replica_info got;
		struct err *e = NULL;
		/* Anywhere in the update; every other time near the instants
		 * that have left a commit so far (it and the copy are short). */
		int64_t delay = it % 2 && lo >= 0 ? lo - 2000 + (int64_t)(rnd() % (uint64_t)(hi - lo + 4001))
						  : (int64_t)(rnd() % (uint64_t)(slowest + 1));

		delay = delay < 0 || it == 0 ? 0 : delay; /* the first: before anything */
		run_killed(f, delay, true);
		if (exists(side(f, ".repl-commit"))) {
			lo = lo < 0 || delay < lo ? delay : lo;
			hi = delay > hi ? delay : hi;
			committed++;
			mixed += differs(f, f->a) >= 0 && differs(f, f->b) >= 0;
			/* Every other time, recovery is killed as well. */
			if (committed % 2)
				run_killed(f, (int64_t)(rnd() % (uint64_t)(slowest / 2 + 1)), false);
		}
		if (!repl_replica_recover(f->path, &got, &e))
			fail_msg("iteration %u (seed %#" PRIx64 "): recover: %s", it, rnd_state, e->msg);
		if (got.gen == 1 && differs(f, f->a) < 0) {
			old++;
		} else if (got.gen == 2 && differs(f, f->b) < 0) {
			young++;
		} else {
			fail_msg("iteration %u (seed %#" PRIx64 "): generation %" PRIu64 ", differs from the old image at %" PRId64 ", the new at %" PRId64,
				 it, rnd_state, got.gen, differs(f, f->a), differs(f, f->b));
		}
		assert_meta(f, got.gen);
		assert_no_side_files(f);
		if (got.gen == 2) {
			put(f->path, vol, vlen);
			put(side(f, ".repl"), meta, mlen);
		}
	}
	print_message("      %u kills: %u old, %u new; %u left a commit (at %" PRId64 "-%" PRId64 " us of %" PRId64 "), %u a mixed volume\n",
		      iters, old, young, committed, lo, hi, slowest, mixed);
	/* The kills hit both sides of the commit and the copy itself. */
	assert_true(old > 0 && young > 0 && committed > 0 && (mixed > 0 || !need_mixed));
	free(meta);
	free(vol);
}

static void test_crash_consistency(void **state)
{
	crash_consistency(*state, 200, true);
}

/* ---- qcow2 volumes ------------------------------------------------------ */

static void test_qcow2_volume(void **state)
{
	struct fx *f = *state;
	char raw[128], bad[128], cmd[512];
	uint8_t buf[8192], hdr[4];
	struct repl_vol *v, *w;
	struct err *e = NULL;
	uint64_t size;
	int fd;

	if (!f)
		skip();
	/* Sizes: raw from the file, qcow2 from its header (not the file). */
	snprintf(raw, sizeof(raw), "%s/disk.raw", f->dir);
	put(raw, f->a, SIZE);
	fd = open(raw, O_RDONLY | O_CLOEXEC);
	assert_true(repl_vol_size(raw, fd, false, &size, &e));
	assert_int_equal(size, SIZE);
	/* A raw disk named .qcow2, or read as one, is refused. */
	assert_false(repl_vol_size(raw, fd, true, &size, &e));
	expect(&e, ERR_STATE, "disk.raw' should be a qcow2 image (by its name) but is not one");
	close(fd);
	snprintf(bad, sizeof(bad), "%s/bad.qcow2", f->dir);
	put(bad, f->a, SIZE);
	v = repl_vol_open(bad, false, &e);
	assert_null(v);
	expect(&e, ERR_STATE, "bad.qcow2' should be a qcow2 image (by its name) but is not one");

	assert_true(repl_vol_create_qcow2(f->path, SIZE, &e));
	assert_false(repl_vol_create_qcow2(f->path, SIZE, &e));
	expect(&e, ERR_CONFLICT, "exists");
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_int_equal(pread(fd, hdr, 4, 0), 4);
	assert_memory_equal(hdr, "QFI\xfb", 4);
	assert_true(repl_vol_size(f->path, fd, true, &size, &e));
	assert_int_equal(size, SIZE);
	close(fd);

	/* Writes, zeros and reads through qemu-nbd, past the end refused. */
	v = repl_vol_open(f->path, true, &e);
	if (!v)
		fail_msg("open: %s", e->msg);
	assert_int_equal(repl_vol_get_size(v), SIZE);
	assert_true(repl_vol_write(v, f->a, SIZE, 0, &e));
	assert_true(repl_vol_zero(v, 4096, 8192, &e));
	assert_false(repl_vol_write(v, f->a, 2, SIZE - 1, &e));
	expect(&e, ERR_IO, "past its end");
	/* A second writer is refused (QEMU's image lock), after its retries. */
	w = repl_vol_open(f->path, true, &e);
	assert_null(w);
	expect(&e, ERR_IO, "open (qemu-nbd)");
	assert_true(repl_vol_close(v, &e));
	v = repl_vol_open(f->path, false, &e);
	assert_non_null(v);
	assert_true(repl_vol_read(v, buf, sizeof(buf), 4096, &e));
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);
	assert_true(repl_vol_read(v, buf, 4096, SIZE - 4096, &e));
	assert_memory_equal(buf, f->a + SIZE - 4096, 4096);
	assert_false(repl_vol_read(v, buf, 2, SIZE - 1, &e));
	expect(&e, ERR_IO, "past its end");
	assert_true(repl_vol_close(v, &e));
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", f->path);
	assert_int_equal(system(cmd), 0);
	unlink(f->path);
}

static void test_qcow2_round_trips(void **state)
{
	static const char meta1[] =
		"{\"job\":\"100-0\",\"gen\":1,\"time\":1700000001,\"size\":4199424,\"source\":\"node1\"}\n";
	struct fx *f = *state;
	struct repl_replica_info got, i = gen_info(1);
	struct err *e = NULL;
	char cmd[512];
	uint8_t hdr[4];
	int in, fd;

	if (!f)
		skip();
	create_a(f);
	assert_image(f, f->a);
	assert_meta(f, 1);
	assert_no_side_files(f);
	fd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_int_equal(pread(fd, hdr, 4, 0), 4);
	assert_memory_equal(hdr, "QFI\xfb", 4); /* a qcow2 image, by its name */
	close(fd);

	in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));
	if (!update(f, 2, in, NULL, &e))
		fail_msg("update: %s", e->msg);
	close(in);
	assert_image(f, f->b);
	assert_meta(f, 2);
	assert_no_side_files(f);
	in = stream_of(f->c, ext_c, ARRAY_SIZE(ext_c));
	assert_true(update(f, 3, in, NULL, &e));
	close(in);
	assert_image(f, f->c);
	assert_meta(f, 3);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 3);
	assert_int_equal(got.size, SIZE);
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", f->path);
	assert_int_equal(system(cmd), 0);

	/* The agent's way: applied through an unsynced qemu-nbd, answered,
	 * then settled (the image fsynced, the side files gone) ... */
	{
		struct repl_replica_pending pend = { .dfd = -1 };
		struct repl_replica_info i4 = gen_info(4), i5 = gen_info(5);

		in = stream_of(f->b, ext_b, ARRAY_SIZE(ext_b));
		assert_true(repl_replica_update_durable(f->path, in, &i4, &pend, NULL, &e));
		close(in);
		assert_overlaid(f, f->c, f->b, ext_b, ARRAY_SIZE(ext_b));
		assert_true(repl_replica_settle(&pend, &e));
		assert_meta(f, 4);
		assert_no_side_files(f);
		assert_int_equal(system(cmd), 0);
		/* ... or dying before the settle: recovery applies it again
		 * (c where b went: c again). */
		in = stream_of(f->c, ext_b, ARRAY_SIZE(ext_b));
		assert_true(repl_replica_update_durable(f->path, in, &i5, &pend, NULL, &e));
		close(in);
		repl_replica_pending_drop(&pend);
		assert_true(repl_replica_recover(f->path, &got, &e));
		assert_int_equal(got.gen, 5);
		assert_image(f, f->c);
		assert_meta(f, 5);
		assert_no_side_files(f);
		assert_int_equal(system(cmd), 0);
	}

	/* A committed update found by recovery is applied through qemu-nbd:
	 * generation 2 over 3 gives b where the update wrote, c elsewhere. */
	put(side(f, ".repl"), meta1, strlen(meta1));
	put_delta(f);
	put_commit(f, 2);
	assert_true(repl_replica_recover(f->path, &got, &e));
	assert_int_equal(got.gen, 2);
	assert_meta(f, 2);
	assert_no_side_files(f);
	assert_overlaid(f, f->c, f->b, ext_b, ARRAY_SIZE(ext_b));

	/* Adopt checks the virtual size, not the file's. */
	assert_true(repl_replica_release(f->path, &e));
	i.size = SIZE + 1;
	assert_false(repl_replica_adopt(f->path, &i, &e));
	expect(&e, ERR_STATE, "has 4199424 bytes, the replica 4199425");
	i.size = SIZE;
	assert_true(repl_replica_adopt(f->path, &i, &e));
	assert_meta(f, 1);
	assert_true(repl_replica_remove(f->path, &e));
	assert_false(exists(f->path));
}

static void test_qcow2_crash_consistency(void **state)
{
	if (!*state)
		skip();
	crash_consistency(*state, 30, false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_update_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_states, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_refusals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_consistency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qcow2_volume, setup_qcow2, teardown),
		cmocka_unit_test_setup_teardown(test_qcow2_round_trips, setup_qcow2, teardown),
		cmocka_unit_test_setup_teardown(test_qcow2_crash_consistency, setup_qcow2, teardown),
	};
	int sv[2], rc;
	pid_t z;

	log_set_level(LOG_ERROR);
	repl_replica_set_lock_wait(500); /* the refusals below need not take 30 s */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || (z = fork()) < 0)
		return 1;
	if (z == 0) {
		close(sv[0]);
		zygote_main(sv[1]);
	}
	close(sv[1]);
	zygote = sv[0];
	rc = cmocka_run_group_tests_name("replica", tests, NULL, NULL);
	close(zygote);
	waitpid(z, NULL, 0);
	return rc;
}
