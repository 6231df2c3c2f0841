/*
 * clu_conf_guest.c - a guest's config, qemu-server style: "key: value"
 * lines, '#' lines forming the description. Disks are read by
 * clu_conf_disk.c. See clu_conf.h for the keys and their ranges.
 */
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define DIGIT "0123456789"

enum key {
	K_NAME, K_MEMORY, K_CORES, K_SOCKETS, K_CPU, K_KERNEL, K_INITRD,
	K_APPEND, K_MACHINE, K_ONBOOT, K_LOCK,
	K_VIRTIO0, /* ... K_VIRTIO0 + CLU_GUEST_DISKS - 1 */
	K_MAX = K_VIRTIO0 + CLU_GUEST_DISKS
};
static const char *const key_names[K_VIRTIO0] = {
	[K_NAME] = "name", [K_MEMORY] = "memory", [K_CORES] = "cores",
	[K_SOCKETS] = "sockets", [K_CPU] = "cpu", [K_KERNEL] = "kernel",
	[K_INITRD] = "initrd", [K_APPEND] = "append", [K_MACHINE] = "machine",
	[K_ONBOOT] = "onboot", [K_LOCK] = "lock",
};

void clu_guest_conf_defaults(struct clu_guest_conf *g)
{
	memset(g, 0, sizeof(*g));
	g->memory = 512;
	g->cores = 1;
	g->sockets = 1;
}

/* "virtio0".."virtio15" as written, no leading zeros; else -1. */
static int disk_index(const char *key)
{
	const char *n = key + 6;

	if (strncmp(key, "virtio", 6) || !*n || strspn(n, DIGIT) != strlen(n) ||
	    strlen(n) > 2 || (n[0] == '0' && n[1]))
		return -1;
	return atoi(n) < CLU_GUEST_DISKS ? atoi(n) : -1;
}

static int key_index(const char *key)
{
	int i = clu_conf_lookup(key_names, K_VIRTIO0, key), d;

	if (i >= 0)
		return i;
	d = disk_index(key);
	return d < 0 ? -1 : K_VIRTIO0 + d;
}

static bool word_valid(const char *s, const char *first, const char *rest,
		       size_t max)
{
	size_t n = strlen(s);

	return n && n <= max && strchr(first, s[0]) && strspn(s, rest) == n;
}

/* pc, q35, pc-i440fx-X.Y or pc-q35-X.Y, optionally +pveN. */
static bool machine_valid(const char *s)
{
	static const char *const prefixes[] = { "pc-i440fx-", "pc-q35-" };
	const char *p = NULL;
	size_t n;

	if (!strcmp(s, "pc") || !strcmp(s, "q35"))
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (!strncmp(s, prefixes[i], strlen(prefixes[i])))
			p = s + strlen(prefixes[i]);
	for (int part = 0; p && part < 3; part++) {
		if (part == 1 && *p++ != '.')
			return false;
		if (part == 2) {
			if (!*p)
				return true;
			if (strncmp(p, "+pve", 4))
				return false;
			p += 4;
		}
		n = strspn(p, DIGIT);
		if (!n || n > 3)
			return false;
		p += n;
	}
	return p && !*p;
}

static bool set_path(const struct clu_conf_reader *r, const char *key,
		     const char *v, char *dst, struct err **errp)
{
	const char *why = clu_conf_path_check(v);

	if (why)
		return clu_conf_fail(r, errp, "invalid %s path '%s': %s", key, CLU_Q(v), why);
	strcpy(dst, v);
	return true;
}

static bool number(const struct clu_conf_reader *r, const char *key,
		   const char *v, uint64_t min, uint64_t max, uint64_t *out,
		   struct err **errp)
{
	struct err *sub = NULL;

	if (!clu_conf_u64(v, min, max, key, out, &sub))
		return clu_conf_fail_sub(r, errp, sub);
	return true;
}

static bool set_key(const struct clu_conf_reader *r, enum key k, const char *key,
		    const char *v, struct clu_guest_conf *g, struct err **errp)
{
	struct err *sub = NULL;
	uint64_t n = 0;

	switch (k) {
	case K_NAME:
		if (!word_valid(v, ALNUM, ALNUM ".-", CLU_GUEST_NAME_MAX))
			return clu_conf_fail(r, errp, "invalid name '%s' (expected "
					     "[A-Za-z0-9][A-Za-z0-9.-]*, at most %d characters)",
					     CLU_Q(v), CLU_GUEST_NAME_MAX);
		strcpy(g->name, v);
		return true;
	case K_MEMORY:
		return number(r, key, v, 16, 4194304, &g->memory, errp);
	case K_CORES:
	case K_SOCKETS:
		if (!number(r, key, v, 1, k == K_CORES ? 256 : 16, &n, errp))
			return false;
		*(k == K_CORES ? &g->cores : &g->sockets) = (unsigned)n;
		return true;
	case K_CPU:
		if (!word_valid(v, ALNUM "_.-", ALNUM "_.-", CLU_GUEST_WORD_MAX))
			return clu_conf_fail(r, errp, "invalid cpu '%s' (expected "
					     "[A-Za-z0-9_.-]+, at most %d characters)",
					     CLU_Q(v), CLU_GUEST_WORD_MAX);
		strcpy(g->cpu, v);
		return true;
	case K_KERNEL:
		return set_path(r, key, v, g->kernel, errp);
	case K_INITRD:
		return set_path(r, key, v, g->initrd, errp);
	case K_APPEND:
		for (const char *p = v; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				return clu_conf_fail(r, errp, "invalid append '%s': only "
						     "printable ASCII is allowed", CLU_Q(v));
		if (!clu_conf_copy(g->append, sizeof(g->append), v))
			return clu_conf_fail(r, errp, "append too long (more than %d bytes)",
					     CLU_GUEST_APPEND_MAX);
		return true;
	case K_MACHINE:
		if (!machine_valid(v))
			return clu_conf_fail(r, errp, "invalid machine '%s' (expected pc, "
					     "q35, pc-i440fx-X.Y or pc-q35-X.Y)", CLU_Q(v));
		strcpy(g->machine, v);
		return true;
	case K_ONBOOT:
		if (!clu_conf_bool(v, key, &g->onboot, &sub))
			return clu_conf_fail_sub(r, errp, sub);
		return true;
	case K_LOCK:
		if (!word_valid(v, "abcdefghijklmnopqrstuvwxyz",
				"abcdefghijklmnopqrstuvwxyz-", CLU_GUEST_LOCK_MAX))
			return clu_conf_fail(r, errp, "invalid lock '%s' (expected "
					     "[a-z][a-z-]*, at most %d characters)",
					     CLU_Q(v), CLU_GUEST_LOCK_MAX);
		strcpy(g->lock, v);
		return true;
	default:
		if (!clu_guest_disk_parse(v, key, &g->disks[k - K_VIRTIO0], &sub))
			return clu_conf_fail_sub(r, errp, sub);
		return true;
	}
}

/* Appends one comment line (what follows '#') to the description. */
static bool add_description(const struct clu_conf_reader *r, const char *text,
			    size_t *lines, struct clu_guest_conf *g,
			    struct err **errp)
{
	size_t used = strlen(g->description), n = strlen(text);

	if (used + (*lines ? 1 : 0) + n > CLU_GUEST_DESC_MAX)
		return clu_conf_fail(r, errp, "description too long (more than %d bytes)",
				     CLU_GUEST_DESC_MAX);
	if ((*lines)++)
		g->description[used++] = '\n';
	memcpy(g->description + used, text, n + 1);
	return true;
}

static bool parse_into(struct clu_conf_reader *r, struct clu_guest_conf *g,
		       struct err **errp)
{
	size_t first_seen[K_MAX] = { 0 }, desc_lines = 0;
	int rc;

	while ((rc = clu_conf_reader_next(r, errp)) > 0) {
		char *line = r->buf + strspn(r->buf, " \t"), *key, *value;
		int k;

		if (*line == '#') {
			/* Kept verbatim, trailing blanks included. */
			if (!add_description(r, line + 1, &desc_lines, g, errp))
				return false;
			continue;
		}
		line = clu_conf_trim(line);
		if (!*line)
			continue;
		if (!clu_conf_split_kv(r, line, &key, &value, errp))
			return false;
		k = key_index(key);
		if (k < 0)
			return clu_conf_fail(r, errp, "unknown key '%s'", CLU_Q(key));
		if (first_seen[k])
			return clu_conf_fail(r, errp, "duplicate key '%s' (first on line %zu)",
					     key, first_seen[k]);
		first_seen[k] = r->line;
		if (!set_key(r, (enum key)k, key, value, g, errp))
			return false;
	}
	return rc == 0;
}

bool clu_guest_parse(const char *text, const char *file,
		     struct clu_guest_conf *out, struct err **errp)
{
	_cleanup_free_ struct clu_guest_conf *g = malloc(sizeof(*g));
	_cleanup_free_ struct clu_conf_reader *r = malloc(sizeof(*r));

	if (!g || !r)
		return err_set(errp, ERR_IO, "out of memory reading %s", file);
	clu_guest_conf_defaults(g);
	clu_conf_reader_init(r, text, file);
	if (!parse_into(r, g, errp))
		return false;
	*out = *g;
	return true;
}

bool clu_conf_load_guest(const char *path, struct clu_guest_conf *out,
			 struct err **errp)
{
	_cleanup_free_ char *text = clu_conf_read(path, errp);

	return text && clu_guest_parse(text, path, out, errp);
}

static bool disk_equal(const struct clu_guest_disk *a, const struct clu_guest_disk *b)
{
	if (a->present != b->present)
		return false;
	return !a->present ||
	       (!strcmp(a->storage, b->storage) && !strcmp(a->volume, b->volume) &&
		a->size == b->size && a->cache == b->cache &&
		a->replicate == b->replicate);
}

bool clu_guest_conf_equal(const struct clu_guest_conf *a,
			  const struct clu_guest_conf *b)
{
	for (int i = 0; i < CLU_GUEST_DISKS; i++)
		if (!disk_equal(&a->disks[i], &b->disks[i]))
			return false;
	return !strcmp(a->description, b->description) &&
	       !strcmp(a->name, b->name) && a->memory == b->memory &&
	       a->cores == b->cores && a->sockets == b->sockets &&
	       !strcmp(a->cpu, b->cpu) && !strcmp(a->kernel, b->kernel) &&
	       !strcmp(a->initrd, b->initrd) && !strcmp(a->append, b->append) &&
	       !strcmp(a->machine, b->machine) && a->onboot == b->onboot &&
	       !strcmp(a->lock, b->lock);
}

static void put(FILE *f, const char *key, const char *value, size_t max)
{
	if (value[0])
		fprintf(f, "%s: %.*s\n", key, (int)max, value);
}

static void write_text(FILE *f, const struct clu_guest_conf *g)
{
	struct clu_guest_conf d;
	const char *p = g->description;

	clu_guest_conf_defaults(&d);
	while (*p) {
		size_t n = strcspn(p, "\n");

		fprintf(f, "#%.*s\n", (int)n, p);
		p += n;
		if (*p == '\n' && !*++p)
			fputs("#\n", f); /* a trailing empty line */
	}
	put(f, "name", g->name, CLU_GUEST_NAME_MAX);
	if (g->memory != d.memory)
		fprintf(f, "memory: %" PRIu64 "\n", g->memory);
	if (g->cores != d.cores)
		fprintf(f, "cores: %u\n", g->cores);
	if (g->sockets != d.sockets)
		fprintf(f, "sockets: %u\n", g->sockets);
	put(f, "cpu", g->cpu, CLU_GUEST_WORD_MAX);
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		char buf[CLU_CONF_LINE_MAX] = "";

		if (!g->disks[i].present)
			continue;
		clu_guest_disk_format(&g->disks[i], buf, sizeof(buf));
		fprintf(f, "virtio%d: %s\n", i, buf);
	}
	put(f, "kernel", g->kernel, CLU_CONF_PATH_MAX);
	put(f, "initrd", g->initrd, CLU_CONF_PATH_MAX);
	put(f, "append", g->append, CLU_GUEST_APPEND_MAX);
	put(f, "machine", g->machine, CLU_GUEST_WORD_MAX);
	if (g->onboot)
		fputs("onboot: 1\n", f);
	put(f, "lock", g->lock, CLU_GUEST_LOCK_MAX);
}

char *clu_guest_format(const struct clu_guest_conf *g, struct err **errp)
{
	_cleanup_free_ struct clu_guest_conf *back = malloc(sizeof(*back));
	_cleanup_free_ char *text = NULL;
	struct err *sub = NULL;
	size_t len = 0;
	FILE *f = back ? open_memstream(&text, &len) : NULL;

	if (!f) {
		err_set(errp, ERR_IO, "out of memory formatting a guest config");
		return NULL;
	}
	write_text(f, g);
	if (fclose(f) != 0 || !text) {
		err_set(errp, ERR_IO, "out of memory formatting a guest config");
		return NULL;
	}
	/* Never hand out a file that would read back differently. */
	if (!clu_guest_parse(text, "(formatted guest config)", back, &sub)) {
		err_prefix(sub, "cannot format guest config");
		err_propagate(errp, &sub);
		return NULL;
	}
	if (!clu_guest_conf_equal(g, back)) {
		err_set(errp, ERR_INVAL, "cannot format guest config: "
			"the values do not read back the same");
		return NULL;
	}
	return TAKE_PTR(text);
}
