/*
 * ctl_mem.c - how much memory this node can still give a guest, for the
 * migration target's check and for drain's placement. Contract in ctl.h.
 *
 * Why not MemAvailable alone: a QEMU guest's RAM becomes resident only as
 * the guest touches it, so a node running freshly booted (or mostly idle)
 * guests looks empty while it has promised their whole RAM. We take the
 * smaller of what the kernel has available now and what is left of
 * MemTotal after the configured RAM of every guest running here and a
 * reserve for the host itself.
 */
#include "ctl.h"
#include "../migrate/mig_host.h"

#include <inttypes.h>
#include <string.h>

struct committed {
	const struct cli_ctl *x;
	uint32_t except;
	struct cli_node_mem *m;
};

static bool add_guest(uint32_t vmid, const struct clu_guest_rec *r, const struct err *bad,
		      void *opaque)
{
	struct committed *c = opaque;

	(void)bad;
	if (!r || vmid == c->except || strcmp(r->node, c->x->node) || !cli_ctl_running(vmid, NULL))
		return true;
	c->m->committed += r->conf.memory << 20;
	c->m->running++;
	return true;
}

bool cli_ctl_node_mem(struct cli_ctl *x, uint32_t except, struct cli_node_mem *m,
		      struct err **errp)
{
	struct committed c = { .x = x, .except = except, .m = m };
	uint64_t left;

	*m = (struct cli_node_mem){ 0 };
	if (!mig_host_mem_total(&m->total, errp) || !mig_host_mem_available(&m->available, errp) ||
	    !clu_guest_list(x->c, add_guest, &c, errp))
		return false;
	left = m->total > m->committed + CLI_NODE_MEM_RESERVE ?
		       m->total - m->committed - CLI_NODE_MEM_RESERVE : 0;
	m->free = left < m->available ? left : m->available;
	return true;
}
