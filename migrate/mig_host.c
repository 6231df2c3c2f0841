/*
 * mig_host.c - this host's address on a network and its free memory.
 * Contract in mig_host.h (the CPU checks are in mig_host_cpu.c).
 */
#include "mig_host.h"
#include "../cluster/clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define ADDRS_MAX 16 /* named in an error; more are counted */

DEFINE_CLEANUP_FUNC(struct ifaddrs, freeifaddrs)

struct addr_list {
	char addr[ADDRS_MAX][INET6_ADDRSTRLEN];
	unsigned n;     /* kept in addr[] */
	unsigned extra; /* found beyond ADDRS_MAX */
};

static void addr_list_add(struct addr_list *l, const char *a)
{
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->addr[i], a))
			return; /* the same address on two interfaces */
	if (l->n == ADDRS_MAX) {
		l->extra++;
		return;
	}
	snprintf(l->addr[l->n++], sizeof(l->addr[0]), "%s", a);
}

bool mig_host_addr_in(const char *cidr, char *out, size_t len, struct err **errp)
{
	_cleanup_(freeifaddrsp) struct ifaddrs *ifs = NULL;
	char net[CLU_CIDR_STRLEN], names[ADDRS_MAX * (INET6_ADDRSTRLEN + 2) + 32];
	struct clu_cidr c;
	struct addr_list l = { .n = 0 };
	size_t off = 0;

	if (!clu_cidr_parse(cidr ? cidr : "", &c, errp))
		return false;
	clu_cidr_format(&c, net, sizeof(net));
	if (getifaddrs(&ifs) < 0)
		return err_set_errno(errp, errno, "cannot list addresses of node");
	for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		char a[INET6_ADDRSTRLEN];
		const void *raw;

		if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) ||
		    i->ifa_addr->sa_family != c.family)
			continue;
		raw = c.family == AF_INET ?
			      (const void *)&((const struct sockaddr_in *)i->ifa_addr)->sin_addr :
			      (const void *)&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
		if (inet_ntop(c.family, raw, a, sizeof(a)) && clu_cidr_contains(&c, a))
			addr_list_add(&l, a);
	}
	if (l.n == 0)
		return err_set(errp, ERR_NOTFOUND, "no address in %s", net);
	if (l.n > 1) {
		for (unsigned i = 0; i < l.n; i++)
			off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
						i ? ", " : "", l.addr[i]);
		if (l.extra)
			snprintf(names + off, sizeof(names) - off, " and %u more", l.extra);
		return err_set(errp, ERR_INVAL, "several addresses in %s: %s", net, names);
	}
	if (strlen(l.addr[0]) >= len)
		return err_set(errp, ERR_INVAL, "address %s does not fit %zu bytes", l.addr[0],
			       len);
	memcpy(out, l.addr[0], strlen(l.addr[0]) + 1);
	return true;
}

/* One "Key:  N kB" line of /proc/meminfo, in bytes. */
static bool meminfo(const char *name, uint64_t *bytes, struct err **errp)
{
	_cleanup_free_ char *text = util_read_file("/proc/meminfo", 1 << 16, errp);
	char key[64];
	const char *p;
	char *end;
	uint64_t kib;

	if (!text)
		return false;
	/* Whole keys at line starts only: "Key:" first, or "\nKey:". */
	snprintf(key, sizeof(key), "\n%s:", name);
	p = !strncmp(text, key + 1, strlen(key + 1)) ? text - 1 : strstr(text, key);
	if (!p)
		return err_set(errp, ERR_NOTFOUND, "no %s in /proc/meminfo", name);
	p += strlen(key);
	errno = 0;
	kib = strtoull(p, &end, 10);
	if (errno || end == p || strncmp(end, " kB", 3) || kib > UINT64_MAX / 1024)
		return err_set(errp, ERR_PROTO, "cannot read %s in /proc/meminfo: '%.40s'", name,
			       p);
	*bytes = kib * 1024;
	return true;
}

bool mig_host_mem_available(uint64_t *bytes, struct err **errp)
{
	return meminfo("MemAvailable", bytes, errp);
}

bool mig_host_mem_total(uint64_t *bytes, struct err **errp)
{
	return meminfo("MemTotal", bytes, errp);
}
