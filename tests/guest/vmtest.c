/*
 * vmtest: PID 1 of the vmmigrate test guest.
 *
 * Dirties memory and/or writes a virtio disk at a chosen rate, checks every
 * page and block against what it last wrote there, and reports on /dev/ttyS0
 * in lines a test can parse.  Commands arrive on /dev/ttyS1.  The kernel
 * command line keys and the line formats are a contract with the test
 * launcher: see README.md before changing any of them.
 *
 * Threads: main sets up, then prints the heartbeat; one writer thread per
 * workload; one thread reads commands.  Each workload has a mutex the writer
 * holds for a few pages or one block at a time, so a verification run from
 * the command thread sees a consistent picture of what should be where.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PG_BYTES         4096u
#define PG_WORDS         (PG_BYTES / 8)
#define BLK_BYTES        4096u
#define BLK_WORDS        (BLK_BYTES / 8)
#define CHUNK_PAGES      8              /* pages stamped per lock hold and per throttle step */
#define VERIFY_BLOCKS    64             /* blocks per O_DIRECT read when verifying */
#define BEAT_NS          500000000LL    /* heartbeat period: twice the promised rate */
#define DETAILS_PER_BEAT 16             /* FAIL detail lines per beat; every beat has the total */
#define DISK_WAIT_MS     10000          /* the disk node appears shortly after insmod */
#define MEM_MAGIC        0x564dULL      /* "VM", top 16 bits of every page stamp */
#define DISK_MAGIC       0x564d54424c4b3031ULL /* "VMTBLK01", word 0 of every block */

#define NS_PER_S 1000000000LL
#define MIB      (1024ull * 1024)

enum mode { MODE_IDLE, MODE_MEM, MODE_DISK, MODE_MEM_DISK, MODE_PROBE, MODE_DISKSCAN, MODE_MAX };
static const char *const mode_names[] = { "idle", "mem", "disk", "mem+disk", "probe", "diskscan" };
_Static_assert(sizeof(mode_names) / sizeof(mode_names[0]) == MODE_MAX, "mode_names");

/* How much of each page the mem workload fills (how well RAM compresses):
 * sparse = the three stamp words only, half = the first half of the page
 * with pseudo-random words, full = all of it. */
enum fill { FILL_SPARSE, FILL_HALF, FILL_FULL, FILL_MAX };
static const char *const fill_names[] = { "sparse", "half", "full" };
_Static_assert(sizeof(fill_names) / sizeof(fill_names[0]) == FILL_MAX, "fill_names");

struct config {
	enum mode mode;
	unsigned long mib;
	unsigned long rate;         /* MiB/s per workload, 0 = unthrottled */
	enum fill fill;
	char disk[64];
	bool corrupt;               /* selftest: damage one page and one block on purpose */
};

/* Paces a writer to a byte rate, sleeping between small steps. */
struct throttle {
	uint64_t rate;              /* bytes/s, 0 = unthrottled */
	int64_t t0;
	uint64_t bytes;             /* written since t0 */
};

struct mem {
	pthread_mutex_t lock;
	uint64_t *base;
	size_t npages;
	uint32_t pass;
	size_t next;                /* pages [0,next) carry pass's stamp, the rest pass-1's */
	unsigned long rate;         /* MiB/s, 0 = unthrottled */
	enum fill fill;
	bool corrupt;
	atomic_uint stat_pass;      /* copies for the heartbeat, which must never wait */
	atomic_ulong stat_pages;
};

struct disk {
	pthread_mutex_t lock;
	int fd;
	size_t nblocks;
	size_t stride;              /* coprime to nblocks: scatters writes, still covers all */
	uint32_t *gen;              /* generation last written to each block, 0 = never */
	uint32_t pass;
	size_t next;
	uint64_t *buf;              /* one block, aligned for O_DIRECT */
	uint64_t *vbuf;             /* VERIFY_BLOCKS blocks, aligned for O_DIRECT */
	unsigned long rate;
	bool corrupt;
	atomic_uint stat_pass;
	atomic_ulong stat_blocks;
};

enum { TO_CON = 1, TO_CMD = 2, TO_BOTH = 3 };

static int con_fd = -1, cmd_fd = -1, reply_fd = -1;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_ulong fails;          /* mismatches and errors since boot */
static atomic_ulong beat;           /* last heartbeat number printed */
static atomic_int details_left = DETAILS_PER_BEAT;
static struct mem *mem;
static struct disk *disk;

static int64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
	struct timespec ts = { .tv_sec = t / NS_PER_S, .tv_nsec = t % NS_PER_S };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;     /* full (reply_fd) or broken: nowhere left to complain to */
		p += n;
		len -= (size_t)n;
	}
}

/* One whole line per write(2), never interleaved between threads. */
static void __attribute__((format(printf, 2, 3))) say(int where, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	if ((size_t)len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	pthread_mutex_lock(&out_lock);
	if ((where & TO_CON) && con_fd >= 0)
		write_all(con_fd, line, (size_t)len);
	if ((where & TO_CMD) && reply_fd >= 0)
		write_all(reply_fd, line, (size_t)len);
	pthread_mutex_unlock(&out_lock);
}

/*
 * Count a failure; print its detail unless this beat's quota is used up, so a
 * wholesale corruption cannot drown the console (every beat carries the total).
 */
#define fail(...) do { \
		atomic_fetch_add(&fails, 1); \
		if (atomic_fetch_sub(&details_left, 1) > 0) \
			say(TO_CON, "VMTEST FAIL " __VA_ARGS__); \
	} while (0)

static void throttle_init(struct throttle *t, unsigned long mib_per_s)
{
	t->rate = mib_per_s * MIB;
	t->t0 = now_ns(CLOCK_MONOTONIC);
	t->bytes = 0;
}

static void throttle(struct throttle *t, size_t bytes)
{
	int64_t now, due;

	if (t->rate == 0)
		return;
	t->bytes += bytes;
	due = t->t0 + (int64_t)((unsigned __int128)t->bytes * NS_PER_S / t->rate);
	now = now_ns(CLOCK_MONOTONIC);
	if (now > due + NS_PER_S / 10) {
		/* Far behind (guest paused, verify held the lock): don't burst to catch up. */
		t->t0 = now;
		t->bytes = 0;
		return;
	}
	if (due > now)
		sleep_until(due);
}

/* --- memory workload ---------------------------------------------------- */

/* Words of each page that carry its stamp: first, middle, last. */
static const unsigned stamp_words[] = { 0, PG_WORDS / 2, PG_WORDS - 1 };
#define NSTAMP (sizeof(stamp_words) / sizeof(stamp_words[0]))

static uint64_t mem_stamp(size_t page, uint32_t pass)
{
	return MEM_MAGIC << 48 | (uint64_t)(pass & 0xffff) << 32 | (page & 0xffffffff);
}

static bool mem_check(struct mem *m, size_t page, uint32_t pass)
{
	const uint64_t *p = m->base + page * PG_WORDS;
	uint64_t want = mem_stamp(page, pass);

	for (size_t i = 0; i < NSTAMP; i++) {
		if (p[stamp_words[i]] != want) {
			fail("mem page=%zu expected=%016llx got=%016llx word=%u pass=%u", page,
			     (unsigned long long)want, (unsigned long long)p[stamp_words[i]],
			     stamp_words[i], pass);
			return false;
		}
	}
	return true;
}

/* Check the previous pass's stamp on the next page, then write this pass's. */
static void mem_step(struct mem *m)
{
	size_t page = m->next;
	uint64_t *p = m->base + page * PG_WORDS;

	if (m->pass > 0)
		mem_check(m, page, m->pass - 1);
	if (m->fill != FILL_SPARSE) {
		/* xorshift64: fresh words every pass, so nothing dedups or compresses */
		uint64_t x = mem_stamp(page, m->pass) | 1;
		size_t n = m->fill == FILL_FULL ? PG_WORDS : PG_WORDS / 2;

		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			p[i] = x;
		}
	}
	for (size_t i = 0; i < NSTAMP; i++)
		p[stamp_words[i]] = mem_stamp(page, m->pass);
	if (m->corrupt && m->pass == 0 && page == m->npages / 2)
		p[PG_WORDS - 1] ^= 1;
	if (++m->next == m->npages) {
		m->next = 0;
		m->pass++;
	}
}

static void *mem_writer(void *arg)
{
	struct mem *m = arg;
	struct throttle t;
	unsigned long pages = 0;

	throttle_init(&t, m->rate);
	for (;;) {
		pthread_mutex_lock(&m->lock);
		for (int i = 0; i < CHUNK_PAGES; i++)
			mem_step(m);
		atomic_store_explicit(&m->stat_pass, m->pass, memory_order_relaxed);
		pthread_mutex_unlock(&m->lock);
		pages += CHUNK_PAGES;
		atomic_store_explicit(&m->stat_pages, pages, memory_order_relaxed);
		throttle(&t, CHUNK_PAGES * PG_BYTES);
	}
	return NULL;
}

/* Every page stamped so far must carry the stamp of its latest pass. */
static void mem_verify(struct mem *m, size_t *checked, size_t *bad)
{
	pthread_mutex_lock(&m->lock);
	for (size_t page = 0; page < m->npages; page++) {
		bool done = page < m->next;

		if (!done && m->pass == 0)
			break;      /* not stamped yet */
		if (!mem_check(m, page, done ? m->pass : m->pass - 1))
			(*bad)++;
		(*checked)++;
	}
	pthread_mutex_unlock(&m->lock);
}

static struct mem *mem_setup(const struct config *cfg)
{
	size_t len = cfg->mib * MIB;
	struct mem *m;
	void *base;

	base = mmap(NULL, len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (base == MAP_FAILED) {
		fail("nomem mib=%lu errno=%d", cfg->mib, errno);
		return NULL;
	}
	/* Resident and pinned: the workload measures migration, not the guest's paging. */
	if (mlock(base, len) < 0)
		fail("mlock mib=%lu errno=%d", cfg->mib, errno);
	m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	pthread_mutex_init(&m->lock, NULL);
	m->base = base;
	m->npages = len / PG_BYTES;
	m->rate = cfg->rate;
	m->corrupt = cfg->corrupt;
	m->fill = cfg->fill;
	return m;
}

/* --- disk workload ------------------------------------------------------ */

/* Block content: magic, index, generation, then a sequence seeded by both. */
static void disk_fill(uint64_t *w, size_t block, uint32_t gen)
{
	uint64_t x = (uint64_t)block << 32 ^ gen;

	w[0] = DISK_MAGIC;
	w[1] = block;
	w[2] = gen;
	for (unsigned i = 3; i < BLK_WORDS; i++) {
		/* splitmix64: cheap, and every word depends on block and gen */
		uint64_t z = (x += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		w[i] = z ^ (z >> 31);
	}
}

static bool disk_check(struct disk *d, size_t block, const uint64_t *got)
{
	disk_fill(d->buf, block, d->gen[block]);
	for (unsigned i = 0; i < BLK_WORDS; i++) {
		if (got[i] != d->buf[i]) {
			fail("disk block=%zu expected=%016llx got=%016llx word=%u gen=%u", block,
			     (unsigned long long)d->buf[i], (unsigned long long)got[i], i,
			     d->gen[block]);
			return false;
		}
	}
	return true;
}

static void disk_step(struct disk *d)
{
	size_t block = d->next * d->stride % d->nblocks;
	uint32_t gen = d->pass + 1;

	disk_fill(d->buf, block, gen);
	if (d->corrupt && d->pass == 0 && d->next == 0)
		d->buf[BLK_WORDS / 2] ^= 1;
	if (pwrite(d->fd, d->buf, BLK_BYTES, (off_t)block * BLK_BYTES) == BLK_BYTES) {
		d->gen[block] = gen;
	} else {
		fail("diskio block=%zu op=write errno=%d", block, errno);
		d->gen[block] = 0;  /* content unknown now; reported once, not at every verify */
	}
	if (++d->next == d->nblocks) {
		d->next = 0;
		d->pass++;
	}
}

static void *disk_writer(void *arg)
{
	struct disk *d = arg;
	struct throttle t;
	unsigned long blocks = 0;

	throttle_init(&t, d->rate);
	for (;;) {
		pthread_mutex_lock(&d->lock);
		disk_step(d);
		atomic_store_explicit(&d->stat_pass, d->pass, memory_order_relaxed);
		pthread_mutex_unlock(&d->lock);
		atomic_store_explicit(&d->stat_blocks, ++blocks, memory_order_relaxed);
		throttle(&t, BLK_BYTES);
	}
	return NULL;
}

/* Read back every block written so far and compare it with its last generation. */
static void disk_verify(struct disk *d, size_t *checked, size_t *bad)
{
	pthread_mutex_lock(&d->lock);
	for (size_t first = 0; first < d->nblocks; first += VERIFY_BLOCKS) {
		size_t n = d->nblocks - first < VERIFY_BLOCKS ? d->nblocks - first : VERIFY_BLOCKS;
		ssize_t len = pread(d->fd, d->vbuf, n * BLK_BYTES, (off_t)first * BLK_BYTES);

		if (len != (ssize_t)(n * BLK_BYTES)) {
			fail("diskio block=%zu op=read errno=%d", first, len < 0 ? errno : 0);
			(*bad)++;
			continue;
		}
		for (size_t i = 0; i < n; i++) {
			if (d->gen[first + i] == 0)
				continue;
			if (!disk_check(d, first + i, d->vbuf + i * BLK_WORDS))
				(*bad)++;
			(*checked)++;
		}
	}
	pthread_mutex_unlock(&d->lock);
}

static size_t gcd(size_t a, size_t b)
{
	while (b) {
		size_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

static struct disk *disk_setup(const struct config *cfg)
{
	uint64_t size = 0;
	struct disk *d;
	int fd = -1;

	/* devtmpfs creates the node a moment after virtio_blk probes: wait a little. */
	for (int ms = 0; ms < DISK_WAIT_MS; ms += 10) {
		fd = open(cfg->disk, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			break;
		usleep(10000);
	}
	if (fd < 0) {
		fail("nodisk disk=%s errno=%d", cfg->disk, errno);
		return NULL;
	}
	if (ioctl(fd, BLKGETSIZE64, &size) < 0 || size < BLK_BYTES) {
		fail("nodisk disk=%s size=%llu errno=%d", cfg->disk, (unsigned long long)size, errno);
		close(fd);
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		abort();
	pthread_mutex_init(&d->lock, NULL);
	d->fd = fd;
	d->nblocks = size / BLK_BYTES;
	/* A stride near the golden ratio of the disk, so successive writes land far apart. */
	d->stride = d->nblocks * 618 / 1000 | 1;
	while (gcd(d->stride, d->nblocks) != 1)
		d->stride += 2;
	d->gen = calloc(d->nblocks, sizeof(*d->gen));
	if (!d->gen || posix_memalign((void **)&d->buf, BLK_BYTES, BLK_BYTES) ||
	    posix_memalign((void **)&d->vbuf, BLK_BYTES, VERIFY_BLOCKS * BLK_BYTES))
		abort();
	d->rate = cfg->rate;
	d->corrupt = cfg->corrupt;
	return d;
}

/* --- command line, commands, heartbeat ------------------------------------ */

static bool parse_ulong(const char *s, unsigned long *out)
{
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno == 0 && *end == '\0';
}

/* Apply one vmtest.KEY=VALUE word; false if the key is unknown or the value bad. */
static bool config_set(struct config *cfg, const char *key, const char *val)
{
	unsigned long v;

	if (strcmp(key, "mode") == 0) {
		for (int m = 0; m < MODE_MAX; m++) {
			if (strcmp(val, mode_names[m]) == 0) {
				cfg->mode = m;
				return true;
			}
		}
		return false;
	}
	if (strcmp(key, "fill") == 0) {
		for (int f = 0; f < FILL_MAX; f++) {
			if (strcmp(val, fill_names[f]) == 0) {
				cfg->fill = f;
				return true;
			}
		}
		return false;
	}
	if (strcmp(key, "disk") == 0) {
		if (val[0] != '/' || strlen(val) >= sizeof(cfg->disk))
			return false;
		strcpy(cfg->disk, val);
		return true;
	}
	if (!parse_ulong(val, &v))
		return false;
	if (strcmp(key, "mib") == 0 && v >= 1 && v <= (SIZE_MAX >> 20)) /* 0: no workload, a typo */
		cfg->mib = v;
	else if (strcmp(key, "rate") == 0)
		cfg->rate = v;
	else if (strcmp(key, "selftest_corrupt") == 0 && v <= 1)
		cfg->corrupt = v;
	else
		return false;
	return true;
}

/* Words of /proc/cmdline that are not vmtest.* belong to the kernel: skip them. */
static void config_load(struct config *cfg)
{
	char buf[4096], *save, *word;
	ssize_t n;
	int fd;

	fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		fail("badarg cmdline errno=%d", errno);
		return;
	}
	buf[n] = '\0';
	for (word = strtok_r(buf, " \t\n", &save); word; word = strtok_r(NULL, " \t\n", &save)) {
		char *eq;

		if (strncmp(word, "vmtest.", 7) != 0)
			continue;
		eq = strchr(word, '=');
		if (eq) {
			*eq = '\0';
			if (config_set(cfg, word + 7, eq + 1))
				continue;
			*eq = '=';
		}
		fail("badarg %s", word);
	}
}

static void cmd_verify(void)
{
	size_t pages = 0, blocks = 0, bad = 0;
	unsigned long total;

	if (mem)
		mem_verify(mem, &pages, &bad);
	if (disk)
		disk_verify(disk, &blocks, &bad);
	total = atomic_load(&fails);
	if (bad == 0 && total == 0)
		say(TO_BOTH, "VMTEST VERIFY OK pages=%zu blocks=%zu", pages, blocks);
	else
		say(TO_BOTH, "VMTEST VERIFY FAIL pages=%zu blocks=%zu bad=%zu fails=%lu",
		    pages, blocks, bad, total);
}

static void command(const char *line)
{
	if (strcmp(line, "verify") == 0)
		cmd_verify();
	else if (strcmp(line, "ping") == 0)
		say(TO_BOTH, "VMTEST PONG n=%lu", atomic_load(&beat));
	else
		say(TO_BOTH, "VMTEST ERR unknown-command %.64s", line);
}

static void *cmd_reader(void *arg)
{
	char buf[64], line[80];
	size_t len = 0;

	(void)arg;
	for (;;) {
		ssize_t n = read(cmd_fd, buf, sizeof(buf));

		if (n <= 0) {
			if (n < 0 && errno != EINTR && errno != EAGAIN)
				usleep(100000);     /* hung up: don't spin, the host may come back */
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' || buf[i] == '\r') {
				line[len] = '\0';
				if (len > 0)
					command(line);
				len = 0;
			} else if (len < sizeof(line) - 1) {
				line[len++] = buf[i];
			}
		}
	}
	return NULL;
}

/* Raw mode: no echo of commands back to the host, no \n -> \r\n on output. */
static int open_tty(const char *path, int flags)
{
	struct termios tio;
	int fd = open(path, flags | O_NOCTTY | O_CLOEXEC);

	if (fd >= 0 && tcgetattr(fd, &tio) == 0) {
		cfmakeraw(&tio);
		tio.c_cc[VMIN] = 1;
		tio.c_cc[VTIME] = 0;
		tcsetattr(fd, TCSANOW, &tio);
	}
	return fd;
}

static void start(void *(*fn)(void *), void *arg)
{
	pthread_t t;

	if (pthread_create(&t, NULL, fn, arg) != 0)
		fail("thread errno=%d", errno);
}

/* Never returns: exiting PID 1 would panic the guest. */
static void heartbeat(void)
{
	int64_t next = now_ns(CLOCK_MONOTONIC);

	for (;;) {
		unsigned long n = atomic_fetch_add(&beat, 1) + 1;
		unsigned long total = atomic_load(&fails);

		say(TO_CON, "VMTEST %s n=%lu pass=%u dpass=%u pages=%lu blocks=%lu ms=%lld fails=%lu",
		    total ? "FAIL total" : "OK", n,
		    mem ? atomic_load(&mem->stat_pass) : 0,
		    disk ? atomic_load(&disk->stat_pass) : 0,
		    mem ? atomic_load(&mem->stat_pages) : 0,
		    disk ? atomic_load(&disk->stat_blocks) : 0,
		    (long long)(now_ns(CLOCK_BOOTTIME) / 1000000), total);
		atomic_store(&details_left, DETAILS_PER_BEAT);
		next += BEAT_NS;
		/* After a long pause (migration downtime) resume the rhythm, not a burst. */
		if (now_ns(CLOCK_MONOTONIC) > next + BEAT_NS)
			next = now_ns(CLOCK_MONOTONIC) + BEAT_NS;
		sleep_until(next);
	}
}

/* diskscan: a disk this guest did not write in this boot (a replica, a
 * copy) checked on its own: every block is all zeros (never written) or
 * whole and self-consistent - magic, its own index, and the data of the
 * generation it names - so a torn, shifted or mixed block shows. Prints
 * one line and powers off. */
static void diskscan(const struct config *cfg)
{
	struct disk *d = disk_setup(cfg);
	size_t written = 0, bad = 0, first_bad = 0;
	uint64_t maxgen = 0;

	if (!d) {
		say(TO_CON, "VMTEST SCAN FAIL nodisk");
		return;
	}
	for (size_t first = 0; first < d->nblocks; first += VERIFY_BLOCKS) {
		size_t n = d->nblocks - first < VERIFY_BLOCKS ? d->nblocks - first : VERIFY_BLOCKS;

		if (pread(d->fd, d->vbuf, n * BLK_BYTES, (off_t)first * BLK_BYTES) !=
		    (ssize_t)(n * BLK_BYTES)) {
			say(TO_CON, "VMTEST SCAN FAIL read block=%zu errno=%d", first, errno);
			return;
		}
		for (size_t i = 0; i < n; i++) {
			const uint64_t *w = d->vbuf + i * BLK_WORDS;
			bool zero = true;

			for (unsigned k = 0; k < BLK_WORDS && zero; k++)
				zero = w[k] == 0;
			if (zero)
				continue;
			written++;
			disk_fill(d->buf, first + i, (uint32_t)w[2]);
			if (w[2] == 0 || w[2] > UINT32_MAX || memcmp(w, d->buf, BLK_BYTES)) {
				if (!bad)
					first_bad = first + i;
				bad++;
				continue;
			}
			if (w[2] > maxgen)
				maxgen = w[2];
		}
	}
	if (bad)
		say(TO_CON, "VMTEST SCAN FAIL bad=%zu first=%zu written=%zu blocks=%zu", bad,
		    first_bad, written, d->nblocks);
	else
		say(TO_CON, "VMTEST SCAN OK written=%zu blocks=%zu maxgen=%llu", written,
		    d->nblocks, (unsigned long long)maxgen);
}

int main(void)
{
	struct config cfg = { .mode = MODE_IDLE, .disk = "/dev/vda" };
	bool want_mem, want_disk;
	int64_t t0;

	con_fd = open_tty("/dev/ttyS0", O_WRONLY);
	cmd_fd = open_tty("/dev/ttyS1", O_RDONLY);
	/* A host that stops reading replies must not stall the console and the beat. */
	reply_fd = open_tty("/dev/ttyS1", O_WRONLY | O_NONBLOCK);
	config_load(&cfg);
	if (cfg.mode == MODE_PROBE) {
		say(TO_CON, "VMTEST READY mode=probe");
		sync();
		reboot(RB_POWER_OFF);
		fail("poweroff errno=%d", errno);
		cfg.mode = MODE_IDLE;
	}
	if (cfg.mode == MODE_DISKSCAN) {
		diskscan(&cfg);
		sync();
		reboot(RB_POWER_OFF);
		fail("poweroff errno=%d", errno);
		cfg.mode = MODE_IDLE;
	}
	want_mem = cfg.mode == MODE_MEM || cfg.mode == MODE_MEM_DISK;
	want_disk = cfg.mode == MODE_DISK || cfg.mode == MODE_MEM_DISK;
	if (!want_mem)
		cfg.mib = 0;
	else if (cfg.mib == 0)
		cfg.mib = 64;
	t0 = now_ns(CLOCK_MONOTONIC);
	if (want_mem)
		mem = mem_setup(&cfg);
	if (want_disk)
		disk = disk_setup(&cfg);
	say(TO_CON, "VMTEST READY mode=%s mib=%lu rate=%lu pages=%zu disk=%s blocks=%zu boot_ms=%lld setup_ms=%lld",
	    mode_names[cfg.mode], cfg.mib, cfg.rate, mem ? mem->npages : 0,
	    want_disk ? cfg.disk : "none", disk ? disk->nblocks : 0,
	    (long long)(now_ns(CLOCK_BOOTTIME) / 1000000),
	    (long long)((now_ns(CLOCK_MONOTONIC) - t0) / 1000000));
	if (cmd_fd >= 0)
		start(cmd_reader, NULL);
	if (mem)
		start(mem_writer, mem);
	if (disk)
		start(disk_writer, disk);
	heartbeat();
}
