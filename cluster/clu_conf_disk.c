/*
 * clu_conf_disk.c - a guest disk as a guest config writes it:
 * "local:vm-100-disk-0,size=32G,cache=none,replicate=0".
 * The volume name ends up in paths and commands on other nodes, so it is
 * held to a narrow alphabet and may not climb out of its storage.
 */
#include "clu_conf.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define DISK_SIZE_MAX (1ULL << 50) /* 1 PiB */

const char *const clu_disk_cache_names[] = {
	[CLU_CACHE_DEFAULT] = "default",
	[CLU_CACHE_NONE] = "none",
	[CLU_CACHE_WRITEBACK] = "writeback",
	[CLU_CACHE_WRITETHROUGH] = "writethrough",
	[CLU_CACHE_DIRECTSYNC] = "directsync",
	[CLU_CACHE_UNSAFE] = "unsafe",
};
_Static_assert(ARRAY_SIZE(clu_disk_cache_names) == CLU_CACHE_MAX,
	       "clu_disk_cache_names");

static const char *volume_check(const char *v)
{
	static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				 "0123456789_.+/-";
	size_t n = strlen(v);

	if (!n)
		return "empty volume name";
	if (n > CLU_VOLUME_MAX)
		return "volume name too long";
	if (strspn(v, ok) != n)
		return "only letters, digits and _.+/- are allowed";
	if (v[0] == '/')
		return "absolute paths are not allowed";
	if (v[0] == '-')
		return "must not start with '-'";
	for (const char *c = v; c; c = strchr(c, '/')) {
		size_t len;

		if (*c == '/')
			c++;
		len = strcspn(c, "/");
		if (!len)
			return "empty path component";
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return "'.' and '..' components are not allowed";
	}
	return NULL;
}

static bool disk_size(const char *s, const char *where, uint64_t *out,
		      struct err **errp)
{
	char what[32];
	size_t n = strlen(s);

	snprintf(what, sizeof(what), "%s size", where);
	if (!n || n > 24 || strspn(s, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					"abcdefghijklmnopqrstuvwxyz") != n)
		return err_set(errp, ERR_INVAL, "invalid %s '%s'", what, CLU_Q(s));
	return util_parse_size(s, 1, 1, DISK_SIZE_MAX, what, out, errp);
}

bool clu_guest_disk_parse(const char *s, const char *where,
			  struct clu_guest_disk *out, struct err **errp)
{
	static const char *const names[] = { "size", "cache", "replicate" };
	char buf[CLU_CONF_LINE_MAX + 1], *cur = buf, *k, *val, *colon;
	struct clu_guest_disk d = { .present = true, .replicate = true };
	unsigned seen = 0;
	const char *why;
	int i;

	if (!clu_conf_copy(buf, sizeof(buf), s))
		return err_set(errp, ERR_INVAL, "%s too long", where);
	clu_conf_next_opt(&cur, &k, &val);
	colon = strchr(val, ':');
	if (k || !colon)
		return err_set(errp, ERR_INVAL, "invalid %s '%s': expected "
			       "STORAGE:VOLUME first", where, CLU_Q(s));
	*colon = '\0';
	if (!clu_storage_id_valid(val))
		return err_set(errp, ERR_INVAL, "invalid storage ID '%s' in %s",
			       CLU_Q(val), where);
	strcpy(d.storage, val);
	why = volume_check(colon + 1);
	if (why)
		return err_set(errp, ERR_INVAL, "invalid volume '%s' in %s: %s",
			       CLU_Q(colon + 1), where, why);
	strcpy(d.volume, colon + 1);
	while (clu_conf_next_opt(&cur, &k, &val)) {
		if (!k)
			return err_set(errp, ERR_INVAL, "invalid option '%s' in %s "
				       "(expected KEY=VALUE)", CLU_Q(val), where);
		i = clu_conf_lookup(names, ARRAY_SIZE(names), k);
		if (i < 0)
			return err_set(errp, ERR_INVAL, "unknown option '%s' in %s",
				       CLU_Q(k), where);
		if (seen & (1u << i))
			return err_set(errp, ERR_INVAL, "duplicate option '%s' in %s",
				       k, where);
		seen |= 1u << i;
		if (i == 0 && !disk_size(val, where, &d.size, errp))
			return false;
		if (i == 1) {
			/* "default" is the absence of the option, not a value. */
			int c = clu_conf_lookup(clu_disk_cache_names + 1,
						CLU_CACHE_MAX - 1, val);
			if (c < 0)
				return err_set(errp, ERR_INVAL, "invalid cache mode '%s' "
					       "in %s (expected none, writeback, writethrough, "
					       "directsync or unsafe)", CLU_Q(val), where);
			d.cache = (enum clu_disk_cache)(c + 1);
		}
		if (i == 2 && strcmp(val, "0") && strcmp(val, "1"))
			return err_set(errp, ERR_INVAL, "invalid replicate '%s' in %s "
				       "(expected 0 or 1)", CLU_Q(val), where);
		if (i == 2)
			d.replicate = val[0] == '1';
	}
	*out = d;
	return true;
}

/* The largest binary unit that divides the size exactly. */
static void format_size(uint64_t size, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	int u = -1;

	while (u < 3 && size && !(size & 1023)) {
		size >>= 10;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64, size);
	else
		snprintf(buf, len, "%" PRIu64 "%c", size, units[u]);
}

bool clu_guest_disk_format(const struct clu_guest_disk *d, char *buf,
			   size_t len)
{
	size_t used = strlen(buf);
	char size[32] = "";
	int n;

	if (d->size)
		format_size(d->size, size, sizeof(size));
	n = snprintf(buf + used, len - used, "%.*s:%.*s%s%s%s%s%s",
		     CLU_STORAGE_ID_MAX, d->storage, CLU_VOLUME_MAX, d->volume,
		     d->size ? ",size=" : "", size,
		     d->cache != CLU_CACHE_DEFAULT ? ",cache=" : "",
		     d->cache != CLU_CACHE_DEFAULT && (unsigned)d->cache < CLU_CACHE_MAX ?
			     clu_disk_cache_names[d->cache] : "",
		     d->replicate ? "" : ",replicate=0");
	return n >= 0 && (size_t)n < len - used;
}
