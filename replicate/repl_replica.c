/*
 * repl_replica.c - the replica on the target (contract in repl.h). Files
 * beside the volume PATH, mode 0600; small ones written atomically
 * (util_write_file: temp file, fsync, rename; then a directory fsync):
 *   PATH.part         a create's volume until PATH.repl exists
 *   PATH.repl         {"job","gen","time","size","source"}
 *   PATH.repl-delta   an update's records at their offsets (sparse)
 *   PATH.repl-commit  {"gen","time","extents":[[off,len],...]}
 * Create: PATH.part <- a full stream; PATH.repl; rename PATH.part to PATH.
 * (qcow2, by PATH's name: PATH.repl-delta <- the full stream, then a new
 * image PATH.part <- the delta's data through qemu-nbd; the delta goes.)
 * Update: recover; PATH.repl-delta <- the stream, with the ranges it
 * covered from on_range (adjacent ones merged); the commit; apply: copy
 * the extents from the delta with io_uring (its holes punched into PATH,
 * or written as zeros; qcow2: through qemu-nbd, whose qcow2 driver keeps
 * the image consistent at every instant), fsync PATH, rewrite PATH.repl, remove the commit
 * (directory fsync), then the delta. Recover decides from the disk:
 *   no PATH.repl          no replica (gen 0): a stray delta or commit goes;
 *                         PATH and PATH.part are not ours to touch
 *   no PATH, PATH.part    a create got as far as PATH.repl: rename it
 *   no commit             the update never became durable: drop the delta
 *   commit for gen + 1    apply it (again: every step is idempotent)
 *   commit for gen        applied already: remove commit, then delta
 *   anything else         an error naming the file; nothing is touched
 * Side files are read by a strict parser of exactly what we write (JSON
 * without escapes or fractions, each key once): garbage is refused before
 * anything is applied. A running update or create holds an flock on its
 * delta or part, so a recovery meanwhile is ERR_CONFLICT, not a disaster;
 * callers still serialise their operations on one replica.
 */
#include "repl.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_MAX 4096            /* PATH.repl */
#define COMMIT_MAX (256u << 20)  /* PATH.repl-commit: ten million extents */
#define SLOTS 8                  /* requests in flight while applying */
#define CHUNK (1u << 20)         /* bytes per request */

/* ---- names and small file operations ----------------------------------- */

struct rpaths {
	const char *vol;
	bool qcow2;               /* by its name: written through qemu-nbd */
	char dir[PATH_MAX], base[NAME_MAX + 1];
	char meta[PATH_MAX], delta[PATH_MAX], commit[PATH_MAX], part[PATH_MAX];
};

static bool rpaths_init(struct rpaths *p, const char *path, struct err **errp)
{
	const char *slash = strrchr(path, '/');
	int dl = !slash || slash == path ? 1 : (int)(slash - path);

	p->vol = path;
	p->qcow2 = util_volume_is_qcow2(path);
	/* Room for util_write_file's "PATH.repl-commit.tmp.<pid>". */
	if (!*path || (slash && !slash[1]) || strlen(path) + 32 > PATH_MAX ||
	    strlen(slash ? slash + 1 : path) + 32 > NAME_MAX)
		return err_set(errp, ERR_INVAL, "invalid replica path '%s': empty, a directory or too long",
			       path);
	snprintf(p->dir, sizeof(p->dir), "%.*s", dl, slash ? path : ".");
	snprintf(p->base, sizeof(p->base), "%s", slash ? slash + 1 : path);
	snprintf(p->meta, sizeof(p->meta), "%s.repl", path);
	snprintf(p->delta, sizeof(p->delta), "%s.repl-delta", path);
	snprintf(p->commit, sizeof(p->commit), "%s.repl-commit", path);
	snprintf(p->part, sizeof(p->part), "%s.part", path);
	return true;
}

static bool sync_dir(const struct rpaths *p, struct err **errp)
{
	_cleanup_close_ int fd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || fsync(fd) < 0)
		return err_set_errno(errp, errno, "cannot fsync directory '%s'", p->dir);
	return true;
}

static bool unlink_side(const char *file, struct err **errp)
{
	if (unlink(file) < 0 && errno != ENOENT)
		return err_set_errno(errp, errno, "cannot remove '%s'", file);
	return true;
}

/* rename() that never replaces a file at to (it may be a guest's disk). */
static bool rename_new(const char *from, const char *to, struct err **errp)
{
	int r = renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);

	if (r < 0 && (errno == EINVAL || errno == ENOSYS)) /* a file system without it */
		r = access(to, F_OK) == 0 ? (errno = EEXIST, -1) : rename(from, to);
	if (r < 0)
		return err_set_errno(errp, errno, "cannot rename '%s' to '%s'", from, to);
	return true;
}

/* Removes temp files of util_write_file ("PATH.repl.tmp.<pid>") whose
 * writer is dead. Best effort: a leftover is harmless. */
static void clean_tmp(const struct rpaths *p)
{
	static const char *const kinds[] = { ".repl.tmp.", ".repl-commit.tmp." };
	DIR *d = opendir(p->dir);
	size_t bl = strlen(p->base);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		const char *n = de->d_name;

		for (size_t k = 0; k < ARRAY_SIZE(kinds) && !strncmp(n, p->base, bl); k++) {
			size_t kl = strlen(kinds[k]);
			char *end;
			long pid;

			if (strncmp(n + bl, kinds[k], kl) || n[bl + kl] < '1' || n[bl + kl] > '9')
				continue;
			pid = strtol(n + bl + kl, &end, 10);
			if (!*end && (pid == getpid() || !util_pid_alive((pid_t)pid)))
				unlinkat(dirfd(d), n, 0);
		}
	}
	if (d)
		closedir(d);
}

/* fd (a regular file or block device) has size bytes for its guest
 * (qcow2: the image's virtual size), else *errp. */
static bool size_ok(int fd, const char *file, bool qcow2, uint64_t size, struct err **errp)
{
	struct stat st;
	uint64_t have;

	if (qcow2) {
		if (!repl_vol_size(file, fd, true, &have, errp))
			return false;
	} else {
		off_t n;

		if (fstat(fd, &st) < 0)
			return err_set_errno(errp, errno, "cannot stat '%s'", file);
		n = S_ISBLK(st.st_mode) ? lseek(fd, 0, SEEK_END) : S_ISREG(st.st_mode) ? st.st_size : -1;
		if (n < 0)
			return err_set(errp, ERR_STATE, "'%s' is not a regular file or block device", file);
		have = (uint64_t)n;
	}
	if (have != size)
		return err_set(errp, ERR_STATE, "'%s' has %" PRIu64 " bytes, the replica %" PRIu64,
			       file, have, size);
	return true;
}

/* Opens the volume (maybe by a symlink), which must have size bytes. */
static int open_sized(const char *file, bool qcow2, int flags, uint64_t size, struct err **errp)
{
	_cleanup_close_ int fd = open(file, flags | O_CLOEXEC);

	if (fd < 0)
		err_set_errno(errp, errno, "cannot open '%s'", file);
	return fd >= 0 && size_ok(fd, file, qcow2, size, errp) ? TAKE_FD(fd) : -1;
}

static int lock_wait_ms = 30000;

void repl_replica_set_lock_wait(int ms)
{
	lock_wait_ms = ms;
}

/* Opens a delta or part and locks it: a running update or create holds
 * its lock, and nothing else touches such a file without it. We wait for
 * the holder: an agent settling an update it answered (seconds for a big
 * one), or a killed process whose files the kernel is still closing (a
 * little later when io_uring requests were in flight).
 * -1 with *missing if there is none, else with *errp. */
static int open_locked(const char *file, int flags, bool *missing, struct err **errp)
{
	_cleanup_close_ int fd = open(file, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
	int64_t deadline = util_now_ms() + lock_wait_ms;
	int r;

	*missing = fd < 0 && errno == ENOENT && !(flags & O_CREAT);
	if (fd < 0) {
		if (!*missing)
			err_set_errno(errp, errno, "cannot open '%s'", file);
		return -1;
	}
	while ((r = flock(fd, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK &&
	       util_now_ms() < deadline)
		usleep(10000);
	if (r == 0)
		return TAKE_FD(fd);
	if (errno == EWOULDBLOCK)
		err_set(errp, ERR_CONFLICT, "'%s' is in use: the replica is being updated or created", file);
	else
		err_set_errno(errp, errno, "cannot lock '%s'", file);
	return -1;
}

/* ---- byte ranges ------------------------------------------------------- */

/* Sorted, disjoint: what a stream covered, what a commit applies. */
struct ranges {
	struct tp_extent *x;
	size_t n, cap;
	bool oom;
};

static void ranges_fini(struct ranges *r)
{
	free(r->x);
}

static bool ranges_push(struct ranges *r, uint64_t off, uint64_t len)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		struct tp_extent *x = cap > SIZE_MAX / sizeof(*x) ? NULL : realloc(r->x, cap * sizeof(*x));
		if (!x)
			return !(r->oom = true);
		r->x = x;
		r->cap = cap;
	}
	r->x[r->n++] = (struct tp_extent){ off, len };
	return true;
}

/* tp_stream on_range: the records come in order; adjacent ones merge. */
static void ranges_add(uint64_t off, uint64_t len, bool zero, void *opaque)
{
	struct ranges *r = opaque;
	struct tp_extent *last = r->n ? &r->x[r->n - 1] : NULL;

	(void)zero; /* the delta's holes tell */
	if (last && last->offset + last->length == off)
		last->length += len;
	else
		ranges_push(r, off, len);
}

/* ---- the side files: a strict reader of what we write ------------------ */

struct cur {
	const char *start, *p, *end;
	const char *why; /* the first error */
};

static bool bad(struct cur *c, const char *why)
{
	if (!c->why)
		c->why = why;
	return false;
}

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static bool peek(struct cur *c, char ch)
{
	skip_ws(c);
	if (c->p == c->end || *c->p != ch)
		return false;
	c->p++;
	return true;
}

static bool expect(struct cur *c, char ch, const char *why)
{
	return peek(c, ch) || bad(c, why);
}

/* A decimal integer: *v in [0, UINT64_MAX], or with sign in int64_t. */
static bool get_num(struct cur *c, uint64_t *v, bool sign)
{
	bool neg = sign && peek(c, '-');
	const char *d;
	uint64_t n = 0;

	if (!neg)
		skip_ws(c);
	for (d = c->p; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
		if (n > (UINT64_MAX - (unsigned)(*c->p - '0')) / 10)
			return bad(c, "number out of range");
		n = n * 10 + (unsigned)(*c->p - '0');
	}
	if (c->p == d)
		return bad(c, "expected a number");
	if (*d == '0' && c->p - d > 1)
		return bad(c, "leading zero");
	if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
		return bad(c, "not an integer");
	if (sign && n > (uint64_t)INT64_MAX + neg)
		return bad(c, "number out of range");
	*v = neg ? 0 - n : n;
	return true;
}

/* A string of printable ASCII without '"' and '\\' (no escapes). */
static bool get_str(struct cur *c, char *out, size_t cap)
{
	size_t n = 0;

	if (!expect(c, '"', "expected a string"))
		return false;
	for (; c->p < c->end && *c->p != '"'; c->p++) {
		if (*c->p < 0x20 || *c->p > 0x7e || *c->p == '\\')
			return bad(c, "unsupported character in a string");
		if (n + 1 >= cap)
			return bad(c, "string too long");
		out[n++] = *c->p;
	}
	out[n] = '\0';
	return expect(c, '"', "unterminated string");
}

/* [[off,len],...]: sorted, disjoint, non-empty, inside size. */
static bool get_extents(struct cur *c, uint64_t size, struct ranges *r)
{
	uint64_t next = 0, off, len;

	if (!expect(c, '[', "expected '['"))
		return false;
	if (peek(c, ']'))
		return true;
	do {
		if (!expect(c, '[', "expected '['") || !get_num(c, &off, false) ||
		    !expect(c, ',', "expected ','") || !get_num(c, &len, false) ||
		    !expect(c, ']', "expected ']'"))
			return false;
		if (!len || off < next || off > size || len > size - off)
			return bad(c, "extent empty, out of order or beyond the volume");
		if (!ranges_push(r, off, len))
			return bad(c, "out of memory");
		next = off + len;
	} while (peek(c, ','));
	return expect(c, ']', "expected ',' or ']'");
}

enum ftype { F_U64, F_I64, F_STR, F_EXTENTS };

struct field {
	const char *key;
	enum ftype type;
	void *dst;
	uint64_t arg; /* F_STR: the size of dst; F_EXTENTS: the volume's size */
};

/* {"key":value,...}: each of the n fields once, nothing else, then only
 * white space. */
static bool get_object(struct cur *c, const struct field *f, unsigned n)
{
	unsigned seen = 0;

	if (!expect(c, '{', "expected '{'"))
		return false;
	if (!peek(c, '}')) {
		do {
			const char *at = (skip_ws(c), c->p);
			char key[16];
			unsigned k = 0;
			bool ok;

			if (!get_str(c, key, sizeof(key)))
				return false;
			while (k < n && strcmp(key, f[k].key))
				k++;
			if (k == n || (seen & (1u << k))) {
				c->p = at;
				return bad(c, k == n ? "unknown key" : "duplicate key");
			}
			seen |= 1u << k;
			if (!expect(c, ':', "expected ':'"))
				return false;
			switch (f[k].type) {
			case F_U64: ok = get_num(c, f[k].dst, false); break;
			case F_I64: ok = get_num(c, f[k].dst, true); break;
			case F_STR: ok = get_str(c, f[k].dst, (size_t)f[k].arg); break;
			default: ok = get_extents(c, f[k].arg, f[k].dst); break;
			}
			if (!ok)
				return false;
		} while (peek(c, ','));
		if (!expect(c, '}', "expected ',' or '}'"))
			return false;
	}
	skip_ws(c);
	if (c->p != c->end)
		return bad(c, "trailing bytes");
	return seen == (1u << n) - 1 || bad(c, "missing key");
}

/* Reads a side file whole into a NUL-terminated buffer of *len bytes.
 * NULL and *missing when there is none; else NULL is an error. */
static char *read_side(const char *file, size_t max, size_t *len, bool *missing, struct err **errp)
{
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t got = 0;

	*missing = fd < 0 && errno == ENOENT;
	if (*missing)
		return NULL;
	if (fd < 0 || fstat(fd, &st) < 0) {
		err_set_errno(errp, errno, "cannot open '%s'", file);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		err_set(errp, ERR_PROTO, "malformed '%s': not a file of at most %zu bytes", file, max);
		return NULL;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		err_set(errp, ERR_IO, "out of memory reading '%s'", file);
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err_set_errno(errp, r < 0 ? errno : EIO, "cannot read '%s'", file);
			return NULL;
		}
		got += (size_t)r;
	}
	buf[got] = '\0';
	*len = got;
	return TAKE_PTR(buf);
}

/* Reads and parses a side file, whose gen must not be 0; *missing: none. */
static bool load_side(const char *file, size_t max, const struct field *f, unsigned n,
		      const uint64_t *gen, bool *missing, struct err **errp)
{
	size_t len = 0;
	_cleanup_free_ char *text = read_side(file, max, &len, missing, errp);
	struct cur c = { text, text, text + len, NULL };

	if (!text)
		return *missing;
	if (get_object(&c, f, n) && (*gen || bad(&c, "generation 0")))
		return true;
	return err_set(errp, ERR_PROTO, "malformed '%s' at byte %zu: %s", file,
		       (size_t)(c.p - c.start), c.why);
}

static bool meta_load(const struct rpaths *p, struct repl_replica_info *in, bool *missing,
		      struct err **errp)
{
	const struct field f[] = {
		{ "job", F_STR, in->job, sizeof(in->job) }, { "gen", F_U64, &in->gen, 0 },
		{ "time", F_I64, &in->time, 0 }, { "size", F_U64, &in->size, 0 },
		{ "source", F_STR, in->source, sizeof(in->source) },
	};

	memset(in, 0, sizeof(*in));
	return load_side(p->meta, META_MAX, f, ARRAY_SIZE(f), &in->gen, missing, errp);
}

static bool meta_store(const struct rpaths *p, const struct repl_replica_info *in,
		       struct err **errp)
{
	char text[META_MAX];

	snprintf(text, sizeof(text),
		 "{\"job\":\"%s\",\"gen\":%" PRIu64 ",\"time\":%" PRId64 ",\"size\":%" PRIu64 ",\"source\":\"%s\"}\n",
		 in->job, in->gen, in->time, in->size, in->source);
	return util_write_file(p->meta, text, 0600, errp) && sync_dir(p, errp);
}

struct commit {
	uint64_t gen;
	int64_t time;
	struct ranges r;
};

static bool commit_load(const struct rpaths *p, uint64_t size, struct commit *cm, bool *missing,
			struct err **errp)
{
	const struct field f[] = {
		{ "gen", F_U64, &cm->gen, 0 }, { "time", F_I64, &cm->time, 0 },
		{ "extents", F_EXTENTS, &cm->r, size },
	};

	return load_side(p->commit, COMMIT_MAX, f, ARRAY_SIZE(f), &cm->gen, missing, errp);
}

static bool commit_store(const struct rpaths *p, const struct commit *cm, struct err **errp)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	bool ok;

	if (!f)
		return err_set_errno(errp, errno, "cannot write '%s'", p->commit);
	fprintf(f, "{\"gen\":%" PRIu64 ",\"time\":%" PRId64 ",\"extents\":[", cm->gen, cm->time);
	for (size_t i = 0; i < cm->r.n; i++)
		fprintf(f, "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "", cm->r.x[i].offset,
			cm->r.x[i].length);
	fputs("]}\n", f);
	ok = !ferror(f);
	if (fclose(f) != 0 || !ok || len > COMMIT_MAX)
		return err_set(errp, ERR_IO, "cannot write '%s': %zu extents, out of memory or too many",
			       p->commit, cm->r.n);
	return util_write_file_bytes(p->commit, text, len, 0600, errp) && sync_dir(p, errp);
}

/* ---- applying a commit with io_uring ----------------------------------- */

/* A chunk of the volume on its way: read from the delta, then written. */
struct slot {
	uint64_t off;
	size_t len, done;  /* of the current step */
	bool writing;
	bool zeros;        /* writes zeros: a hole where PATH cannot punch */
	uint8_t *buf;
};

struct applier {
	const struct rpaths *p;
	const struct ranges *r;
	int dfd, vfd;
	struct io_uring ring;
	struct slot slot[SLOTS], *idle[SLOTS];
	unsigned n_idle;
	uint8_t *bufs, *zbuf;
	bool lost;               /* requests may be in flight: bufs stay */
	size_t xi;               /* the extent being walked */
	uint64_t pos, run_end;   /* next offset; end of the delta's run there */
	bool run_hole, punch;
	struct err *err;         /* the first error */
};

/* The delta's data or hole run at a->pos, cut at the extent's end. */
static bool find_run(struct applier *a, uint64_t end)
{
	off_t d = lseek(a->dfd, (off_t)a->pos, SEEK_DATA), h = 0;

	a->run_hole = d < 0 || (uint64_t)d > a->pos;
	if (!a->run_hole)
		h = lseek(a->dfd, (off_t)a->pos, SEEK_HOLE);
	if ((d < 0 && errno != ENXIO) || h < 0)
		return err_set_errno(&a->err, errno, "cannot seek '%s' at offset %" PRIu64,
				     a->p->delta, a->pos);
	d = a->run_hole ? d : h;
	a->run_end = d < 0 || (uint64_t)d <= a->pos || (uint64_t)d > end ? end : (uint64_t)d;
	return true;
}

/* The next chunk to copy or zero into s, punching holes on the way: 1,
 * or 0 when the extents are done, -1 on an error. */
static int next_chunk(struct applier *a, struct slot *s)
{
	while (a->xi < a->r->n) {
		const struct tp_extent *x = &a->r->x[a->xi];
		uint64_t end = x->offset + x->length;

		a->pos = a->pos < x->offset ? x->offset : a->pos;
		if (a->pos >= end) {
			a->xi++;
			continue;
		}
		if (a->run_end <= a->pos && !find_run(a, end))
			return -1;
		if (a->run_hole && a->punch) {
			if (!fallocate(a->vfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       (off_t)a->pos, (off_t)(a->run_end - a->pos))) {
				a->pos = a->run_end;
				continue;
			}
			if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
				err_set_errno(&a->err, errno, "cannot punch '%s' at offset %" PRIu64,
					      a->p->vol, a->pos);
				return -1;
			}
			a->punch = false; /* from now on holes are written as zeros */
			if (!(a->zbuf = calloc(1, CHUNK))) {
				err_set(&a->err, ERR_IO, "out of memory applying '%s'", a->p->commit);
				return -1;
			}
		}
		s->off = a->pos;
		s->len = a->run_end - a->pos < CHUNK ? (size_t)(a->run_end - a->pos) : CHUNK;
		s->done = 0;
		s->zeros = s->writing = a->run_hole;
		a->pos += s->len;
		return 1;
	}
	return 0;
}

static void queue_step(struct applier *a, struct slot *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&a->ring); /* SLOTS entries: never NULL */
	uint8_t *b = (s->zeros ? a->zbuf : s->buf) + s->done;

	if (s->writing)
		io_uring_prep_write(sqe, a->vfd, b, (unsigned)(s->len - s->done), s->off + s->done);
	else
		io_uring_prep_read(sqe, a->dfd, b, (unsigned)(s->len - s->done), s->off + s->done);
	io_uring_sqe_set_data(sqe, s);
}

/* A step came back with res: the next step of its chunk, or s is idle. */
static void complete(struct applier *a, struct slot *s, int res)
{
	if (res > 0 && !a->err) {
		s->done += (size_t)res;
		if (s->done == s->len && !s->writing) {
			s->writing = true;
			s->done = 0;
		}
		if (s->done < s->len) {
			queue_step(a, s);
			return;
		}
	} else if (!a->err) {
		err_set_errno(&a->err, res < 0 ? -res : EIO, "cannot %s '%s' at offset %" PRIu64,
			      s->writing ? "write" : "read", s->writing ? a->p->vol : a->p->delta,
			      s->off + s->done);
	}
	a->idle[a->n_idle++] = s;
}

/* Keeps the slots busy until the extents are done or an error stopped
 * them and every request came back. */
static void pump(struct applier *a)
{
	bool more = true;

	for (;;) {
		struct io_uring_cqe *cqe;
		int r;

		while (more && !a->err && a->n_idle) {
			struct slot *s = a->idle[a->n_idle - 1];

			more = next_chunk(a, s) > 0;
			if (more) {
				a->n_idle--;
				queue_step(a, s);
			}
		}
		if (a->n_idle == SLOTS)
			return;
		r = io_uring_submit_and_wait(&a->ring, 1);
		if (r < 0 && r != -EINTR) {
			err_set_errno(&a->err, -r, "io_uring for '%s'", a->p->vol);
			a->lost = true;
			return;
		}
		while (io_uring_peek_cqe(&a->ring, &cqe) == 0) {
			struct slot *s = io_uring_cqe_get_data(cqe);

			r = cqe->res;
			io_uring_cqe_seen(&a->ring, cqe);
			complete(a, s, r);
		}
	}
}

/* Copies the extents from the delta to the volume, then fsyncs it if
 * asked to. */
static bool copy_extents(const struct rpaths *p, int dfd, int vfd, const struct ranges *r,
			 bool sync, struct err **errp)
{
	struct applier a = { .p = p, .r = r, .dfd = dfd, .vfd = vfd, .punch = true };
	int q = io_uring_queue_init(SLOTS, &a.ring, 0);

	if (q < 0)
		return err_set_errno(errp, -q, "io_uring for '%s'", p->vol);
	if (!(a.bufs = malloc((size_t)SLOTS * CHUNK)))
		err_set(&a.err, ERR_IO, "out of memory applying '%s'", p->commit);
	for (unsigned i = 0; a.bufs && i < SLOTS; i++) {
		a.slot[i].buf = a.bufs + (size_t)i * CHUNK;
		a.idle[a.n_idle++] = &a.slot[i];
	}
	if (a.bufs)
		pump(&a);
	if (!a.err && sync && fsync(vfd) < 0)
		err_set_errno(&a.err, errno, "cannot fsync '%s'", p->vol);
	io_uring_queue_exit(&a.ring);
	if (!a.lost)
		free(a.bufs);
	free(a.zbuf);
	if (!a.err)
		return true;
	err_propagate(errp, &a.err);
	return false;
}

/* ---- applying through qemu-nbd (qcow2) --------------------------------- */

/* Copies the extents from the delta into the qcow2 image at vol, through
 * QEMU's qcow2 driver; the delta's holes are written as zeros unless the
 * image is new (it reads as zeros everywhere). Flushed at the end if
 * sync; else written (qemu-nbd gone) but durable only once the caller
 * syncs the file: the commit, kept until then, redoes it after a crash. */
static bool copy_extents_vol(const struct rpaths *p, const char *vol, int dfd,
			     const struct ranges *r, bool fresh, bool sync, struct err **errp)
{
	struct repl_vol *v = sync ? repl_vol_open(vol, true, errp) : repl_vol_open_unsynced(vol, errp);
	_cleanup_free_ uint8_t *buf = NULL;
	struct err *e = NULL;

	if (!v)
		return false;
	if (!(buf = malloc(CHUNK)))
		err_set(&e, ERR_IO, "out of memory applying '%s'", p->commit);
	for (size_t i = 0; i < r->n && !e; i++) {
		uint64_t pos = r->x[i].offset, end = pos + r->x[i].length;

		while (pos < end && !e) {
			off_t d = lseek(dfd, (off_t)pos, SEEK_DATA), h;
			uint64_t run;

			if (d < 0 && errno != ENXIO) {
				err_set_errno(&e, errno, "cannot seek '%s' at offset %" PRIu64, p->delta, pos);
				break;
			}
			if (d < 0 || (uint64_t)d > pos) { /* a hole up to d */
				run = d < 0 || (uint64_t)d > end ? end - pos : (uint64_t)d - pos;
				if (!fresh)
					repl_vol_zero(v, pos, run, &e);
				pos += run;
				continue;
			}
			h = lseek(dfd, (off_t)pos, SEEK_HOLE);
			if (h < 0) {
				err_set_errno(&e, errno, "cannot seek '%s' at offset %" PRIu64, p->delta, pos);
				break;
			}
			run = (uint64_t)h > end ? end - pos : (uint64_t)h - pos;
			run = run < CHUNK ? run : CHUNK;
			if (pread(dfd, buf, run, (off_t)pos) != (ssize_t)run)
				err_set(&e, ERR_IO, "cannot read '%s' at offset %" PRIu64, p->delta, pos);
			else
				repl_vol_write(v, buf, run, pos, &e);
			pos += run;
		}
	}
	if (!repl_vol_close(v, e ? NULL : &e) || e) {
		err_propagate(errp, &e);
		return false;
	}
	return true;
}

/* ---- the steps --------------------------------------------------------- */

/* The data of cm copied into the replica *in: readable there; durable
 * too if sync. */
static bool apply_data(const struct rpaths *p, const struct repl_replica_info *in,
		       const struct commit *cm, int dfd, bool sync, struct err **errp)
{
	_cleanup_close_ int vfd = -1;

	if (dfd < 0)
		return err_set(errp, ERR_STATE, "'%s' has no delta '%s'", p->commit, p->delta);
	if (!size_ok(dfd, p->delta, false, in->size, errp) ||
	    (vfd = open_sized(p->vol, p->qcow2, p->qcow2 ? O_RDONLY : O_WRONLY, in->size, errp)) < 0)
		return false;
	return p->qcow2 ? copy_extents_vol(p, p->vol, dfd, &cm->r, false, sync, errp) :
			  copy_extents(p, dfd, vfd, &cm->r, sync, errp);
}

/* Applies cm to the replica *in, which then holds cm's generation. */
static bool apply(const struct rpaths *p, struct repl_replica_info *in, const struct commit *cm,
		  int dfd, struct err **errp)
{
	struct repl_replica_info next = *in;

	if (!apply_data(p, in, cm, dfd, true, errp))
		return false;
	next.gen = cm->gen;
	next.time = cm->time;
	if (!meta_store(p, &next, errp))
		return false;
	*in = next;
	return true;
}

/* The commit goes first, durably: a commit never outlives its delta. */
static bool finish(const struct rpaths *p, struct err **errp)
{
	return unlink_side(p->commit, errp) && sync_dir(p, errp) && unlink_side(p->delta, errp);
}

/* The volume of a replica with a PATH.repl: there with its size, or a
 * create that got as far as PATH.repl, finished here. */
static bool volume_check(const struct rpaths *p, const struct repl_replica_info *in,
			 struct err **errp)
{
	_cleanup_close_ int fd = -1;
	struct stat st;
	bool missing;

	if (lstat(p->vol, &st) < 0 && errno == ENOENT && lstat(p->part, &st) == 0) {
		if ((fd = open_locked(p->part, O_RDONLY, &missing, errp)) < 0 ||
		    !size_ok(fd, p->part, p->qcow2, in->size, errp))
			return false;
		log_info("replica '%s': finishing its creation (generation %" PRIu64 ")", p->vol,
			 in->gen);
		if (!rename_new(p->part, p->vol, errp) || !sync_dir(p, errp))
			return false;
		close(TAKE_FD(fd));
	}
	fd = open_sized(p->vol, p->qcow2, O_RDONLY, in->size, errp);
	return fd >= 0;
}

/* Receives a stream into a new sparse file of size bytes (a stale one
 * goes first), fdatasynced; *r gets the ranges it covered, *fd the file,
 * open and locked. On failure the file is removed. */
static bool receive(const char *file, int in_fd, uint64_t size, struct ranges *r,
		    struct tp_stream_progress *final, int *fdp, struct err **errp)
{
	struct tp_stream_opts o = { .on_range = ranges_add, .opaque = r };
	_cleanup_close_ int fd = -1;
	struct err *e = NULL;
	bool missing;

	if (!unlink_side(file, errp) ||
	    (fd = open_locked(file, O_RDWR | O_CREAT | O_EXCL, &missing, errp)) < 0)
		return false;
	if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)size) < 0)
		err_set_errno(&e, errno, "cannot size '%s' to %" PRIu64 " bytes", file, size);
	else if (!tp_stream_recv_apply(in_fd, fd, &o, final, &e))
		err_prefix(e, "receive '%s'", file);
	else if (r->oom)
		err_set(&e, ERR_IO, "out of memory receiving '%s'", file);
	if (!e) {
		*fdp = TAKE_FD(fd);
		return true;
	}
	unlink(file);
	err_propagate(errp, &e);
	return false;
}

/* A job or source name: printable ASCII without '"' and '\\', shorter
 * than cap (what the side files hold), not empty if required. */
static bool name_ok(const char *s, size_t cap, bool required, const char *what,
		    struct err **errp)
{
	size_t n = strnlen(s, cap);

	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '"' || s[i] == '\\')
			return err_set(errp, ERR_INVAL, "invalid replica %s: character %zu is not printable ASCII, or a quote or backslash",
				       what, i + 1);
	if (n == cap)
		return err_set(errp, ERR_INVAL, "invalid replica %s '%.*s': longer than %zu characters",
			       what, (int)cap, s, cap - 1);
	return n || !required || err_set(errp, ERR_INVAL, "invalid replica %s: empty", what);
}

/* ---- the contract ------------------------------------------------------ */

bool repl_replica_recover(const char *path, struct repl_replica_info *info, struct err **errp)
{
	struct commit cm = { 0 };
	struct repl_replica_info in;
	_cleanup_close_ int dfd = -1;
	struct rpaths p;
	bool missing, ok;

	if (!rpaths_init(&p, path, errp))
		return false;
	clean_tmp(&p);
	if ((dfd = open_locked(p.delta, O_RDONLY, &missing, errp)) < 0 && !missing)
		return false; /* an update is running, or worse */
	if (!meta_load(&p, &in, &missing, errp))
		return false;
	if (missing) {
		if (!unlink_side(p.commit, errp) || !unlink_side(p.delta, errp))
			return false;
		memset(info, 0, sizeof(*info));
		return true;
	}
	if (!volume_check(&p, &in, errp))
		return false;
	ok = commit_load(&p, in.size, &cm, &missing, errp);
	if (ok && missing) {
		ok = unlink_side(p.delta, errp);
	} else if (ok && cm.gen == in.gen + 1) {
		log_info("replica '%s': applying the update to generation %" PRIu64, p.vol, cm.gen);
		ok = apply(&p, &in, &cm, dfd, errp) && finish(&p, errp);
	} else if (ok && cm.gen == in.gen) {
		ok = finish(&p, errp);
	} else if (ok) {
		ok = err_set(errp, ERR_STATE, "'%s' is an update to generation %" PRIu64 ", but '%s' holds generation %" PRIu64,
			     p.commit, cm.gen, p.meta, in.gen);
	}
	ranges_fini(&cm.r);
	if (ok)
		*info = in;
	return ok;
}

bool repl_replica_create(const char *path, int in_fd, const struct repl_replica_info *info,
			 struct tp_stream_progress *final, struct err **errp)
{
	_cleanup_(ranges_fini) struct ranges r = { 0 };
	_cleanup_close_ int fd = -1;
	struct tp_stream_progress fin;
	struct err *e = NULL;
	struct rpaths p;
	struct stat st;

	if (!info->gen)
		return err_set(errp, ERR_INVAL, "invalid replica generation 0");
	if (!name_ok(info->job, sizeof(info->job), true, "job", errp) ||
	    !name_ok(info->source, sizeof(info->source), false, "source", errp) ||
	    !rpaths_init(&p, path, errp))
		return false;
	if (lstat(path, &st) == 0)
		return err_set(errp, ERR_CONFLICT, "'%s' exists", path);
	if (errno != ENOENT)
		return err_set_errno(errp, errno, "cannot stat '%s'", path);
	if (lstat(p.meta, &st) == 0)
		return err_set(errp, ERR_CONFLICT, "a replica exists at '%s' ('%s')", path, p.meta);
	clean_tmp(&p);
	/* qcow2: the stream lands in a sparse delta, which then goes into a
	 * new image through QEMU; the delta's lock covers both steps. */
	if (!unlink_side(p.commit, errp) || !unlink_side(p.delta, errp) ||
	    (p.qcow2 && !unlink_side(p.part, errp)) ||
	    !receive(p.qcow2 ? p.delta : p.part, in_fd, info->size, &r, &fin, &fd, errp))
		return false;
	if (info->size && (r.n != 1 || r.x[0].offset || r.x[0].length != info->size))
		err_set(&e, ERR_PROTO, "receive '%s': the stream carries only some extents; a new replica needs all",
			p.qcow2 ? p.delta : p.part);
	else if (p.qcow2 && repl_vol_create_qcow2(p.part, info->size, &e))
		copy_extents_vol(&p, p.part, fd, &r, true, true, &e);
	if (!e && meta_store(&p, info, &e))
		rename_new(p.part, path, &e);
	if (p.qcow2)
		unlink(p.delta); /* still locked by fd: no recovery took it */
	if (e) {
		unlink(p.meta); /* before the part, which it would make a replica */
		unlink(p.part);
		err_propagate(errp, &e);
		return false;
	}
	if (!sync_dir(&p, errp)) /* there, but maybe not durably: nothing to undo */
		return false;
	if (final)
		*final = fin;
	return true;
}

/* pend NULL: applied and tidied; else the data applied, not yet durable in
 * the volume, the rest left to repl_replica_settle(pend). */
static bool update(const char *path, int in_fd, const struct repl_replica_info *info,
		   struct repl_replica_pending *pend, struct tp_stream_progress *final,
		   struct err **errp)
{
	struct commit cm = { .gen = info->gen, .time = info->time };
	struct repl_replica_info in;
	struct tp_stream_progress fin;
	_cleanup_close_ int dfd = -1;
	struct rpaths p;
	int64_t t[3];
	bool ok;

	if (!rpaths_init(&p, path, errp) || !repl_replica_recover(path, &in, errp))
		return false;
	if (!in.gen)
		return err_set(errp, ERR_STATE, "no replica at '%s'", path);
	if (strncmp(info->job, in.job, sizeof(in.job)))
		return err_set(errp, ERR_CONFLICT, "replica '%s' belongs to job '%s', not '%.*s'", path,
			       in.job, (int)sizeof(info->job), info->job);
	if (info->gen != in.gen + 1)
		return err_set(errp, ERR_STATE, "replica '%s' holds generation %" PRIu64 ": generation %" PRIu64 " cannot follow",
			       path, in.gen, info->gen);
	if (info->size != in.size)
		return err_set(errp, ERR_STATE, "replica '%s' has %" PRIu64 " bytes, the update %" PRIu64,
			       path, in.size, info->size);
	t[0] = util_now_ms();
	ok = receive(p.delta, in_fd, in.size, &cm.r, &fin, &dfd, errp);
	t[1] = util_now_ms();
	if (ok && !commit_store(&p, &cm, errp)) {
		unlink(p.commit); /* perhaps there, not durably: both go, commit first */
		unlink(p.delta);
		ok = false;
	}
	t[2] = util_now_ms();
	/* From here a failure leaves the commit, which recovery applies. */
	if (pend)
		ok = ok && apply_data(&p, &in, &cm, dfd, false, errp);
	else
		ok = ok && apply(&p, &in, &cm, dfd, errp) && finish(&p, errp);
	if (ok && pend) {
		snprintf(pend->path, sizeof(pend->path), "%s", path);
		pend->next = in;
		pend->next.gen = cm.gen;
		pend->next.time = cm.time;
		pend->dfd = TAKE_FD(dfd);
	}
	if (ok)
		log_info("replica '%s': generation %" PRIu64 " (%zu extents): received in %" PRId64
			 " ms, committed in %" PRId64 " ms, applied in %" PRId64 " ms", p.vol, info->gen,
			 cm.r.n, t[1] - t[0], t[2] - t[1], util_now_ms() - t[2]);
	ranges_fini(&cm.r);
	if (ok && final)
		*final = fin;
	return ok;
}

bool repl_replica_update(const char *path, int in_fd, const struct repl_replica_info *info,
			 struct tp_stream_progress *final, struct err **errp)
{
	return update(path, in_fd, info, NULL, final, errp);
}

bool repl_replica_update_durable(const char *path, int in_fd, const struct repl_replica_info *info,
				 struct repl_replica_pending *pend, struct tp_stream_progress *final,
				 struct err **errp)
{
	pend->dfd = -1;
	return update(path, in_fd, info, pend, final, errp);
}

/* The second half of apply() and finish(), under the delta's lock that
 * update() kept. */
bool repl_replica_settle(struct repl_replica_pending *pend, struct err **errp)
{
	_cleanup_close_ int dfd = TAKE_FD(pend->dfd), vfd = -1;
	struct rpaths p;

	if (dfd < 0)
		return true;
	if (!rpaths_init(&p, pend->path, errp))
		return false;
	/* A qcow2 image too: its qemu-nbd wrote it unsynced, and is gone. */
	vfd = open(p.vol, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (vfd < 0 || fsync(vfd) < 0)
		return err_set_errno(errp, errno, "cannot fsync '%s'", p.vol);
	return meta_store(&p, &pend->next, errp) && finish(&p, errp);
}

void repl_replica_pending_drop(struct repl_replica_pending *pend)
{
	if (pend->dfd >= 0)
		close(pend->dfd);
	pend->dfd = -1;
}

bool repl_replica_remove(const char *path, struct err **errp)
{
	struct rpaths p;
	struct stat st;
	bool ours;

	if (!rpaths_init(&p, path, errp))
		return false;
	/* PATH.repl goes last, so that an interrupted removal is finished by
	 * the next; PATH goes only while PATH.repl says it is a replica. */
	ours = lstat(p.meta, &st) == 0;
	if (!unlink_side(p.commit, errp) || !unlink_side(p.delta, errp) ||
	    !unlink_side(p.part, errp) || (ours && !unlink_side(path, errp)) ||
	    !unlink_side(p.meta, errp))
		return false;
	clean_tmp(&p);
	return sync_dir(&p, errp);
}

bool repl_replica_adopt(const char *path, const struct repl_replica_info *info, struct err **errp)
{
	_cleanup_close_ int fd = -1;
	struct rpaths p;
	struct stat st;

	if (!info->gen)
		return err_set(errp, ERR_INVAL, "invalid replica generation 0");
	if (!name_ok(info->job, sizeof(info->job), true, "job", errp) ||
	    !name_ok(info->source, sizeof(info->source), false, "source", errp) ||
	    !rpaths_init(&p, path, errp))
		return false;
	if (lstat(p.meta, &st) == 0)
		return err_set(errp, ERR_CONFLICT, "a replica exists at '%s' ('%s')", path, p.meta);
	fd = open_sized(path, p.qcow2, O_RDONLY, info->size, errp);
	if (fd < 0)
		return false;
	/* What a create or update of another life left here means nothing to
	 * this replica: it goes before PATH.repl makes the file one. */
	clean_tmp(&p);
	if (!unlink_side(p.commit, errp) || !unlink_side(p.delta, errp) ||
	    !unlink_side(p.part, errp))
		return false;
	if (fdatasync(fd) < 0)
		return err_set_errno(errp, errno, "cannot sync '%s'", path);
	return meta_store(&p, info, errp);
}

bool repl_replica_release(const char *path, struct err **errp)
{
	struct repl_replica_info in;
	struct rpaths p;

	/* A committed update is applied first: the volume must be whole. */
	if (!rpaths_init(&p, path, errp) || !repl_replica_recover(path, &in, errp))
		return false;
	if (!unlink_side(p.meta, errp) || !unlink_side(p.commit, errp) ||
	    !unlink_side(p.delta, errp) || !unlink_side(p.part, errp))
		return false;
	clean_tmp(&p);
	return sync_dir(&p, errp);
}
