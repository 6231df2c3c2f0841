/*
 * clu_conf_net.c - CIDR networks ("10.1.2.0/24", "fd00::/64") as they
 * appear in datacenter.cfg. Addresses are whatever inet_pton() accepts
 * (no zone IDs, no leading zeros in IPv4 octets); host bits are cleared
 * so that equal networks compare equal.
 */
#include "clu_conf.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static size_t addr_len(int family)
{
	return family == AF_INET ? 4 : 16;
}

/* Reads an address of the family its text implies into addr[16]. */
static int parse_addr(const char *s, uint8_t addr[16])
{
	int family = strchr(s, ':') ? AF_INET6 : AF_INET;

	memset(addr, 0, 16);
	if (inet_pton(family, s, addr) != 1)
		return 0;
	return family;
}

/* Zeroes every bit after the first `prefix` ones. */
static void clear_host_bits(uint8_t addr[16], unsigned prefix)
{
	for (unsigned i = 0; i < 16; i++) {
		if (prefix >= 8) {
			prefix -= 8;
			continue;
		}
		addr[i] &= (uint8_t)(0xff00u >> prefix);
		prefix = 0;
	}
}

const char *clu_cidr_check(const char *s, struct clu_cidr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/'), *len;
	struct clu_cidr c;
	unsigned max, prefix = 0;

	if (!slash)
		return "missing '/PREFIX'";
	if ((size_t)(slash - s) >= sizeof(host))
		return "address too long";
	memcpy(host, s, (size_t)(slash - s));
	host[slash - s] = '\0';
	memset(&c, 0, sizeof(c));
	c.family = parse_addr(host, c.addr);
	if (!c.family)
		return strchr(host, ':') ? "invalid IPv6 address" : "invalid IPv4 address";
	max = c.family == AF_INET ? 32 : 128;
	len = slash + 1;
	if (!*len || strspn(len, "0123456789") != strlen(len) ||
	    (len[0] == '0' && len[1]) || strlen(len) > 3)
		return "invalid prefix length";
	for (const char *p = len; *p; p++)
		prefix = prefix * 10 + (unsigned)(*p - '0');
	if (prefix > max)
		return c.family == AF_INET ? "prefix length above 32" :
					     "prefix length above 128";
	c.prefix = prefix;
	clear_host_bits(c.addr, prefix);
	*out = c;
	return NULL;
}

bool clu_cidr_parse(const char *s, struct clu_cidr *out, struct err **errp)
{
	const char *why = clu_cidr_check(s, out);

	if (why)
		return err_set(errp, ERR_INVAL, "invalid CIDR '%s': %s", CLU_Q(s), why);
	return true;
}

bool clu_cidr_contains(const struct clu_cidr *c, const char *addr)
{
	uint8_t a[16];

	if (!c || !addr || strchr(addr, '/') || strlen(addr) >= INET6_ADDRSTRLEN)
		return false;
	if (parse_addr(addr, a) != c->family)
		return false;
	clear_host_bits(a, c->prefix);
	return !memcmp(a, c->addr, addr_len(c->family));
}

const char *clu_cidr_format(const struct clu_cidr *c, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, host, sizeof(host)))
		snprintf(host, sizeof(host), "?");
	snprintf(buf, len, "%s/%u", host, c->prefix);
	return buf;
}

bool clu_cidr_equal(const struct clu_cidr *a, const struct clu_cidr *b)
{
	/* Bytes past an IPv4 address are zero: compare them all. */
	return a->family == b->family && a->prefix == b->prefix &&
	       !memcmp(a->addr, b->addr, sizeof(a->addr));
}
