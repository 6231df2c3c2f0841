/* util.c - see util.h. */
#include "util.h"
#include "cleanup.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Strictly digits: strtoull alone accepts " -1" and "1x" forms we refuse. */
static bool parse_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*end = p;
	*out = v;
	return true;
}

bool util_parse_u64(const char *s, uint64_t min, uint64_t max,
		    const char *what, uint64_t *out, struct err **errp)
{
	const char *end;
	uint64_t v;

	if (!s || !parse_digits(s, &end, &v) || *end)
		return err_set(errp, ERR_INVAL, "invalid %s '%s': not a number",
			       what, s ? s : "");
	if (v < min || v > max)
		return err_set(errp, ERR_INVAL,
			       "invalid %s '%s': must be between %" PRIu64
			       " and %" PRIu64, what, s, min, max);
	*out = v;
	return true;
}

bool util_parse_size(const char *s, uint64_t unit, uint64_t min, uint64_t max,
		     const char *what, uint64_t *out, struct err **errp)
{
	const char *end;
	uint64_t v, mul = unit;
	char buf_min[32], buf_max[32];

	if (!s || !parse_digits(s, &end, &v))
		return err_set(errp, ERR_INVAL, "invalid %s '%s': not a size",
			       what, s ? s : "");
	if (*end) {
		switch (toupper((unsigned char)*end)) {
		case 'B': mul = 1; break;
		case 'K': mul = 1ULL << 10; break;
		case 'M': mul = 1ULL << 20; break;
		case 'G': mul = 1ULL << 30; break;
		case 'T': mul = 1ULL << 40; break;
		default:
			return err_set(errp, ERR_INVAL,
				       "invalid %s '%s': unknown unit", what, s);
		}
		end++;
		if (mul > 1 && (!strcasecmp(end, "iB") || !strcasecmp(end, "B")))
			end += strlen(end);
		if (*end)
			return err_set(errp, ERR_INVAL,
				       "invalid %s '%s': unknown unit", what, s);
	}
	if (v && mul > UINT64_MAX / v)
		return err_set(errp, ERR_INVAL, "invalid %s '%s': too large",
			       what, s);
	v *= mul;
	if (v < min || v > max)
		return err_set(errp, ERR_INVAL,
			       "invalid %s '%s': must be between %s and %s", what, s,
			       util_fmt_bytes(min, buf_min, sizeof(buf_min)),
			       util_fmt_bytes(max, buf_max, sizeof(buf_max)));
	*out = v;
	return true;
}

const char *util_fmt_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	size_t u = 0;

	while (v >= 1024.0 && u + 1 < ARRAY_SIZE(units)) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.*f %s", v < 10 ? 2 : 1, v, units[u]);
	return buf;
}

bool util_write_all(int fd, const void *buf, size_t len, struct err **errp)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return err_set_errno(errp, errno, "write");
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

char *util_read_file(const char *path, size_t max, struct err **errp)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;

	if (fd < 0) {
		err_set_errno(errp, errno, "cannot open '%s'", path);
		return NULL;
	}
	buf = malloc(max + 1);
	if (!buf) {
		err_set(errp, ERR_IO, "out of memory reading '%s'", path);
		return NULL;
	}
	while (len < max) {
		ssize_t n = read(fd, buf + len, max - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set_errno(errp, errno, "cannot read '%s'", path);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return TAKE_PTR(buf);
}

static bool write_replace(const char *path, const void *data, size_t len, int mode,
			  bool durable, struct err **errp)
{
	_cleanup_free_ char *dir = strdup(path), *tmp = NULL;
	char *slash;
	int fd;

	if (!dir || asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (!util_mkdir_p(dir, 0755, errp))
			return false;
	}
	unlink(tmp); /* a leftover of a crashed writer with our pid */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return err_set_errno(errp, errno, "cannot create '%s'", tmp);
	/* fchmod: the mode must not depend on the caller's umask (keys: 0400). */
	if (fchmod(fd, (mode_t)mode) < 0 || !util_write_all(fd, data, len, errp) ||
	    (durable && fsync(fd) < 0)) {
		err_set_errno(errp, errno, "cannot write '%s'", tmp);
		close(fd);
		unlink(tmp);
		return false;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		err_set_errno(errp, errno, "cannot rename '%s' to '%s'", tmp, path);
		unlink(tmp);
		return false;
	}
	return true;
}

bool util_write_file_bytes(const char *path, const void *data, size_t len, int mode,
			  struct err **errp)
{
	return write_replace(path, data, len, mode, true, errp);
}

bool util_write_cache_file(const char *path, const void *data, size_t len, int mode,
			   struct err **errp)
{
	return write_replace(path, data, len, mode, false, errp);
}

bool util_write_file(const char *path, const char *data, int mode, struct err **errp)
{
	return util_write_file_bytes(path, data, strlen(data), mode, errp);
}

bool util_volume_is_qcow2(const char *path)
{
	size_t n = strlen(path);

	return n > 6 && !strcmp(path + n - 6, ".qcow2");
}

bool util_pid_alive(pid_t pid)
{
	char path[64], buf[512];
	_cleanup_close_ int fd = -1;
	ssize_t n;
	char *p;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold spaces and parens, so take the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return false;
	return p[2] != 'Z' && p[2] != 'X';
}

bool util_mkdir_p(const char *path, int mode, struct err **errp)
{
	_cleanup_free_ char *copy = strdup(path);
	char *p;

	if (!copy)
		return err_set(errp, ERR_IO, "out of memory");
	for (p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			return err_set_errno(errp, errno, "cannot create directory '%s'", copy);
		*p = '/';
	}
	if (mkdir(copy, (mode_t)mode) < 0 && errno != EEXIST)
		return err_set_errno(errp, errno, "cannot create directory '%s'", copy);
	return true;
}

/* ---- base64 (RFC 4648, with padding) -------------------------------------- */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t util_base64_encode(const void *data, size_t len, char *out)
{
	const uint8_t *p = data;
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		out[o++] = b64_alphabet[v >> 18 & 63];
		out[o++] = b64_alphabet[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
		out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

static int b64_value(char c)
{
	const char *at = c ? strchr(b64_alphabet, c) : NULL;

	return at ? (int)(at - b64_alphabet) : -1;
}

bool util_base64_decode(const char *in, void *out, size_t cap, size_t *len, struct err **errp)
{
	size_t n = strlen(in), o = 0;
	uint8_t *q = out;

	if (n % 4)
		return err_set(errp, ERR_INVAL, "invalid base64: length %zu is not a multiple of 4",
			       n);
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		unsigned bytes = 3;

		for (int k = 0; k < 4; k++) {
			v[k] = b64_value(in[i + k]);
			/* '=' only at the end: "xx==" or "xxx=". */
			if (v[k] < 0 && !(in[i + k] == '=' && i + 4 == n && k >= 2 &&
					  (k == 3 || in[i + 3] == '=')))
				return err_set(errp, ERR_INVAL, "invalid base64 at character %zu",
					       i + (size_t)k + 1);
			if (v[k] < 0) {
				v[k] = 0;
				bytes = bytes < (unsigned)k - 1 ? bytes : (unsigned)k - 1;
			}
		}
		if (o + bytes > cap)
			return err_set(errp, ERR_INVAL, "base64 data longer than %zu bytes", cap);
		q[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (bytes > 1)
			q[o++] = (uint8_t)(v[1] << 4 | v[2] >> 2);
		if (bytes > 2)
			q[o++] = (uint8_t)(v[2] << 6 | v[3]);
	}
	*len = o;
	return true;
}

void util_test_delay(const char *name)
{
	const char *v = getenv("VMM_TEST_PHASE_DELAY"), *colon;
	size_t n = strlen(name);

	if (!v || !(colon = strchr(v, ':')))
		return;
	if ((size_t)(colon - v) == n && !strncmp(v, name, n)) {
		log_warn("VMM_TEST_PHASE_DELAY: lingering %s ms at %s", colon + 1, name);
		usleep((useconds_t)strtoul(colon + 1, NULL, 10) * 1000);
	}
}

const char *util_printable(const char *s, char *buf, size_t len)
{
	size_t n = 0, max;

	if (!len)
		return buf;
	max = len - 1;
	for (; s && s[n] && n < max; n++)
		buf[n] = (unsigned char)s[n] < 0x20 || (unsigned char)s[n] >= 0x7f ? '?' : s[n];
	buf[n] = '\0';
	if (s && s[n] && max >= 3)
		memcpy(buf + max - 3, "...", 4);
	return buf;
}
