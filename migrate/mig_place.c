/*
 * mig_place.c - where the guests of a node being drained go. Contract in
 * mig.h ("placement").
 *
 * Greedy, largest guest first: each goes to the allowed node with the most
 * memory left after what was already placed there (fewest guests on a
 * tie, then the name, so a plan is reproducible). A replicated guest goes
 * to its replication target if that node can take it at all: its disks
 * are there already, so only the delta moves. Largest first keeps the
 * big guests from being left without room by many small ones.
 */
#include "mig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const mig_place_why_names[MIG_PLACE_WHY_MAX] = {
	[MIG_PLACE_OK] = "ok",
	[MIG_PLACE_NO_ROOM] = "no node has the memory",
	[MIG_PLACE_NO_NODE] = "no node may take guests",
	[MIG_PLACE_LOCAL_DISKS] = "it has local disks (--with-local-disks moves them)",
	[MIG_PLACE_STORAGE] = "its storage is on no other allowed node",
};

static int by_size_desc(const void *a, const void *b, void *g)
{
	const struct mig_place_guest *ga = &((const struct mig_place_guest *)g)[*(const unsigned *)a];
	const struct mig_place_guest *gb = &((const struct mig_place_guest *)g)[*(const unsigned *)b];

	if (ga->mem != gb->mem)
		return ga->mem > gb->mem ? -1 : 1;
	return ga->vmid < gb->vmid ? -1 : ga->vmid > gb->vmid;
}

/* Whether node k suits guest g at all (memory aside). */
static bool allowed(const struct mig_place_guest *g, const struct mig_place_node *nd)
{
	if (!nd->usable)
		return false;
	for (unsigned s = 0; s < g->nstorages; s++) {
		bool there = false;

		for (unsigned t = 0; t < nd->nstorages && !there; t++)
			there = !strcmp(g->storages[s], nd->storages[t]);
		if (!there)
			return false;
	}
	return true;
}

static bool fits(const struct mig_place_guest *g, const struct mig_place_node *nd,
		 uint64_t used)
{
	return nd->free >= used && nd->free - used >= g->mem + MIG_PLACE_OVERHEAD;
}

/* Better of two candidate nodes for the next guest: more memory left,
 * then fewer guests, then the smaller name. */
static bool better(const struct mig_place_node *a, uint64_t a_used, unsigned a_n,
		   const struct mig_place_node *b, uint64_t b_used, unsigned b_n)
{
	uint64_t la = a->free - a_used, lb = b->free - b_used;

	if (la != lb)
		return la > lb;
	if (a->guests + a_n != b->guests + b_n)
		return a->guests + a_n < b->guests + b_n;
	return strcmp(a->name, b->name) < 0;
}

void mig_place(struct mig_place_guest *g, unsigned ng, const struct mig_place_node *nodes,
	       unsigned nn)
{
	unsigned order[MIG_PLACE_MAX_GUESTS], n_to[MIG_PLACE_MAX_NODES] = { 0 };
	uint64_t used[MIG_PLACE_MAX_NODES] = { 0 };
	bool any_usable = false;

	if (ng > MIG_PLACE_MAX_GUESTS)
		ng = MIG_PLACE_MAX_GUESTS;
	if (nn > MIG_PLACE_MAX_NODES)
		nn = MIG_PLACE_MAX_NODES;
	for (unsigned k = 0; k < nn; k++)
		any_usable = any_usable || nodes[k].usable;
	for (unsigned i = 0; i < ng; i++)
		order[i] = i;
	qsort_r(order, ng, sizeof(order[0]), by_size_desc, g);
	for (unsigned o = 0; o < ng; o++) {
		struct mig_place_guest *x = &g[order[o]];
		int best = -1;
		bool storage_ok = false;

		x->to = -1;
		if (x->why != MIG_PLACE_OK)
			continue; /* decided by the caller (local disks) */
		if (!any_usable) {
			x->why = MIG_PLACE_NO_NODE;
			continue;
		}
		for (unsigned k = 0; k < nn; k++) {
			if (!allowed(x, &nodes[k]))
				continue;
			storage_ok = true;
			if (!fits(x, &nodes[k], used[k]))
				continue;
			/* The replication target wins if it can take the guest. */
			if (x->prefer && !strcmp(x->prefer, nodes[k].name)) {
				best = (int)k;
				break;
			}
			if (best < 0 || better(&nodes[k], used[k], n_to[k], &nodes[best], used[best],
					       n_to[best]))
				best = (int)k;
		}
		if (best < 0) {
			x->why = storage_ok ? MIG_PLACE_NO_ROOM : MIG_PLACE_STORAGE;
			continue;
		}
		x->to = best;
		used[best] += x->mem + MIG_PLACE_OVERHEAD;
		n_to[best]++;
	}
}
