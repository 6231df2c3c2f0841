/*
 * test_place.c - drain placement (migrate/mig_place.c): largest guest
 * first to the node with the most memory left, the replication target
 * first when it has room, storages respected, reasons for what stays.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "migrate/mig.h"

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)

static const char *const shared_only[] = { "shared" };
static const char *const shared_local[] = { "shared", "local" };

static struct mig_place_node node(const char *name, uint64_t free, unsigned guests)
{
	return (struct mig_place_node){
		.name = name, .usable = true, .free = free, .guests = guests,
		.storages = shared_local, .nstorages = 2,
	};
}

static struct mig_place_guest guest(uint32_t vmid, uint64_t mem)
{
	return (struct mig_place_guest){ .vmid = vmid, .mem = mem, .to = -1 };
}

/* 1 GiB, 512, 512, 256 MiB over two equal nodes: the big one alone with
 * the smallest, the two 512s together (memory balanced). */
static void test_balanced_by_memory(void **state)
{
	struct mig_place_node n[] = { node("due", 8 * GiB, 0), node("tre", 8 * GiB, 0) };
	struct mig_place_guest g[] = { guest(143, 256 * MiB), guest(141, 512 * MiB),
				       guest(140, GiB), guest(142, 512 * MiB) };

	(void)state;
	mig_place(g, 4, n, 2);
	for (int i = 0; i < 4; i++)
		assert_int_equal(g[i].why, MIG_PLACE_OK);
	assert_int_equal(g[2].to, 0);  /* 140, largest, first: tie -> "due" */
	assert_int_equal(g[1].to, 1);  /* 141 -> tre (more left) */
	assert_int_equal(g[3].to, 1);  /* 142 -> tre (due has less left after 140) */
	assert_int_equal(g[0].to, 0);  /* 143 -> due */
}

/* Less memory left wins over guest count; on equal memory the node with
 * fewer guests (running already) wins. */
static void test_more_free_then_fewer_guests(void **state)
{
	struct mig_place_node a[] = { node("due", 4 * GiB, 0), node("tre", 6 * GiB, 9) };
	struct mig_place_node b[] = { node("due", 6 * GiB, 3), node("tre", 6 * GiB, 1) };
	struct mig_place_guest g1[] = { guest(100, GiB) }, g2[] = { guest(100, GiB) };

	(void)state;
	mig_place(g1, 1, a, 2);
	assert_int_equal(g1[0].to, 1);
	mig_place(g2, 1, b, 2);
	assert_int_equal(g2[0].to, 1);
}

/* The replication target takes its guest if it has room, even with less
 * memory left than another node; without room the guest goes elsewhere. */
static void test_replication_target_first(void **state)
{
	struct mig_place_node n[] = { node("due", 16 * GiB, 0), node("tre", 2 * GiB, 0) };
	struct mig_place_guest g[] = { guest(106, GiB), guest(107, 4 * GiB) };

	(void)state;
	g[0].prefer = "tre";
	g[1].prefer = "tre";
	mig_place(g, 2, n, 2);
	assert_int_equal(g[1].to, 0); /* 4 GiB does not fit tre: due */
	assert_int_equal(g[0].to, 1); /* 1 GiB fits tre: its replica is there */
}

/* No room anywhere: the guest stays with a reason; others still go. The
 * overhead per guest counts: a guest exactly as big as the free memory
 * does not fit. */
static void test_no_room(void **state)
{
	struct mig_place_node n[] = { node("due", 2 * GiB, 0) };
	struct mig_place_guest g[] = { guest(150, 2 * GiB), guest(151, GiB) };

	(void)state;
	mig_place(g, 2, n, 1);
	assert_int_equal(g[0].to, -1);
	assert_int_equal(g[0].why, MIG_PLACE_NO_ROOM);
	assert_int_equal(g[1].to, 0);
	assert_string_equal(mig_place_why_names[MIG_PLACE_NO_ROOM], "no node has the memory");
}

/* Each placed guest uses up memory: the third 1 GiB guest does not fit a
 * node with 2.2 GiB. */
static void test_memory_used_up(void **state)
{
	struct mig_place_node n[] = { node("due", 2 * GiB + 200 * MiB, 0) };
	struct mig_place_guest g[] = { guest(1, GiB), guest(2, GiB), guest(3, GiB) };

	(void)state;
	mig_place(g, 3, n, 1);
	assert_int_equal(g[0].to, 0);
	assert_int_equal(g[1].to, 0);
	assert_int_equal(g[2].to, -1);
}

/* Storages: a guest needing "local2" only goes where it is; none such is
 * MIG_PLACE_STORAGE, not "no room". */
static void test_storages(void **state)
{
	static const char *const need[] = { "local2" };
	static const char *const has[] = { "shared", "local2" };
	struct mig_place_node n[] = { node("due", 16 * GiB, 0), node("tre", GiB + 100 * MiB, 0) };
	struct mig_place_node only_due[] = { node("due", 16 * GiB, 0) };
	struct mig_place_guest g[] = { guest(160, GiB) }, h[] = { guest(161, GiB) };

	(void)state;
	n[1].storages = has;
	g[0].storages = need;
	g[0].nstorages = 1;
	mig_place(g, 1, n, 2);
	assert_int_equal(g[0].to, 1);
	only_due[0].storages = shared_only;
	only_due[0].nstorages = 1;
	h[0].storages = need;
	h[0].nstorages = 1;
	mig_place(h, 1, only_due, 1);
	assert_int_equal(h[0].why, MIG_PLACE_STORAGE);
}

/* Unusable nodes take nothing; a reason the caller set stays. */
static void test_unusable_and_preset(void **state)
{
	struct mig_place_node n[] = { node("due", 16 * GiB, 0) };
	struct mig_place_guest g[] = { guest(170, GiB), guest(171, GiB) };

	(void)state;
	g[1].why = MIG_PLACE_LOCAL_DISKS;
	mig_place(g, 2, n, 1);
	assert_int_equal(g[0].to, 0);
	assert_int_equal(g[1].to, -1);
	assert_int_equal(g[1].why, MIG_PLACE_LOCAL_DISKS);
	n[0].usable = false;
	g[0] = guest(170, GiB);
	mig_place(g, 1, n, 1);
	assert_int_equal(g[0].why, MIG_PLACE_NO_NODE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_balanced_by_memory),
		cmocka_unit_test(test_more_free_then_fewer_guests),
		cmocka_unit_test(test_replication_target_first),
		cmocka_unit_test(test_no_room),
		cmocka_unit_test(test_memory_used_up),
		cmocka_unit_test(test_storages),
		cmocka_unit_test(test_unusable_and_preset),
	};
	return cmocka_run_group_tests_name("mig_place", tests, NULL, NULL);
}
