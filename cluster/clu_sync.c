/*
 * clu_sync.c - vmmd's sync exchange: after every CPG membership change
 * the members agree on the newest store and the others take a copy of it.
 * Contract in clu_daemon.h.
 *
 * A round, in agreed (CPG) order:
 *   confchg   every member: state syncing, forget the last round
 *   start     sent by the lowest member (nodeid, then pid) once it has
 *             seen the confchg; names the round "nodeid.pid.n"
 *   state     every member, on the start: (version, checksum) of its
 *             store, tagged with the round
 *   decide    at the last member's state, everyone alike: the leader is the
 *             highest version, then the lowest node id; done if all agree
 *   snap      the leader's store in chunks, tagged with the round; the
 *             members that differ replace their store with it at the last
 *
 * Why the start and the tags: CPG delivers a message in the configuration
 * that is current when corosync orders it, not the one its sender had seen.
 * A member slow to dispatch answers a confchg after later ones were already
 * ordered, so its announcement, or a leader's snapshot, can arrive in the
 * next configuration. Untagged, such a message counted in the wrong round:
 * a member took a stale snapshot's last chunk as the end of its round and
 * went synced with its old store, while a newcomer waited forever for a
 * snapshot nobody sent. Every state and chunk now answers one start, and a
 * start is delivered after the confchg it answers at every member (its
 * sender saw the confchg first); a start that is itself stale only begins a
 * round whose answers all postdate the confchg, so it is as good.
 *
 * Writes delivered while a member waits for the leader's snapshot are held
 * and applied after it: the leader dumped its store at the decision, so it
 * applies them after the dump, and so must the member.
 */
#include "clu_daemon.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_me(const struct clu_daemon *d, uint32_t nodeid, uint32_t pid)
{
	return nodeid == d->nodeid && pid == d->pid;
}

static bool member_lower(const struct clu_member *a, const struct clu_member *b)
{
	return a->nodeid < b->nodeid || (a->nodeid == b->nodeid && a->pid < b->pid);
}

static const struct clu_member *lowest_member(const struct clu_daemon *d)
{
	const struct clu_member *low = NULL;

	for (unsigned i = 0; i < d->nmembers; i++)
		if (!low || member_lower(&d->members[i], low))
			low = &d->members[i];
	return low;
}

static void drop_snapshot(struct clu_daemon *d)
{
	for (unsigned i = 0; i < d->nsnap; i++)
		json_object_put(d->snap[i]);
	d->nsnap = 0;
}

/* Writes held for a snapshot that will not come (a new round, a lost
 * corosync) are applied to the store we have, as every member that held
 * none did; the next round reconciles the stores by version. */
static void release_held(struct clu_daemon *d)
{
	unsigned n = d->nheld;

	d->nheld = 0; /* an op may end the round (a corosync.conf change) */
	for (unsigned i = 0; i < n; i++) {
		clu_daemon_apply_op(d, d->held[i].op, d->held[i].mine, d->held[i].req);
		json_object_put(d->held[i].op);
	}
}

/* Forgets the round: nothing answered so far counts for the next one. */
static void round_reset(struct clu_daemon *d)
{
	release_held(d);
	drop_snapshot(d);
	for (unsigned i = 0; i < d->nmembers; i++)
		d->members[i].have_state = false;
	d->want_snapshot = false;
	d->decided = false;
	d->round[0] = '\0';
	d->leader = d->leader_pid = 0;
}

static bool sync_send(struct clu_daemon *d, struct json_object *m, const char *what)
{
	struct err *e = NULL;

	if (clu_cs_mcast(d, m, &e))
		return true;
	log_error("sync: cannot send the %s: %s", what, e->msg);
	err_free(e);
	return false;
}

static void announce_state(struct clu_daemon *d)
{
	_cleanup_json_ struct json_object *m = json_object_new_object();
	char sum[32];

	snprintf(sum, sizeof(sum), "%016" PRIx64, clu_store_checksum(d->store));
	json_object_object_add(m, "t", json_object_new_string("state"));
	json_object_object_add(m, "round", json_object_new_string(d->round));
	json_object_object_add(m, "version", json_object_new_uint64(clu_store_version(d->store)));
	json_object_object_add(m, "sum", json_object_new_string(sum));
	json_object_object_add(m, "node", json_object_new_string(d->node));
	if (!sync_send(d, m, "store state"))
		clu_cs_disconnect(d, "announce failed");
}

void clu_sync_confchg(struct clu_daemon *d, const struct cpg_address *m, size_t n)
{
	const struct clu_member *low;

	round_reset(d);
	if (n > CLU_MAX_MEMBERS)
		n = CLU_MAX_MEMBERS;
	d->nmembers = (unsigned)n;
	for (size_t i = 0; i < n; i++)
		d->members[i] = (struct clu_member){ .nodeid = m[i].nodeid, .pid = m[i].pid };
	/* Sent writes not yet delivered come round in this configuration or
	 * not at all; new ones wait for the round to end. */
	clu_daemon_set_state(d, CLU_D_SYNCING);
	d->sync_round_ms = util_now_ms();
	low = lowest_member(d);
	if (low && is_me(d, low->nodeid, low->pid)) {
		_cleanup_json_ struct json_object *s = json_object_new_object();

		json_object_object_add(s, "t", json_object_new_string("start"));
		json_object_object_add(s, "n", json_object_new_uint64(++d->starts_sent));
		if (!sync_send(d, s, "round start"))
			clu_cs_disconnect(d, "round start failed");
	}
}

static void on_start(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, struct json_object *m)
{
	const struct clu_member *low = lowest_member(d);
	struct json_object *n;

	/* Only the lowest member of the current configuration starts rounds;
	 * a start from another one was sent for an older configuration. */
	if (!low || low->nodeid != nodeid || low->pid != pid ||
	    !json_object_object_get_ex(m, "n", &n))
		return;
	round_reset(d);
	snprintf(d->round, sizeof(d->round), "%" PRIu32 ".%" PRIu32 ".%" PRId64, nodeid, pid,
		 json_object_get_int64(n));
	clu_daemon_set_state(d, CLU_D_SYNCING);
	d->sync_round_ms = util_now_ms();
	log_debug("sync: round %s, %u member(s)", d->round, d->nmembers);
	announce_state(d);
}

static bool in_round(const struct clu_daemon *d, struct json_object *m)
{
	struct json_object *r;

	return d->state == CLU_D_SYNCING && d->round[0] &&
	       json_object_object_get_ex(m, "round", &r) &&
	       !strcmp(json_object_get_string(r), d->round);
}

static void sync_done(struct clu_daemon *d)
{
	d->syncs++;
	drop_snapshot(d);
	clu_daemon_set_state(d, CLU_D_SYNCED);
	clu_cc_follow(d); /* a node that was away may have missed a change */
	clu_daemon_register_node(d);
}

static bool snap_chunk_send(struct json_object *chunk, bool last, void *opaque)
{
	struct clu_daemon *d = opaque;
	_cleanup_json_ struct json_object *m = json_object_new_object();

	json_object_object_add(m, "t", json_object_new_string("snap"));
	json_object_object_add(m, "round", json_object_new_string(d->round));
	json_object_object_add(m, "last", json_object_new_boolean(last));
	json_object_object_add(m, "chunk", chunk);
	return sync_send(d, m, "store snapshot");
}

/* Every member announced: pick the leader; finish or ship the store. */
static void sync_decide(struct clu_daemon *d)
{
	struct clu_member *leader = NULL, *me = NULL;
	bool differ = false;
	struct err *e = NULL;

	if (d->decided)
		return;
	for (unsigned i = 0; i < d->nmembers; i++) {
		struct clu_member *m = &d->members[i];

		if (!m->have_state)
			return;
		if (!leader || m->version > leader->version ||
		    (m->version == leader->version && member_lower(m, leader)))
			leader = m;
		if (is_me(d, m->nodeid, m->pid))
			me = m;
	}
	if (!leader || !me)
		return;
	d->decided = true;
	for (unsigned i = 0; i < d->nmembers; i++)
		if (d->members[i].version != leader->version || d->members[i].sum != leader->sum)
			differ = true;
	d->leader = leader->nodeid;
	d->leader_pid = leader->pid;
	if (!differ) {
		sync_done(d);
		return;
	}
	d->want_snapshot = me->version != leader->version || me->sum != leader->sum;
	log_info("sync: node %u has the newest store (version %" PRIu64 ")%s", leader->nodeid,
		 leader->version, d->want_snapshot ? "; taking its copy" : "");
	if (me == leader && !clu_store_dump(d->store, CLU_SNAP_CHUNK_BYTES, snap_chunk_send, d, &e)) {
		log_error("sync: %s", e->msg);
		err_free(e);
		clu_cs_disconnect(d, "snapshot failed");
	}
}

static void on_state(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, struct json_object *m)
{
	struct json_object *v, *s;

	if (!in_round(d, m) || !json_object_object_get_ex(m, "version", &v) ||
	    !json_object_object_get_ex(m, "sum", &s))
		return;
	for (unsigned i = 0; i < d->nmembers; i++)
		if (d->members[i].nodeid == nodeid && d->members[i].pid == pid) {
			d->members[i].have_state = true;
			d->members[i].version = (uint64_t)json_object_get_int64(v);
			d->members[i].sum = strtoull(json_object_get_string(s), NULL, 16);
		}
	sync_decide(d);
}

static void on_snap(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, struct json_object *m)
{
	struct json_object *chunk, *last, *ver;
	struct err *e = NULL;

	if (!in_round(d, m) || !d->decided || nodeid != d->leader || pid != d->leader_pid ||
	    !json_object_object_get_ex(m, "chunk", &chunk) ||
	    !json_object_object_get_ex(m, "last", &last))
		return;
	if (d->want_snapshot) {
		if (d->nsnap == CLU_MAX_SNAP_CHUNKS) {
			clu_cs_disconnect(d, "store snapshot too large");
			return;
		}
		d->snap[d->nsnap++] = json_object_get(chunk);
	}
	if (!json_object_get_boolean(last))
		return;
	if (d->want_snapshot) {
		json_object_object_get_ex(chunk, "version", &ver);
		if (!clu_store_replace(d->store, (uint64_t)json_object_get_int64(ver), d->snap,
				       d->nsnap, &e)) {
			log_error("sync: cannot take the leader's store: %s", e->msg);
			err_free(e);
			clu_cs_disconnect(d, "snapshot apply failed");
			return;
		}
		log_info("sync: store replaced, now at version %" PRIu64, clu_store_version(d->store));
		release_held(d);
	}
	sync_done(d);
}

bool clu_sync_message(struct clu_daemon *d, uint32_t nodeid, uint32_t pid, const char *type,
		      struct json_object *m)
{
	if (!strcmp(type, "start"))
		on_start(d, nodeid, pid, m);
	else if (!strcmp(type, "state"))
		on_state(d, nodeid, pid, m);
	else if (!strcmp(type, "snap"))
		on_snap(d, nodeid, pid, m);
	else
		return false;
	return true;
}

bool clu_sync_hold(struct clu_daemon *d, struct json_object *op, bool mine, uint64_t req)
{
	if (d->state != CLU_D_SYNCING || !d->decided || !d->want_snapshot)
		return false;
	if (d->nheld == CLU_MAX_HELD) {
		/* Rejoining starts a new round that reconciles the stores; this
		 * op is applied after the held ones, in order. */
		clu_cs_disconnect(d, "too many writes during a sync");
		return false;
	}
	d->held[d->nheld++] = (struct clu_held){ .op = json_object_get(op), .mine = mine,
						 .req = req };
	return true;
}

void clu_sync_abort(struct clu_daemon *d)
{
	round_reset(d);
	d->nmembers = 0;
}
