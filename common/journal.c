/* journal.c - the journal's native protocol. See journal.h. */
#include "journal.h"
#include "cleanup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

bool journal_is_stderr(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	int end = 0;

	if (!env || sscanf(env, "%llu:%llu%n", &dev, &ino, &end) != 2 || env[end])
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

const char *journal_socket_path(void)
{
	const char *p = getenv("VMM_JOURNAL_SOCKET");

	return p && *p ? p : "/run/systemd/journal/socket";
}

static bool key_valid(const char *k)
{
	size_t n = strlen(k);

	return n > 0 && n <= 64 && k[0] != '_' &&
	       strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

bool journal_send(int fd, const char *path, const struct journal_field *f, size_t n,
		  struct err **errp)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_free_ char *buf = NULL;
	size_t cap = 0, len = 0;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(errp, ERR_INVAL, "journal socket path too long: '%s'", path);
	strcpy(sa.sun_path, path);
	for (size_t i = 0; i < n; i++) {
		if (!key_valid(f[i].key))
			return err_set(errp, ERR_INVAL, "invalid journal field name '%s'", f[i].key);
		cap += strlen(f[i].key) + strlen(f[i].value) + 2 + sizeof(uint64_t);
	}
	buf = malloc(cap + 1);
	if (!buf)
		return err_set(errp, ERR_IO, "out of memory");
	for (size_t i = 0; i < n; i++) {
		size_t kl = strlen(f[i].key), vl = strlen(f[i].value);

		memcpy(buf + len, f[i].key, kl);
		len += kl;
		if (!strchr(f[i].value, '\n')) {
			buf[len++] = '=';
		} else {
			/* Binary form: the length, little endian, byte by byte. */
			buf[len++] = '\n';
			for (unsigned b = 0; b < 8; b++)
				buf[len++] = (char)(((uint64_t)vl >> (8 * b)) & 0xff);
		}
		memcpy(buf + len, f[i].value, vl);
		len += vl;
		buf[len++] = '\n';
	}
	if (sendto(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
		   sizeof(sa)) < 0)
		return err_set_errno(errp, errno, "cannot log to the journal at '%s'", path);
	return true;
}
