/* test_conf_guest.c - guest configs: defaults, the golden sample and its
 * formatted form, the description (comment lines), disks and their
 * options, every kind of bad line with its exact message, round trips,
 * and hostile input. */
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

static struct clu_guest_conf g, back; /* large: keep them off the stack */

static void check_round_trip(const struct clu_guest_conf *c)
{
	struct err *e = NULL;
	char *text = clu_guest_format(c, &e);

	if (!text)
		fail_msg("format failed: %s", e->msg);
	if (!clu_guest_parse(text, "rt", &back, &e))
		fail_msg("re-parse failed: %s\n%s", e->msg, text);
	assert_true(clu_guest_conf_equal(c, &back));
	free(text);
}

static void test_defaults(void **state)
{
	struct clu_guest_conf d;
	struct err *e = NULL;
	char *text;

	(void)state;
	clu_guest_conf_defaults(&d);
	assert_int_equal(d.memory, 512);
	assert_int_equal(d.cores, 1);
	assert_int_equal(d.sockets, 1);
	assert_false(d.onboot);
	assert_string_equal(d.name, "");
	for (int i = 0; i < CLU_GUEST_DISKS; i++)
		assert_false(d.disks[i].present);
	assert_true(clu_guest_parse("\n  \n", "100.conf", &g, &e));
	assert_true(clu_guest_conf_equal(&g, &d));
	text = clu_guest_format(&d, &e);
	assert_string_equal(text, "");
	free(text);
	assert_true(clu_conf_load_guest(DATA "guest-min.conf", &g, &e));
	assert_int_equal(g.memory, 64);
	assert_null(e);
}

static void test_golden(void **state)
{
	struct err *e = NULL;
	char *text, *want;

	(void)state;
	assert_true(clu_conf_load_guest(DATA "guest-100.conf", &g, &e));
	assert_null(e);
	assert_string_equal(g.description, "Web server for example.org\n  owner: ops team\t\n"
			    "\n trailing note");
	assert_string_equal(g.name, "web1.example");
	assert_int_equal(g.memory, 2048);
	assert_int_equal(g.cores, 2);
	assert_int_equal(g.sockets, 2);
	assert_string_equal(g.cpu, "host");
	assert_true(g.disks[0].present);
	assert_string_equal(g.disks[0].storage, "local");
	assert_string_equal(g.disks[0].volume, "vm-100-disk-0");
	assert_int_equal(g.disks[0].size, 32ULL << 30);
	assert_int_equal(g.disks[0].cache, CLU_CACHE_NONE);
	assert_true(g.disks[0].replicate);
	assert_string_equal(g.disks[1].storage, "shared_nfs");
	assert_string_equal(g.disks[1].volume, "100/vm-100-disk-1.qcow2");
	assert_int_equal(g.disks[1].size, 0);
	assert_int_equal(g.disks[1].cache, CLU_CACHE_DEFAULT);
	assert_false(g.disks[1].replicate);
	for (int i = 2; i < 15; i++)
		assert_false(g.disks[i].present);
	assert_int_equal(g.disks[15].size, 1ULL << 30);
	assert_int_equal(g.disks[15].cache, CLU_CACHE_WRITEBACK);
	assert_string_equal(g.kernel, "/boot/vmlinuz-6.1");
	assert_string_equal(g.initrd, "/boot/initrd.img-6.1");
	assert_string_equal(g.append, "console=ttyS0 root=/dev/vda1 quiet \"x=a b\"");
	assert_string_equal(g.machine, "pc-q35-7.2+pve0");
	assert_true(g.onboot);
	assert_string_equal(g.lock, "migrate");

	text = clu_guest_format(&g, &e);
	assert_non_null(text);
	want = util_read_file(DATA "guest-100.conf.formatted", 1 << 16, &e);
	assert_non_null(want);
	assert_string_equal(text, want);
	free(text);
	free(want);
	check_round_trip(&g);
}

static void test_good_values(void **state)
{
	static const char *const ok[] = {
		"machine: pc", "machine: q35", "machine: pc-i440fx-7.2",
		"machine: pc-q35-10.0+pve12", "name: a", "name: A-1.b",
		"cpu: x86-64-v2-AES", "cpu: Skylake_Server.v4", "memory: 16",
		"memory: 4194304", "cores: 256", "sockets: 16", "onboot: 0",
		"lock: snapshot-delete", "kernel: /", "append: a  b\\c'\"$(x)",
		"virtio9: a:b", "virtio10: z-_:A.b+c/d-e_f", "virtio0: l:v,size=1",
		"virtio0: l:v,size=1024K", "virtio0: l:v,size=1024TiB", "virtio0: l:v,size=3m",
		"virtio0: l:v,cache=directsync", "virtio0: l:v,cache=unsafe,replicate=0",
		"virtio0: l:v,cache=writethrough",
		"virtio0: l:.hidden/..x/x..", "#", "#\n#", "##", "#\xc3\xa9t\xc3\xa9",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct err *e = NULL;

		if (!clu_guest_parse(ok[i], "100.conf", &g, &e))
			fail_msg("refused '%s': %s", ok[i], e->msg);
		check_round_trip(&g);
	}
	assert_true(clu_guest_parse("virtio0: l:v,size=1024K", "x", &g, NULL));
	assert_int_equal(g.disks[0].size, 1ULL << 20);
	assert_true(clu_guest_parse("#\n#", "x", &g, NULL));
	assert_string_equal(g.description, "\n");
}

#define C64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const struct { const char *text, *msg; } bad[] = {
	{ "name: -web", "100.conf:1: invalid name '-web' (expected "
	  "[A-Za-z0-9][A-Za-z0-9.-]*, at most 63 characters)" },
	{ "name: web_1", "100.conf:1: invalid name 'web_1' (expected "
	  "[A-Za-z0-9][A-Za-z0-9.-]*, at most 63 characters)" },
	{ "name: " C64, "100.conf:1: invalid name '" C64 "' (expected "
	  "[A-Za-z0-9][A-Za-z0-9.-]*, at most 63 characters)" },
	{ "name: a;reboot", "100.conf:1: invalid name 'a;reboot' (expected "
	  "[A-Za-z0-9][A-Za-z0-9.-]*, at most 63 characters)" },
	{ "memory: 15", "100.conf:1: invalid memory '15': must be between 16 and 4194304" },
	{ "memory: 4194305", "100.conf:1: invalid memory '4194305': must be between 16 and 4194304" },
	{ "memory: 2G", "100.conf:1: invalid memory '2G': not a number" },
	{ "memory: 184467440737095516160",
	  "100.conf:1: invalid memory '184467440737095516160': must be between 16 and 4194304" },
	{ "cores: 0", "100.conf:1: invalid cores '0': must be between 1 and 256" },
	{ "cores: 257", "100.conf:1: invalid cores '257': must be between 1 and 256" },
	{ "sockets: 17", "100.conf:1: invalid sockets '17': must be between 1 and 16" },
	{ "cpu: host,flags=+aes", "100.conf:1: invalid cpu 'host,flags=+aes' (expected "
	  "[A-Za-z0-9_.-]+, at most 63 characters)" },
	{ "cpu: $(x)", "100.conf:1: invalid cpu '$(x)' (expected "
	  "[A-Za-z0-9_.-]+, at most 63 characters)" },
	{ "virtio16: local:x", "100.conf:1: unknown key 'virtio16'" },
	{ "virtio01: local:x", "100.conf:1: unknown key 'virtio01'" },
	{ "virtio: local:x", "100.conf:1: unknown key 'virtio'" },
	{ "scsi0: local:x", "100.conf:1: unknown key 'scsi0'" },
	{ "net0: virtio=AA:BB:CC:DD:EE:FF", "100.conf:1: unknown key 'net0'" },
	{ "[snapshot1]", "100.conf:1: expected 'key: value', got '[snapshot1]'" },
	{ "virtio0: local", "100.conf:1: invalid virtio0 'local': expected STORAGE:VOLUME first" },
	{ "virtio0: size=1G", "100.conf:1: invalid virtio0 'size=1G': expected "
	  "STORAGE:VOLUME first" },
	{ "virtio0: file=local:x", "100.conf:1: invalid virtio0 'file=local:x': expected "
	  "STORAGE:VOLUME first" },
	{ "virtio0: Local:x", "100.conf:1: invalid storage ID 'Local' in virtio0" },
	{ "virtio0: :x", "100.conf:1: invalid storage ID '' in virtio0" },
	{ "virtio0: local:", "100.conf:1: invalid volume '' in virtio0: empty volume name" },
	{ "virtio3: local:/etc/passwd", "100.conf:1: invalid volume '/etc/passwd' in virtio3: "
	  "absolute paths are not allowed" },
	{ "virtio0: local:../../etc/shadow", "100.conf:1: invalid volume '../../etc/shadow' in "
	  "virtio0: '.' and '..' components are not allowed" },
	{ "virtio0: local:a/../b", "100.conf:1: invalid volume 'a/../b' in "
	  "virtio0: '.' and '..' components are not allowed" },
	{ "virtio0: local:a/./b", "100.conf:1: invalid volume 'a/./b' in "
	  "virtio0: '.' and '..' components are not allowed" },
	{ "virtio0: local:a/..", "100.conf:1: invalid volume 'a/..' in "
	  "virtio0: '.' and '..' components are not allowed" },
	{ "virtio0: local:-o", "100.conf:1: invalid volume '-o' in virtio0: "
	  "must not start with '-'" },
	{ "virtio0: local:a//b", "100.conf:1: invalid volume 'a//b' in virtio0: "
	  "empty path component" },
	{ "virtio0: local:a/", "100.conf:1: invalid volume 'a/' in virtio0: "
	  "empty path component" },
	{ "virtio0: local:a b", "100.conf:1: invalid volume 'a b' in virtio0: "
	  "only letters, digits and _.+/- are allowed" },
	{ "virtio0: local:x;reboot", "100.conf:1: invalid volume 'x;reboot' in virtio0: "
	  "only letters, digits and _.+/- are allowed" },
	{ "virtio0: local:a:b", "100.conf:1: invalid volume 'a:b' in virtio0: "
	  "only letters, digits and _.+/- are allowed" },
	{ "virtio0: local:" C64 C64 C64 C64, "100.conf:1: invalid volume '" C64 "...' in "
	  "virtio0: volume name too long" },
	{ "virtio0: local:x,size=0", "100.conf:1: invalid virtio0 size '0': must be "
	  "between 1 B and 1.00 PiB" },
	{ "virtio0: local:x,size=2048T", "100.conf:1: invalid virtio0 size '2048T': must be "
	  "between 1 B and 1.00 PiB" },
	{ "virtio0: local:x,size=12x", "100.conf:1: invalid virtio0 size '12x': unknown unit" },
	{ "virtio0: local:x,size=-1", "100.conf:1: invalid virtio0 size '-1'" },
	{ "virtio0: local:x,size=", "100.conf:1: invalid virtio0 size ''" },
	{ "virtio0: local:x,size=99999999999T", "100.conf:1: invalid virtio0 size "
	  "'99999999999T': too large" },
	{ "virtio0: local:x,size=99999999999999999999", "100.conf:1: invalid virtio0 size "
	  "'99999999999999999999': not a size" },
	{ "virtio0: local:x,size=2P", "100.conf:1: invalid virtio0 size '2P': unknown unit" },
	{ "virtio0: local:x,size=1G;x", "100.conf:1: invalid virtio0 size '1G;x'" },
	{ "virtio0: local:x,cache=default", "100.conf:1: invalid cache mode 'default' in "
	  "virtio0 (expected none, writeback, writethrough, directsync or unsafe)" },
	{ "virtio0: local:x,cache=WriteBack", "100.conf:1: invalid cache mode 'WriteBack' in "
	  "virtio0 (expected none, writeback, writethrough, directsync or unsafe)" },
	{ "virtio0: local:x,replicate=2", "100.conf:1: invalid replicate '2' in virtio0 "
	  "(expected 0 or 1)" },
	{ "virtio0: local:x,size=1G,size=2G", "100.conf:1: duplicate option 'size' in virtio0" },
	{ "virtio0: local:x,iothread=1", "100.conf:1: unknown option 'iothread' in virtio0" },
	{ "virtio0: local:x,ssd", "100.conf:1: invalid option 'ssd' in virtio0 "
	  "(expected KEY=VALUE)" },
	{ "virtio0: local:x,", "100.conf:1: invalid option '' in virtio0 (expected KEY=VALUE)" },
	{ "kernel: vmlinuz", "100.conf:1: invalid kernel path 'vmlinuz': not an absolute path" },
	{ "initrd: /boot/../x", "100.conf:1: invalid initrd path '/boot/../x': '.' and '..' "
	  "components are not allowed" },
	{ "kernel: /boot/vmlinuz`id`", "100.conf:1: invalid kernel path '/boot/vmlinuz`id`': "
	  "only letters, digits and ._+/- are allowed" },
	{ "append: root=/dev/v\xc3\xa9", "100.conf:1: invalid append 'root=/dev/v\\xc3\\xa9': "
	  "only printable ASCII is allowed" },
	{ "append: a\tb", "100.conf:1: invalid append 'a\\x09b': only printable ASCII is allowed" },
	{ "machine: pc-i440fx-7", "100.conf:1: invalid machine 'pc-i440fx-7' (expected pc, "
	  "q35, pc-i440fx-X.Y or pc-q35-X.Y)" },
	{ "machine: pc-q35-7.2+pve", "100.conf:1: invalid machine 'pc-q35-7.2+pve' (expected "
	  "pc, q35, pc-i440fx-X.Y or pc-q35-X.Y)" },
	{ "machine: q35,viommu=intel", "100.conf:1: invalid machine 'q35,viommu=intel' "
	  "(expected pc, q35, pc-i440fx-X.Y or pc-q35-X.Y)" },
	{ "machine: pc-q35-1234.1", "100.conf:1: invalid machine 'pc-q35-1234.1' "
	  "(expected pc, q35, pc-i440fx-X.Y or pc-q35-X.Y)" },
	{ "machine: Q35", "100.conf:1: invalid machine 'Q35' "
	  "(expected pc, q35, pc-i440fx-X.Y or pc-q35-X.Y)" },
	{ "onboot: yes", "100.conf:1: invalid onboot 'yes': expected 0 or 1" },
	{ "lock: Migrate", "100.conf:1: invalid lock 'Migrate' (expected [a-z][a-z-]*, "
	  "at most 31 characters)" },
	{ "lock: mig rate", "100.conf:1: invalid lock 'mig rate' (expected [a-z][a-z-]*, "
	  "at most 31 characters)" },
	{ "#x\nname: a\n\nname: b", "100.conf:4: duplicate key 'name' (first on line 2)" },
	{ "virtio0: local:a\nvirtio0: local:b", "100.conf:2: duplicate key 'virtio0' "
	  "(first on line 1)" },
	{ "memory:", "100.conf:1: missing value for 'memory'" },
	{ "memory 512", "100.conf:1: expected 'key: value', got 'memory 512'" },
	{ "#ok\n#bad\x1b[2J", "100.conf:2: control character \\x1b in line" },
};

static void test_bad_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct err *e = NULL;

		memset(&g, 0x5a, sizeof(g));
		if (clu_guest_parse(bad[i].text, "100.conf", &g, &e))
			fail_msg("accepted: %s", bad[i].text);
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		if (strcmp(e->msg, bad[i].msg))
			fail_msg("for '%s'\n got: %s\nwant: %s", bad[i].text, e->msg, bad[i].msg);
		assert_int_equal(g.cores, 0x5a5a5a5a); /* untouched */
		err_free(e);
	}
}

static void test_lengths(void **state)
{
	char *s = malloc(20000), *p = s;
	struct err *e = NULL;

	(void)state;
	/* append: 2047 bytes fit, 2048 do not */
	p += sprintf(p, "append: ");
	memset(p, 'x', 2047);
	p[2047] = '\0';
	assert_true(clu_guest_parse(s, "100.conf", &g, &e));
	assert_int_equal(strlen(g.append), 2047);
	check_round_trip(&g);
	strcat(s, "y");
	assert_false(clu_guest_parse(s, "100.conf", &g, &e));
	assert_string_equal(e->msg, "100.conf:1: append too long (more than 2047 bytes)");
	err_free(e);
	e = NULL;
	/* description: 8192 bytes fit, one more does not */
	p = s;
	for (int i = 0; i < 8; i++) {
		*p++ = '#';
		memset(p, 'd', i < 7 ? 1023 : 1024);
		p += i < 7 ? 1023 : 1024;
		*p++ = '\n';
	}
	*p = '\0';
	assert_true(clu_guest_parse(s, "100.conf", &g, &e));
	assert_int_equal(strlen(g.description), 8192);
	check_round_trip(&g);
	strcpy(p, "#\n");
	assert_false(clu_guest_parse(s, "100.conf", &g, &e));
	assert_string_equal(e->msg, "100.conf:9: description too long (more than 8192 bytes)");
	err_free(e);
	e = NULL;
	/* a line past the limit */
	memset(s, '#', 5000);
	s[5000] = '\0';
	assert_false(clu_guest_parse(s, "100.conf", &g, &e));
	assert_string_equal(e->msg, "100.conf:1: line too long (more than 4096 bytes)");
	err_free(e);
	free(s);
}

static void test_round_trip(void **state)
{
	static const char *const descs[] = {
		"", "\n", "a\n", "\n\nb", " x ", "\t", "a\n\n", "#not a key: 1",
	};
	struct err *e = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
		clu_guest_conf_defaults(&g);
		strcpy(g.description, descs[i]);
		check_round_trip(&g);
	}
	clu_guest_conf_defaults(&g);
	g.memory = 16;
	g.sockets = 16;
	g.onboot = true;
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		g.disks[i].present = true;
		strcpy(g.disks[i].storage, "s");
		snprintf(g.disks[i].volume, sizeof(g.disks[i].volume), "v%d", i);
		g.disks[i].size = (uint64_t)i * 1536 + 1023 * (i % 2);
		g.disks[i].cache = (enum clu_disk_cache)(i % CLU_CACHE_MAX);
		g.disks[i].replicate = i % 3;
	}
	g.disks[15].size = 1ULL << 50;
	check_round_trip(&g);

	/* What the parser refuses, the formatter refuses. */
	clu_guest_conf_defaults(&g);
	strcpy(g.description, "ok\nbad\x01");
	assert_null(clu_guest_format(&g, &e));
	assert_string_equal(e->msg, "cannot format guest config: (formatted guest config):2: "
			    "control character \\x01 in line");
	err_free(e);
	e = NULL;
	clu_guest_conf_defaults(&g);
	g.disks[3].present = true;
	assert_null(clu_guest_format(&g, &e));
	assert_string_equal(e->msg, "cannot format guest config: (formatted guest config):1: "
			    "invalid storage ID '' in virtio3");
	err_free(e);
	e = NULL;
	clu_guest_conf_defaults(&g);
	strcpy(g.name, "x\nmemory: 64");
	assert_null(clu_guest_format(&g, &e));
	err_free(e);
	e = NULL;
	clu_guest_conf_defaults(&g);
	g.cores = 0;
	assert_null(clu_guest_format(&g, &e));
	assert_string_equal(e->msg, "cannot format guest config: (formatted guest config):1: "
			    "invalid cores '0': must be between 1 and 256");
	err_free(e);
	e = NULL;
	clu_guest_conf_defaults(&g);
	strcpy(g.name, "a "); /* the trailing blank would be lost */
	assert_null(clu_guest_format(&g, &e));
	assert_string_equal(e->msg, "cannot format guest config: the values do not read back "
			    "the same");
	err_free(e);
}

static void test_hostile(void **state)
{
	static const char *const pieces[] = {
		"name: ", "memory: ", "cores: ", "virtio0: ", "virtio15: ", "kernel: ",
		"append: ", "machine: ", "onboot: ", "lock: ", "cpu: ", "local", ":", "vol",
		",size=", ",cache=", "none", ",replicate=", "0", "1", "G", "/", "..", "\n",
		"#", " ", "\t", "pc-q35-", "7.2", "+pve1", "$(rm -rf /)", "\xff", "\r\n",
		"99999999999999999999", "-",
	};
	unsigned seed = 99;
	int ok = 0;

	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		char text[600];
		size_t len = 0;
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
		if (clu_guest_parse(text, "fuzz.conf", &g, &e)) {
			ok++;
			check_round_trip(&g);
		} else {
			assert_int_equal(strncmp(e->msg, "fuzz.conf:", 10), 0);
			assert_null(strchr(e->msg, '\n'));
			err_free(e);
		}
	}
	assert_true(ok > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_good_values),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests_name("conf_guest", tests, NULL, NULL);
}
