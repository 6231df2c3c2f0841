/* test_conf_storage.c - storage.cfg: the golden sample and its formatted
 * form, sections ended by blank lines or headers, every kind of bad line
 * with its exact message, the limits (IDs, nodes, 256 storages), round
 * trips, and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu_conf.h"
#include "common/util.h"

#define DATA "tests/data/conf/"

static void test_golden(void **state)
{
	struct clu_storage_conf sc = { 0 }, back = { 0 };
	const struct clu_storage *s;
	struct err *e = NULL;
	char *text, *want;

	(void)state;
	assert_true(clu_conf_load_storage(DATA "storage.cfg", &sc, &e));
	assert_null(e);
	assert_int_equal(sc.n, 3);
	s = &sc.items[0];
	assert_int_equal(s->type, CLU_STORAGE_DIR);
	assert_string_equal(s->id, "local");
	assert_string_equal(s->path, "/var/lib/vz");
	assert_int_equal(s->content, (1u << CLU_CONTENT_ISO) | (1u << CLU_CONTENT_IMAGES) |
				     (1u << CLU_CONTENT_BACKUP));
	assert_false(s->shared);
	assert_false(s->disabled);
	assert_int_equal(s->n_nodes, 0);
	s = clu_storage_find(&sc, "shared_nfs");
	assert_ptr_equal(s, &sc.items[1]);
	assert_string_equal(s->path, "/mnt/pve/nfs-1/");
	assert_int_equal(s->content, (1u << CLU_CONTENT_IMAGES) | (1u << CLU_CONTENT_ROOTDIR));
	assert_int_equal(s->n_nodes, 3);
	assert_string_equal(s->nodes[0], "node1");
	assert_string_equal(s->nodes[1], "node-2");
	assert_string_equal(s->nodes[2], "n3");
	assert_true(s->shared);
	assert_true(s->disabled);
	s = clu_storage_find(&sc, "scratch-2");
	assert_non_null(s);
	assert_string_equal(s->path, "/srv/scratch");
	assert_false(s->disabled);
	assert_int_equal(s->content, 0);
	assert_null(clu_storage_find(&sc, "nope"));

	text = clu_storage_format(&sc, &e);
	assert_non_null(text);
	want = util_read_file(DATA "storage.cfg.formatted", 1 << 16, &e);
	assert_non_null(want);
	assert_string_equal(text, want);
	assert_true(clu_storage_parse(text, "x", &back, &e));
	assert_true(clu_storage_conf_equal(&sc, &back));
	back.items[2].shared = true;
	assert_false(clu_storage_conf_equal(&sc, &back));
	free(text);
	free(want);
	clu_storage_conf_free(&sc);
	clu_storage_conf_free(&back);
	clu_storage_conf_free(NULL);
}

static void test_empty(void **state)
{
	struct clu_storage_conf sc = { 0 };
	struct err *e = NULL;
	char *text;

	(void)state;
	assert_true(clu_storage_parse("", "storage.cfg", &sc, &e));
	assert_int_equal(sc.n, 0);
	assert_true(clu_storage_parse("# nothing\n\n\n", "storage.cfg", &sc, &e));
	assert_int_equal(sc.n, 0);
	text = clu_storage_format(&sc, &e);
	assert_string_equal(text, "");
	free(text);
	/* A header alone needs its path; the last section ends at EOF. */
	assert_true(clu_storage_parse("dir: a\n path /a", "storage.cfg", &sc, &e));
	assert_int_equal(sc.n, 1);
	clu_storage_conf_free(&sc);
	/* Headers back to back end the previous section. */
	assert_true(clu_storage_parse("dir: a\n path /a\ndir: b\n path /b\n", "s", &sc, &e));
	assert_int_equal(sc.n, 2);
	assert_string_equal(sc.items[1].path, "/b");
	clu_storage_conf_free(&sc);
	assert_null(e);
}

#define LONG40 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct { const char *text, *msg; } bad[] = {
	{ "dir: local\n\tpath /var/lib/vz\n\tpathh /x",
	  "storage.cfg:3: unknown option 'pathh' for storage 'local'" },
	{ "dir: local\n\tcontent images",
	  "storage.cfg:1: storage 'local' has no path" },
	{ "dir: local\n\tcontent images\n\ndir: b\n\tpath /b",
	  "storage.cfg:1: storage 'local' has no path" },
	{ "dir: a\n path /a\n\ndir: b\n nodes x\ndir: c\n path /c",
	  "storage.cfg:4: storage 'b' has no path" },
	{ "lvmthin: vg0\n\tpath /x", "storage.cfg:1: unsupported storage type 'lvmthin' "
	  "for storage 'vg0'" },
	{ "DIR: x", "storage.cfg:1: unsupported storage type 'DIR' for storage 'x'" },
	{ "dir: Local", "storage.cfg:1: invalid storage ID 'Local' (expected "
	  "[a-z][a-z0-9_-]*, at most 32 characters)" },
	{ "dir: 1st", "storage.cfg:1: invalid storage ID '1st' (expected "
	  "[a-z][a-z0-9_-]*, at most 32 characters)" },
	{ "dir: " LONG40, "storage.cfg:1: invalid storage ID '" LONG40 "' (expected "
	  "[a-z][a-z0-9_-]*, at most 32 characters)" },
	{ "dir: a;reboot", "storage.cfg:1: invalid storage ID 'a;reboot' (expected "
	  "[a-z][a-z0-9_-]*, at most 32 characters)" },
	{ "dir:", "storage.cfg:1: expected 'TYPE: ID', got 'dir: '" },
	{ "dir local", "storage.cfg:1: expected 'TYPE: ID', got 'dir local'" },
	{ "dir: a b", "storage.cfg:1: expected 'TYPE: ID', got 'dir: a b'" },
	{ "my dir: a", "storage.cfg:1: expected 'TYPE: ID', got 'my dir: a'" },
	{ "path /x", "storage.cfg:1: expected 'TYPE: ID', got 'path /x'" },
	{ "\tpath /x", "storage.cfg:1: option 'path /x' outside of a storage section" },
	{ "dir: a\n\tpath /a\n\n\tshared 1",
	  "storage.cfg:4: option 'shared 1' outside of a storage section" },
	{ "dir: a\n\tpath /a\ndir: a\n\tpath /b",
	  "storage.cfg:3: duplicate storage 'a' (first on line 1)" },
	{ "dir: a\n\tpath /a\n\tpath /b",
	  "storage.cfg:3: duplicate option 'path' for storage 'a'" },
	{ "dir: a\n\tpath", "storage.cfg:2: missing value for option 'path' of storage 'a'" },
	{ "dir: a\n\tpath var/lib", "storage.cfg:2: invalid path 'var/lib' for storage 'a': "
	  "not an absolute path" },
	{ "dir: a\n\tpath /var/../etc", "storage.cfg:2: invalid path '/var/../etc' for "
	  "storage 'a': '.' and '..' components are not allowed" },
	{ "dir: a\n\tpath /x/.", "storage.cfg:2: invalid path '/x/.' for "
	  "storage 'a': '.' and '..' components are not allowed" },
	{ "dir: a\n\tpath /my disk", "storage.cfg:2: invalid path '/my disk' for "
	  "storage 'a': only letters, digits and ._+/- are allowed" },
	{ "dir: a\n\tpath /x;rm -rf /", "storage.cfg:2: invalid path '/x;rm -rf /' for "
	  "storage 'a': only letters, digits and ._+/- are allowed" },
	{ "dir: a\n\tpath /$(reboot)", "storage.cfg:2: invalid path '/$(reboot)' for "
	  "storage 'a': only letters, digits and ._+/- are allowed" },
	{ "dir: a\n\tshared yes", "storage.cfg:2: invalid value 'yes' for option 'shared' "
	  "of storage 'a' (expected 0 or 1)" },
	{ "dir: a\n\tshared", "storage.cfg:2: missing value for option 'shared' of storage 'a'" },
	{ "dir: a\n\tdisable 2", "storage.cfg:2: invalid value '2' for option 'disable' "
	  "of storage 'a' (expected 0 or 1)" },
	{ "dir: a\n\tcontent images,vztmpl", "storage.cfg:2: unknown content type 'vztmpl' "
	  "for storage 'a'" },
	{ "dir: a\n\tcontent images,", "storage.cfg:2: unknown content type '' for storage 'a'" },
	{ "dir: a\n\tcontent iso,iso", "storage.cfg:2: duplicate content type 'iso' for "
	  "storage 'a'" },
	{ "dir: a\n\tcontent images iso", "storage.cfg:2: unknown content type 'images iso' "
	  "for storage 'a'" },
	{ "dir: a\n\tnodes n1,N2", "storage.cfg:2: invalid node name 'N2' for storage 'a'" },
	{ "dir: a\n\tnodes -n", "storage.cfg:2: invalid node name '-n' for storage 'a'" },
	{ "dir: a\n\tnodes n1,,n2", "storage.cfg:2: invalid node name '' for storage 'a'" },
	{ "dir: a\n\tnodes n1,n1", "storage.cfg:2: duplicate node 'n1' for storage 'a'" },
	{ "dir: a\n\tnodes a" LONG40 "bbbbbbbbbbbbbbbbbbbbbbb",
	  "storage.cfg:2: invalid node name 'a" LONG40 "bbbbbbbbbbbbbbbbbbbbbbb' for storage 'a'" },
	{ "dir: a\n\tPath /x", "storage.cfg:2: unknown option 'Path' for storage 'a'" },
	{ "dir: a\n\tpath /a\x7f", "storage.cfg:2: control character \\x7f in line" },
	{ "dir: a\n\tpath /\xe2\x82\xac", "storage.cfg:2: invalid path '/\\xe2\\x82\\xac' for "
	  "storage 'a': only letters, digits and ._+/- are allowed" },
};

static void test_bad_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct clu_storage_conf sc = { .n = 77 };
		struct err *e = NULL;

		if (clu_storage_parse(bad[i].text, "storage.cfg", &sc, &e))
			fail_msg("accepted: %s", bad[i].text);
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		if (strcmp(e->msg, bad[i].msg))
			fail_msg("for '%s'\n got: %s\nwant: %s", bad[i].text, e->msg, bad[i].msg);
		assert_int_equal(sc.n, 77);
		assert_null(sc.items);
		err_free(e);
	}
}

/* Builds a text with `n` storages, each with `nodes` nodes. */
static char *many(int n, int nodes)
{
	size_t cap = (size_t)n * (64 + (size_t)nodes * 8) + 64;
	char *s = malloc(cap), *p = s;

	for (int i = 0; i < n; i++) {
		p += sprintf(p, "dir: s%d\n\tpath /d/%d\n", i, i);
		if (nodes) {
			p += sprintf(p, "\tnodes ");
			for (int j = 0; j < nodes; j++)
				p += sprintf(p, "%sn%d", j ? "," : "", j);
			*p++ = '\n';
		}
	}
	*p = '\0';
	return s;
}

static void test_limits(void **state)
{
	struct clu_storage_conf sc = { 0 }, back = { 0 };
	struct err *e = NULL;
	char *text = many(CLU_STORAGE_MAX, CLU_STORAGE_NODES_MAX), *fmt;

	(void)state;
	assert_true(clu_storage_parse(text, "storage.cfg", &sc, &e));
	assert_int_equal(sc.n, 256);
	assert_int_equal(sc.items[255].n_nodes, 32);
	fmt = clu_storage_format(&sc, &e);
	assert_non_null(fmt);
	assert_true(clu_storage_parse(fmt, "x", &back, &e));
	assert_true(clu_storage_conf_equal(&sc, &back));
	free(fmt);
	free(text);
	clu_storage_conf_free(&sc);
	clu_storage_conf_free(&back);

	text = many(CLU_STORAGE_MAX + 1, 0);
	assert_false(clu_storage_parse(text, "storage.cfg", &sc, &e));
	assert_string_equal(e->msg, "storage.cfg:513: too many storages (at most 256)");
	err_free(e);
	e = NULL;
	free(text);
	text = many(1, CLU_STORAGE_NODES_MAX + 1);
	assert_false(clu_storage_parse(text, "storage.cfg", &sc, &e));
	assert_string_equal(e->msg, "storage.cfg:3: too many nodes for storage 's0' (at most 32)");
	err_free(e);
	free(text);

	/* IDs: 32 characters are fine, node names 63. */
	assert_true(clu_storage_id_valid("a234567890123456789012345678901_"));
	assert_false(clu_storage_id_valid("a234567890123456789012345678901_3"));
	assert_false(clu_storage_id_valid(""));
	assert_true(clu_node_name_valid("0" LONG40 "1234567890123456789012"));
	assert_false(clu_node_name_valid("0" LONG40 "12345678901234567890123"));
}

static void test_round_trip(void **state)
{
	struct clu_storage_conf sc = { 0 };
	struct clu_storage items[2];
	struct err *e = NULL;
	char *text;

	(void)state;
	memset(items, 0, sizeof(items));
	strcpy(items[0].id, "x");
	strcpy(items[0].path, "/");
	items[0].content = (1u << CLU_CONTENT_MAX) - 1;
	items[0].disabled = true;
	strcpy(items[1].id, "y_-");
	strcpy(items[1].path, "/a+b/c-d_e.f");
	items[1].n_nodes = 2;
	strcpy(items[1].nodes[0], "z9");
	strcpy(items[1].nodes[1], "0a");
	sc.n = 2;
	sc.items = items;
	text = clu_storage_format(&sc, &e);
	assert_non_null(text);
	assert_string_equal(text, "dir: x\n\tpath /\n\tcontent images,rootdir,iso,backup\n"
			    "\tdisable\n\ndir: y_-\n\tpath /a+b/c-d_e.f\n\tnodes z9,0a\n");
	free(text);
	/* Values the parser would refuse cannot be formatted either. */
	strcpy(items[1].path, "relative");
	assert_null(clu_storage_format(&sc, &e));
	assert_string_equal(e->msg, "cannot format storage.cfg: (formatted storage.cfg):7: "
			    "invalid path 'relative' for storage 'y_-': not an absolute path");
	err_free(e);
	e = NULL;
	strcpy(items[1].path, "/ok");
	strcpy(items[1].id, "x");
	assert_null(clu_storage_format(&sc, &e));
	assert_non_null(strstr(e->msg, "duplicate storage 'x'"));
	err_free(e);
	e = NULL;
	strcpy(items[1].id, "y");
	items[1].content = 1u << CLU_CONTENT_MAX;
	assert_null(clu_storage_format(&sc, &e));
	assert_string_equal(e->msg, "cannot format storage.cfg: (formatted storage.cfg):8: "
			    "missing value for option 'content' of storage 'y'");
	err_free(e);
	e = NULL;
	items[1].content = (1u << CLU_CONTENT_MAX) | 1;
	assert_null(clu_storage_format(&sc, &e));
	assert_string_equal(e->msg, "cannot format storage.cfg: the values do not read back "
			    "the same");
	err_free(e);
}

static void test_hostile(void **state)
{
	static const char *const pieces[] = {
		"dir: ", "lvm: ", "local", "a", "\n", "\n\n", "\t", "  ", "path ", "/var",
		"/..", "shared ", "0", "1", "nodes ", "n1", ",", "content ", "images",
		"iso", "disable", "#", ":", "$(x)", "`", "\xff", "\r\n", "9999999999999999",
	};
	unsigned seed = 7;
	int ok = 0;

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		char text[600];
		size_t len = 0;
		struct clu_storage_conf sc = { 0 }, back = { 0 };
		struct err *e = NULL;

		for (int n = (int)((seed = seed * 1103515245 + 12345) >> 16) % 24; n >= 0; n--) {
			seed = seed * 1103515245 + 12345;
			if ((seed >> 16) % 10 == 0) {
				text[len++] = (char)(1 + (seed >> 20) % 255);
			} else {
				const char *p = pieces[(seed >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];
				memcpy(text + len, p, strlen(p));
				len += strlen(p);
			}
		}
		text[len] = '\0';
		if (clu_storage_parse(text, "fuzz.cfg", &sc, &e)) {
			char *fmt = clu_storage_format(&sc, &e);

			ok++;
			if (!fmt)
				fail_msg("format failed: %s", e->msg);
			assert_true(clu_storage_parse(fmt, "x", &back, &e));
			assert_true(clu_storage_conf_equal(&sc, &back));
			free(fmt);
			clu_storage_conf_free(&sc);
			clu_storage_conf_free(&back);
		} else {
			assert_int_equal(strncmp(e->msg, "fuzz.cfg:", 9), 0);
			assert_null(strchr(e->msg, '\n'));
			err_free(e);
		}
	}
	assert_true(ok > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests_name("conf_storage", tests, NULL, NULL);
}
