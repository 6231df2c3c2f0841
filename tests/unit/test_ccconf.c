/*
 * test_ccconf.c - corosync.conf model: Debian's and the pvecm chapter's
 * files parse and round-trip; a new cluster's file is exactly what we
 * expect; node edits refuse duplicates and mismatched links; every parse
 * error is one line naming file, line and value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/clu_ccconf.h"

/* Debian 12's /etc/corosync/corosync.conf, comments and all. */
static const char debian_conf[] =
	"# Please read the corosync.conf.5 manual page\n"
	"totem {\n"
	"\tversion: 2\n"
	"\n"
	"\t# Corosync itself works without a cluster name, but DLM needs one.\n"
	"\tcluster_name: debian\n"
	"\n"
	"\t# crypto works only with knet transport\n"
	"\tcrypto_cipher: none\n"
	"\tcrypto_hash: none\n"
	"}\n"
	"\n"
	"logging {\n"
	"\tfileline: off\n"
	"\tto_stderr: yes\n"
	"\tto_logfile: yes\n"
	"\tlogfile: /var/log/corosync/corosync.log\n"
	"\tto_syslog: yes\n"
	"\tdebug: off\n"
	"\t#timestamp: hires\n"
	"\tlogger_subsys {\n"
	"\t\tsubsys: QUORUM\n"
	"\t\tdebug: off\n"
	"\t}\n"
	"}\n"
	"\n"
	"quorum {\n"
	"\t# see also corosync.conf.5 and votequorum.5\n"
	"\tprovider: corosync_votequorum\n"
	"}\n"
	"\n"
	"nodelist {\n"
	"\tnode {\n"
	"\t\t# Hostname of the node\n"
	"\t\tname: node1\n"
	"\t\tnodeid: 1\n"
	"\t\tring0_addr: 127.0.0.1\n"
	"\t\t#ring1_addr: 192.168.1.1\n"
	"\t}\n"
	"\t# ...\n"
	"}\n";

/* The pvecm chapter's file after adding link 1 (CRLF line ends). */
static const char pvecm_conf[] =
	"logging {\r\n  debug: off\r\n  to_syslog: yes\r\n}\r\n\r\n"
	"nodelist {\r\n\r\n"
	"  node {\r\n    name: due\r\n    nodeid: 2\r\n    quorum_votes: 1\r\n"
	"    ring0_addr: 10.10.10.2\r\n    ring1_addr: 10.20.20.2\r\n  }\r\n\r\n"
	"  node {\r\n    name: tre\r\n    nodeid: 3\r\n    quorum_votes: 1\r\n"
	"    ring0_addr: 10.10.10.3\r\n    ring1_addr: 10.20.20.3\r\n  }\r\n\r\n"
	"  node {\r\n    name: uno\r\n    nodeid: 1\r\n    quorum_votes: 1\r\n"
	"    ring0_addr: 10.10.10.1\r\n    ring1_addr: 10.20.20.1\r\n  }\r\n\r\n"
	"}\r\n\r\n"
	"quorum {\r\n  provider: corosync_votequorum\r\n}\r\n\r\n"
	"totem {\r\n  cluster_name: testcluster\r\n  config_version: 4\r\n  ip_version: ipv4-6\r\n"
	"  secauth: on\r\n  version: 2\r\n  interface {\r\n    linknumber: 0\r\n  }\r\n"
	"  interface {\r\n    linknumber: 1\r\n    knet_link_priority: 20\r\n  }\r\n}\r\n";

static struct clu_ccconf *parse_ok(const char *text)
{
	struct err *e = NULL;
	struct clu_ccconf *c = clu_ccconf_parse(text, "t.conf", &e);

	if (!c)
		fail_msg("parse: %s", e->msg);
	return c;
}

/* text -> model -> text -> model: equal models, and formatting is stable. */
static void round_trip(const struct clu_ccconf *c)
{
	struct err *e = NULL;
	char *t1 = clu_ccconf_format(c, &e), *t2;
	struct clu_ccconf *back;

	if (!t1)
		fail_msg("format: %s", e->msg);
	back = parse_ok(t1);
	assert_true(clu_ccconf_equal(c, back));
	t2 = clu_ccconf_format(back, &e);
	assert_non_null(t2);
	assert_string_equal(t1, t2);
	free(t1);
	free(t2);
	clu_ccconf_free(back);
}

static void test_debian(void **state)
{
	struct clu_ccconf *c = parse_ok(debian_conf);

	(void)state;
	assert_string_equal(c->cluster_name, "debian");
	assert_int_equal(c->config_version, 0);
	assert_string_equal(c->crypto_cipher, "none");
	assert_string_equal(c->transport, "");
	assert_int_equal(c->nnodes, 1);
	assert_string_equal(c->nodes[0].name, "node1");
	assert_string_equal(c->nodes[0].addr[0], "127.0.0.1");
	assert_string_equal(c->nodes[0].addr[1], "");
	assert_false(c->nodes[0].has_votes);
	assert_string_equal(c->quorum_provider, "corosync_votequorum");
	/* logging is kept, with its logger_subsys */
	assert_int_equal(c->other.nsubs, 1);
	assert_string_equal(c->other.subs[0].name, "logging");
	assert_int_equal(c->other.subs[0].nitems, 6);
	assert_string_equal(c->other.subs[0].subs[0].items[0].value, "QUORUM");
	assert_int_equal(c->totem_extra.nitems, 1); /* version */
	round_trip(c);
	clu_ccconf_free(c);
}

static void test_pvecm(void **state)
{
	struct clu_ccconf *c = parse_ok(pvecm_conf);
	const struct clu_cc_iface *i1;

	(void)state;
	assert_string_equal(c->cluster_name, "testcluster");
	assert_int_equal(c->config_version, 4);
	assert_int_equal(c->nnodes, 3);
	assert_int_equal(clu_ccconf_links(c), 3);
	assert_int_equal(c->nifaces, 2);
	i1 = clu_ccconf_iface(c, 1);
	assert_non_null(i1);
	assert_int_equal(i1->priority, 20);
	assert_int_equal(clu_ccconf_iface(c, 0)->priority, -1);
	assert_null(clu_ccconf_iface(c, 2));
	assert_string_equal(clu_ccconf_find_node(c, "uno")->addr[1], "10.20.20.1");
	assert_int_equal(clu_ccconf_find_node(c, "tre")->votes, 3 - 2);
	round_trip(c);
	clu_ccconf_free(c);
}

static const char new_expected[] =
	"totem {\n"
	"  cluster_name: prod-central\n"
	"  config_version: 1\n"
	"  transport: knet\n"
	"  token: 1000\n"
	"  crypto_cipher: aes256\n"
	"  crypto_hash: sha256\n"
	"  version: 2\n"
	"  ip_version: ipv4-6\n"
	"  link_mode: passive\n"
	"  interface {\n"
	"    linknumber: 0\n"
	"    knet_link_priority: 15\n"
	"  }\n"
	"  interface {\n"
	"    linknumber: 1\n"
	"  }\n"
	"}\n"
	"\n"
	"nodelist {\n"
	"  node {\n"
	"    name: uno\n"
	"    nodeid: 1\n"
	"    quorum_votes: 1\n"
	"    ring0_addr: 10.99.1.1\n"
	"    ring1_addr: 10.99.2.1\n"
	"  }\n"
	"}\n"
	"\n"
	"quorum {\n"
	"  provider: corosync_votequorum\n"
	"}\n"
	"\n"
	"logging {\n"
	"  debug: off\n"
	"  to_syslog: yes\n"
	"  to_logfile: yes\n"
	"  logfile: /var/log/corosync/corosync.log\n"
	"  timestamp: on\n"
	"}\n";

static struct clu_cc_node mknode(const char *name, uint32_t id, const char *a0, const char *a1)
{
	struct clu_cc_node n;

	memset(&n, 0, sizeof(n));
	snprintf(n.name, sizeof(n.name), "%s", name);
	n.nodeid = id;
	n.has_votes = true;
	n.votes = 1;
	if (a0)
		snprintf(n.addr[0], sizeof(n.addr[0]), "%s", a0);
	if (a1)
		snprintf(n.addr[1], sizeof(n.addr[1]), "%s", a1);
	return n;
}

/* Adding must fail with an error containing `needle`, changing nothing. */
static void add_fails(struct clu_ccconf *c, struct clu_cc_node n, const char *needle)
{
	struct err *e = NULL;
	uint32_t id = 99;
	size_t before = c->nnodes;

	assert_false(clu_ccconf_add_node(c, &n, &id, &e));
	assert_non_null(e);
	if (!strstr(e->msg, needle))
		fail_msg("expected '%s' in '%s'", needle, e->msg);
	assert_int_equal(id, 99);
	assert_int_equal(c->nnodes, before);
	err_free(e);
}

static void test_new_and_edit(void **state)
{
	struct err *e = NULL;
	struct clu_ccconf *c = clu_ccconf_new("prod-central", 1000, &e);
	struct clu_cc_node n = mknode("uno", 0, "10.99.1.1", "10.99.2.1");
	uint32_t id = 0;
	char *text;

	(void)state;
	assert_non_null(c);
	assert_true(clu_ccconf_set_link(c, 0, 15, &e));
	assert_true(clu_ccconf_set_link(c, 1, -1, &e));
	assert_true(clu_ccconf_add_node(c, &n, &id, &e));
	assert_int_equal(id, 1);
	text = clu_ccconf_format(c, &e);
	assert_non_null(text);
	assert_string_equal(text, new_expected);
	free(text);

	/* next free nodeid; refusals name the clash */
	n = mknode("due", 0, "10.99.1.2", "10.99.2.2");
	assert_true(clu_ccconf_add_node(c, &n, &id, &e));
	assert_int_equal(id, 2);
	add_fails(c, mknode("due", 0, "10.99.1.9", "10.99.2.9"), "node name 'due' is already used (nodeid 2)");
	add_fails(c, mknode("tre", 2, "10.99.1.3", "10.99.2.3"), "nodeid 2 of node 'tre' is already used by node 'due'");
	add_fails(c, mknode("tre", 0, "10.99.1.1", "10.99.2.3"), "address '10.99.1.1' of node 'tre' is already used by node 'uno' (link 0)");
	add_fails(c, mknode("tre", 0, "10.99.1.3", NULL), "node 'tre' has link(s) 0 but the cluster uses link(s) 0,1");
	add_fails(c, mknode("tre", 0, NULL, NULL), "node 'tre' has no link address");
	add_fails(c, mknode("Tre", 0, "10.99.1.3", "10.99.2.3"), "invalid node name 'Tre'");
	add_fails(c, mknode("x;rm -rf /", 0, "10.99.1.3", "10.99.2.3"), "invalid node name 'x;rm -rf /'");
	add_fails(c, mknode("tre", 0, "10.99.1.3", "tre.example"), "invalid link 1 address 'tre.example'");
	add_fails(c, mknode("tre", 0, "127.0.0.1", "10.99.2.3"), "loopback");

	/* a gap in the ids is filled first */
	n = mknode("tre", 5, "10.99.1.3", "10.99.2.3");
	assert_true(clu_ccconf_add_node(c, &n, &id, &e));
	n = mknode("quattro", 0, "fd00::4", "10.99.2.4");
	assert_true(clu_ccconf_add_node(c, &n, &id, &e));
	assert_int_equal(id, 3);
	add_fails(c, mknode("cinque", 0, "fd00:0::4", "10.99.2.5"), "already used by node 'quattro'");
	clu_ccconf_bump(c);
	assert_int_equal(c->config_version, 2);
	round_trip(c);

	assert_true(clu_ccconf_remove_node(c, "due", &e));
	assert_null(clu_ccconf_find_node(c, "due"));
	assert_int_equal(c->nnodes, 3);
	assert_false(clu_ccconf_remove_node(c, "due", &e));
	assert_int_equal(e->code, ERR_NOTFOUND);
	assert_string_equal(e->msg, "unknown node 'due'");
	err_free(e);
	e = NULL;
	round_trip(c);
	clu_ccconf_free(c);

	assert_null(clu_ccconf_new("much-too-long-name", 0, &e));
	assert_string_equal(e->msg, "invalid cluster name 'much-too-long-name': 1 to 15 characters of A-Z, a-z, 0-9 and '-', not starting with '-'");
	err_free(e);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(clu_cc_cluster_name_valid("a"));
	assert_true(clu_cc_cluster_name_valid("Prod-2"));
	assert_true(clu_cc_cluster_name_valid("abcdefghijklmno"));
	assert_false(clu_cc_cluster_name_valid("abcdefghijklmnop"));
	assert_false(clu_cc_cluster_name_valid(""));
	assert_false(clu_cc_cluster_name_valid("-x"));
	assert_false(clu_cc_cluster_name_valid("a_b"));
	assert_false(clu_cc_cluster_name_valid("a b"));
	assert_true(clu_cc_node_name_valid("uno"));
	assert_true(clu_cc_node_name_valid("node-1"));
	assert_false(clu_cc_node_name_valid("Uno"));
	assert_false(clu_cc_node_name_valid("-uno"));
	assert_false(clu_cc_node_name_valid("uno-"));
	assert_false(clu_cc_node_name_valid("a.b"));
	assert_false(clu_cc_node_name_valid("a'b"));
	assert_null(clu_cc_addr_check("10.99.1.1"));
	assert_null(clu_cc_addr_check("fd00::1"));
	assert_string_equal(clu_cc_addr_check("10.99.1.300"), "not an IPv4 or IPv6 address");
	assert_string_equal(clu_cc_addr_check("uno"), "not an IPv4 or IPv6 address");
	assert_string_equal(clu_cc_addr_check("0.0.0.0"), "the unspecified address reaches no node");
	assert_string_equal(clu_cc_addr_check("::1"), "a loopback address cannot reach other nodes");
	assert_string_equal(clu_cc_addr_check("239.1.1.1"), "not a unicast address");
}

/* Each bad file gives exactly this one-line error. */
static void test_errors(void **state)
{
	static const struct { const char *text, *msg; } cases[] = {
		{ "", "t.conf: no totem section" },
		{ "totem {\n  version: 2\n}\n", "t.conf:1: totem section without cluster_name" },
		{ "totem {\n  cluster_name: a\n", "t.conf:1: section 'totem' is not closed" },
		{ "}\n", "t.conf:1: '}' without a section to close" },
		{ "version: 2\n", "t.conf:1: key 'version' outside any section" },
		{ "quorum { provider: corosync_votequorum }\n",
		  "t.conf:1: 'quorum { provider: corosync_votequorum }': '{' must end a line and '}' stand alone (one section or key per line)" },
		{ "totem {\n  cluster_name a\n}\n", "t.conf:2: expected 'key: value', 'name {' or '}', got 'cluster_name a'" },
		{ "tot em {\n}\n", "t.conf:1: invalid section name 'tot em'" },
		{ "totem {\n  clu$ter: x\n}\n", "t.conf:2: invalid key 'clu$ter'" },
		{ "totem {\n  cluster_name: a\n  cluster_name: b\n}\n", "t.conf:3: duplicate key 'cluster_name'" },
		{ "totem {\n  cluster_name: a\n  config_version: -1\n}\n",
		  "t.conf:3: invalid config_version '-1': must be 0 to 18446744073709551615" },
		{ "totem {\n  cluster_name: a\n  config_version: 18446744073709551616\n}\n",
		  "t.conf:3: invalid config_version '18446744073709551616': must be 0 to 18446744073709551615" },
		{ "totem {\n  cluster_name: a\n  token: 0\n}\n", "t.conf:3: invalid token '0': must be 1 to 4294967295" },
		{ "totem {\n  cluster_name: a\n  transport: tcp\n}\n",
		  "t.conf:3: invalid transport 'tcp': expected one of knet, udp, udpu" },
		{ "totem {\n  cluster_name: a\n  crypto_cipher: rot13\n}\n",
		  "t.conf:3: invalid crypto_cipher 'rot13': expected one of none, aes256, aes192, aes128" },
		{ "totem {\n  cluster_name: a\n  interface {\n    linknumber: 8\n  }\n}\n",
		  "t.conf:4: invalid linknumber '8': must be 0 to 7" },
		{ "totem {\n  cluster_name: a\n  interface {\n    knet_link_priority: 256\n  }\n}\n",
		  "t.conf:4: invalid knet_link_priority '256': must be 0 to 255" },
		{ "totem {\n  cluster_name: a\n  interface {\n  }\n  interface {\n    linknumber: 0\n  }\n}\n",
		  "t.conf:5: duplicate interface for link 0" },
		{ "totem {\n cluster_name: a\n}\ntotem {\n cluster_name: b\n}\n",
		  "t.conf:4: duplicate section 'totem' (first at line 1)" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    nodeid: 1\n    ring0_addr: 10.0.0.1\n  }\n}\n",
		  "t.conf:5: node without a name" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    name: x\n    ring0_addr: 10.0.0.1\n  }\n}\n",
		  "t.conf:5: node 'x' without a nodeid" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    name: x\n    nodeid: 1\n  }\n}\n",
		  "t.conf:5: node 'x' without a ring0_addr (or other ringN_addr)" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    name: x\n    nodeid: 0\n  }\n}\n",
		  "t.conf:7: invalid nodeid '0': must be 1 to 4294967295" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    name: x y\n  }\n}\n",
		  "t.conf:6: invalid node name 'x y': 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' and '-'" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  nodes {\n  }\n}\n",
		  "t.conf:5: unexpected section 'nodes' in nodelist (expected node)" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  name: x\n}\n", "t.conf:5: unexpected key 'name' in nodelist" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n"
		  "  node {\n    name: x\n    nodeid: 1\n    ring0_addr: 10.0.0.1\n  }\n"
		  "  node {\n    name: y\n    nodeid: 1\n    ring0_addr: 10.0.0.2\n  }\n}\n",
		  "t.conf:10: nodeid 1 of node 'y' is already used by node 'x'" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n"
		  "  node {\n    name: x\n    nodeid: 1\n    ring0_addr: 10.0.0.1\n  }\n"
		  "  node {\n    name: y\n    nodeid: 2\n    ring1_addr: 10.0.0.2\n  }\n}\n",
		  "t.conf:10: node 'y' has link(s) 1 but the cluster uses link(s) 0" },
		{ "totem {\n cluster_name: a\n}\nnodelist {\n  node {\n    name: x\n    nodeid: 1\n"
		  "    ring0_addr: 10.0.0.1\n    ring0_addr: 10.0.0.2\n  }\n}\n",
		  "t.conf:9: duplicate key 'ring0_addr'" },
		{ "totem {\n cluster_name: a\x01\n}\n", "t.conf:2: control character \\x01" },
		{ "totem {\n cluster_name: caf\xc3\xa9\n}\n",
		  "t.conf:2: value of 'cluster_name' holds a byte that is not printable ASCII: 'caf\\xc3\\xa9'" },
		{ "a {\nb {\nc {\nd {\ne {\nf {\ng {\nh {\ni {\n", "t.conf:9: sections nested deeper than 8" },
	};
	char longline[600];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct err *e = NULL;
		struct clu_ccconf *c = clu_ccconf_parse(cases[i].text, "t.conf", &e);

		if (c)
			fail_msg("case %zu parsed: %s", i, cases[i].text);
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		if (strcmp(e->msg, cases[i].msg))
			fail_msg("case %zu:\n  got  %s\n  want %s", i, e->msg, cases[i].msg);
		assert_null(strchr(e->msg, '\n'));
		err_free(e);
	}
	/* corosync reads 512-byte lines: a longer one would be split */
	snprintf(longline, sizeof(longline), "totem {\n  cluster_name: %0520d\n}\n", 7);
	{
		struct err *e = NULL;

		assert_null(clu_ccconf_parse(longline, "t.conf", &e));
		assert_string_equal(e->msg, "t.conf:2: line longer than 510 bytes");
		err_free(e);
	}
}

/* Kept keys survive edits; values keep inner spaces and '#'. */
static void test_kept(void **state)
{
	static const char text[] =
		"totem {\n  cluster_name: a\n  knet_pmtud_interval: 30\n  interface {\n"
		"    linknumber: 0\n    knet_transport: sctp\n  }\n}\n"
		"quorum {\n  provider: corosync_votequorum\n  two_node: 1\n  device {\n"
		"    model: net\n    net {\n      host: 10.0.0.9\n    }\n  }\n}\n"
		"resources {\n  note: a value # not a comment\n  empty:\n}\n";
	struct clu_ccconf *c = parse_ok(text);

	(void)state;
	assert_string_equal(c->totem_extra.items[0].key, "knet_pmtud_interval");
	assert_string_equal(c->ifaces[0].extra.items[0].value, "sctp");
	assert_string_equal(c->quorum_extra.subs[0].subs[0].items[0].value, "10.0.0.9");
	assert_string_equal(c->other.subs[0].items[0].value, "a value # not a comment");
	assert_string_equal(c->other.subs[0].items[1].value, "");
	round_trip(c);
	clu_ccconf_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_debian),
		cmocka_unit_test(test_pvecm),
		cmocka_unit_test(test_new_and_edit),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_kept),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
