/*
 * clu_corosync.c - vmmd's connections to corosync: CPG (ordered messages
 * and membership), quorum (quorate or not), votequorum (votes, expected
 * votes) and cmap (cluster name, config version, node names).
 *
 * Any error on a connection tears all of them down; the daemon reconnects
 * a second later, so a restarted corosync is picked up without restarting
 * vmmd. Corosync's cs_error_t is converted here, keeping its name.
 */
#include "clu_daemon.h"
#include "../common/log.h"
#include "../common/util.h"

#include <corosync/cmap.h>
#include <corosync/corotypes.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GROUP "vmmigrate"

static struct clu_daemon *the_daemon; /* corosync callbacks carry no pointer we own */

static const char *cs_str(cs_error_t e)
{
	switch (e) {
	case CS_OK: return "ok";
	case CS_ERR_LIBRARY: return "corosync is not running (CS_ERR_LIBRARY)";
	case CS_ERR_TRY_AGAIN: return "try again (CS_ERR_TRY_AGAIN)";
	case CS_ERR_ACCESS: return "access denied (CS_ERR_ACCESS)";
	case CS_ERR_NOT_EXIST: return "does not exist (CS_ERR_NOT_EXIST)";
	case CS_ERR_TOO_BIG: return "message too big (CS_ERR_TOO_BIG)";
	case CS_ERR_BAD_HANDLE: return "bad handle (CS_ERR_BAD_HANDLE)";
	case CS_ERR_INVALID_PARAM: return "invalid parameter (CS_ERR_INVALID_PARAM)";
	default: return "corosync error";
	}
}

static void on_deliver(cpg_handle_t h, const struct cpg_name *g, uint32_t nodeid, uint32_t pid,
		       void *msg, size_t len)
{
	(void)h;
	(void)g;
	clu_daemon_deliver(the_daemon, nodeid, pid, msg, len);
}

static void on_confchg(cpg_handle_t h, const struct cpg_name *g, const struct cpg_address *m,
		       size_t nm, const struct cpg_address *l, size_t nl,
		       const struct cpg_address *j, size_t nj)
{
	(void)h;
	(void)g;
	(void)l;
	(void)j;
	log_debug("cpg: membership now %zu (%zu left, %zu joined)", nm, nl, nj);
	clu_sync_confchg(the_daemon, m, nm);
}

static void on_quorum(quorum_handle_t h, uint32_t quorate, uint64_t ring_seq,
		      uint32_t n, uint32_t *view)
{
	(void)h;
	(void)ring_seq;
	clu_daemon_quorum(the_daemon, quorate != 0, view, n);
}

bool clu_cs_connect(struct clu_daemon *d, struct err **errp)
{
	cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = on_deliver,
		.cpg_confchg_fn = on_confchg,
	};
	quorum_callbacks_t qcb = { .quorum_notify_fn = on_quorum };
	votequorum_callbacks_t vcb = { 0 };
	struct cpg_name group;
	uint32_t qtype, quorate = 0;
	unsigned int nodeid = 0;
	cs_error_t r;

	the_daemon = d;
	r = cpg_model_initialize(&d->cpg, CPG_MODEL_V1, (cpg_model_data_t *)&model, NULL);
	if (r != CS_OK)
		return err_set(errp, ERR_IO, "cpg: %s", cs_str(r));
	r = quorum_initialize(&d->quorum, &qcb, &qtype);
	if (r != CS_OK) {
		cpg_finalize(d->cpg);
		return err_set(errp, ERR_IO, "quorum: %s", cs_str(r));
	}
	r = votequorum_initialize(&d->vq, &vcb);
	if (r != CS_OK) {
		cpg_finalize(d->cpg);
		quorum_finalize(d->quorum);
		return err_set(errp, ERR_IO, "votequorum: %s", cs_str(r));
	}
	/* Our node id is how the sync recognises its own announcement (and so
	 * whether it is the leader that must ship the store): without it a
	 * node would wait for itself forever. A corosync still starting says
	 * try again. */
	for (int i = 0; i < 100 && (r = cpg_local_get(d->cpg, &nodeid)) == CS_ERR_TRY_AGAIN; i++)
		usleep(10000);
	if (r != CS_OK || !nodeid) {
		cpg_finalize(d->cpg);
		quorum_finalize(d->quorum);
		votequorum_finalize(d->vq);
		return err_set(errp, ERR_IO, "cpg: no local node id (%s)", cs_str(r));
	}
	d->connected = true;
	d->nodeid = nodeid;
	d->pid = (uint32_t)getpid();
	cpg_fd_get(d->cpg, &d->cpg_fd);
	quorum_fd_get(d->quorum, &d->quorum_fd);
	votequorum_fd_get(d->vq, &d->vq_fd);
	quorum_trackstart(d->quorum, CS_TRACK_CHANGES | CS_TRACK_CURRENT);
	if (quorum_getquorate(d->quorum, (int *)&quorate) == CS_OK)
		d->quorate = quorate != 0;
	memset(&group, 0, sizeof(group));
	group.length = (uint32_t)strlen(GROUP);
	memcpy(group.value, GROUP, group.length);
	for (int i = 0; i < 100; i++) {
		r = cpg_join(d->cpg, &group);
		if (r != CS_ERR_TRY_AGAIN)
			break;
		usleep(10000);
	}
	if (r != CS_OK) {
		clu_cs_disconnect(d, "cpg_join failed");
		return err_set(errp, ERR_IO, "cpg_join: %s", cs_str(r));
	}
	if (!d->node[0] && !clu_cs_node_name(d, d->node, sizeof(d->node)))
		snprintf(d->node, sizeof(d->node), "node%u", d->nodeid);
	log_info("connected to corosync as node %u (%s), %s", d->nodeid, d->node,
		 d->quorate ? "quorate" : "not quorate");
	return true;
}

static void status_cmap_close(struct clu_daemon *d)
{
	if (d->cmap_open)
		cmap_finalize(d->cmap);
	d->cmap_open = false;
}

void clu_cs_disconnect(struct clu_daemon *d, const char *why)
{
	if (!d->connected)
		return;
	log_warn("lost corosync (%s); reads still work, writes wait for it", why);
	cpg_finalize(d->cpg);
	quorum_finalize(d->quorum);
	votequorum_finalize(d->vq);
	status_cmap_close(d);
	clu_sync_abort(d);
	d->connected = false;
	d->cpg_fd = d->quorum_fd = d->vq_fd = -1;
	d->quorate = false;
	d->nmembers = 0;
	d->reconnect_at = util_now_ms() + 1000;
	clu_daemon_set_state(d, CLU_D_DISCONNECTED);
}

bool clu_cs_dispatch(struct clu_daemon *d, int fd)
{
	cs_error_t r = CS_OK;

	if (!d->connected)
		return false;
	if (fd == d->cpg_fd)
		r = cpg_dispatch(d->cpg, CS_DISPATCH_ALL);
	else if (fd == d->quorum_fd)
		r = quorum_dispatch(d->quorum, CS_DISPATCH_ALL);
	else if (fd == d->vq_fd)
		r = votequorum_dispatch(d->vq, CS_DISPATCH_ALL);
	if (r != CS_OK && r != CS_ERR_TRY_AGAIN) {
		clu_cs_disconnect(d, cs_str(r));
		return false;
	}
	return true;
}

bool clu_cs_mcast(struct clu_daemon *d, struct json_object *msg, struct err **errp)
{
	size_t len;
	const char *text = json_object_to_json_string_length(msg, JSON_C_TO_STRING_PLAIN, &len);
	struct iovec iov = { .iov_base = (void *)text, .iov_len = len };
	int64_t deadline = util_now_ms() + 5000;
	cs_error_t r;

	if (!d->connected)
		return err_set(errp, ERR_IO, "not connected to corosync");
	/* CS_ERR_TRY_AGAIN is corosync's flow control: back off briefly. */
	while ((r = cpg_mcast_joined(d->cpg, CPG_TYPE_AGREED, &iov, 1)) == CS_ERR_TRY_AGAIN &&
	       util_now_ms() < deadline)
		usleep(1000);
	if (r != CS_OK)
		return err_set(errp, ERR_IO, "cpg_mcast_joined (%zu bytes): %s", len, cs_str(r));
	return true;
}

/* status's cmap handle, opened if need be; false if corosync refuses. */
static bool status_cmap(struct clu_daemon *d)
{
	if (!d->cmap_open && cmap_initialize(&d->cmap) == CS_OK)
		d->cmap_open = true;
	return d->cmap_open;
}

static void cmap_facts(struct clu_daemon *d, struct json_object *st)
{
	cmap_handle_t h = d->cmap;
	char *name = NULL;
	uint64_t ver = 0;
	cs_error_t r;

	r = cmap_get_string(h, "totem.cluster_name", &name);
	if (r == CS_ERR_LIBRARY || r == CS_ERR_BAD_HANDLE) {
		/* corosync went away under us: a new connection next time */
		status_cmap_close(d);
		return;
	}
	if (r == CS_OK && name) {
		json_object_object_add(st, "cluster_name", json_object_new_string(name));
		free(name);
	}
	if (cmap_get_uint64(h, "totem.config_version", &ver) == CS_OK)
		json_object_object_add(st, "config_version", json_object_new_uint64(ver));
	name = NULL;
	if (cmap_get_string(h, "totem.transport", &name) == CS_OK && name) {
		json_object_object_add(st, "transport", json_object_new_string(name));
		free(name);
	}
	name = NULL;
	if (cmap_get_string(h, "totem.crypto_cipher", &name) == CS_OK && name) {
		json_object_object_add(st, "secure_auth",
				       json_object_new_boolean(strcmp(name, "none") != 0));
		free(name);
	}
}

/* corosync's nodelist: name, id, votes and link addresses per node, with
 * whether corosync sees it (online) and whether its vmmd is joined. */
static void cmap_nodelist(struct clu_daemon *d, struct json_object *st)
{
	struct json_object *list = json_object_new_array();
	cmap_handle_t h = d->cmap;

	for (int i = 0; i < CLU_MAX_MEMBERS; i++) {
		struct json_object *n, *links;
		char key[64];
		uint32_t id, votes = 1;
		char *name = NULL;
		bool online = false, vmmd = false;

		snprintf(key, sizeof(key), "nodelist.node.%d.nodeid", i);
		if (cmap_get_uint32(h, key, &id) != CS_OK)
			continue;
		n = json_object_new_object();
		json_object_object_add(n, "nodeid", json_object_new_int64(id));
		snprintf(key, sizeof(key), "nodelist.node.%d.name", i);
		if (cmap_get_string(h, key, &name) == CS_OK && name) {
			json_object_object_add(n, "name", json_object_new_string(name));
			free(name);
		}
		snprintf(key, sizeof(key), "nodelist.node.%d.quorum_votes", i);
		cmap_get_uint32(h, key, &votes);
		json_object_object_add(n, "votes", json_object_new_int64(votes));
		links = json_object_new_array();
		for (int l = 0; l < 8; l++) {
			char *addr = NULL;

			snprintf(key, sizeof(key), "nodelist.node.%d.ring%d_addr", i, l);
			if (cmap_get_string(h, key, &addr) == CS_OK && addr) {
				struct json_object *lk = json_object_new_object();
				json_object_object_add(lk, "link", json_object_new_int(l));
				json_object_object_add(lk, "addr", json_object_new_string(addr));
				json_object_array_add(links, lk);
				free(addr);
			}
		}
		json_object_object_add(n, "links", links);
		for (unsigned v = 0; v < d->nview; v++)
			online |= d->view[v] == id;
		for (unsigned m = 0; m < d->nmembers; m++)
			vmmd |= d->members[m].nodeid == id;
		json_object_object_add(n, "online", json_object_new_boolean(online));
		json_object_object_add(n, "vmmd", json_object_new_boolean(vmmd));
		json_object_object_add(n, "local", json_object_new_boolean(id == d->nodeid));
		json_object_array_add(list, n);
	}
	json_object_object_add(st, "nodelist", list);
}

void clu_cs_status(struct clu_daemon *d, struct json_object *st)
{
	struct votequorum_info info;
	struct json_object *vq, *flags;

	if (!d->connected)
		return;
	if (status_cmap(d))
		cmap_facts(d, st);
	if (d->cmap_open)
		cmap_nodelist(d, st);
	memset(&info, 0, sizeof(info));
	if (votequorum_getinfo(d->vq, d->nodeid, &info) != CS_OK)
		return;
	vq = json_object_new_object();
	json_object_object_add(vq, "node_votes", json_object_new_int((int)info.node_votes));
	json_object_object_add(vq, "expected_votes", json_object_new_int((int)info.node_expected_votes));
	json_object_object_add(vq, "highest_expected", json_object_new_int((int)info.highest_expected));
	json_object_object_add(vq, "total_votes", json_object_new_int((int)info.total_votes));
	json_object_object_add(vq, "quorum", json_object_new_int((int)info.quorum));
	flags = json_object_new_array();
	if (info.flags & VOTEQUORUM_INFO_QUORATE)
		json_object_array_add(flags, json_object_new_string("Quorate"));
	if (info.flags & VOTEQUORUM_INFO_TWONODE)
		json_object_array_add(flags, json_object_new_string("2Node"));
	if (info.flags & VOTEQUORUM_INFO_WAIT_FOR_ALL)
		json_object_array_add(flags, json_object_new_string("WaitForAll"));
	if (info.flags & VOTEQUORUM_INFO_LAST_MAN_STANDING)
		json_object_array_add(flags, json_object_new_string("LastManStanding"));
	if (info.flags & VOTEQUORUM_INFO_AUTO_TIE_BREAKER)
		json_object_array_add(flags, json_object_new_string("AutoTieBreaker"));
	if (info.flags & VOTEQUORUM_INFO_QDEVICE_REGISTERED)
		json_object_array_add(flags, json_object_new_string("Qdevice"));
	json_object_object_add(vq, "flags", flags);
	json_object_object_add(st, "votequorum", vq);
}

bool clu_cs_set_expected(struct clu_daemon *d, unsigned votes, struct err **errp)
{
	cs_error_t r;

	if (!d->connected)
		return err_set(errp, ERR_STATE, "not connected to corosync");
	r = votequorum_setexpected(d->vq, votes);
	if (r != CS_OK)
		return err_set(errp, ERR_INVAL, "cannot set expected votes to %u: %s", votes,
			       cs_str(r));
	return true;
}

bool clu_cs_node_name(struct clu_daemon *d, char *out, size_t len)
{
	cmap_handle_t h;
	bool found = false;

	if (cmap_initialize(&h) != CS_OK)
		return false;
	for (int i = 0; i < CLU_MAX_MEMBERS && !found; i++) {
		char key[64];
		uint32_t id;
		char *name = NULL;

		snprintf(key, sizeof(key), "nodelist.node.%d.nodeid", i);
		if (cmap_get_uint32(h, key, &id) != CS_OK)
			continue;
		if (id != d->nodeid)
			continue;
		snprintf(key, sizeof(key), "nodelist.node.%d.name", i);
		if (cmap_get_string(h, key, &name) == CS_OK && name) {
			snprintf(out, len, "%s", name);
			found = true;
		}
		free(name);
	}
	cmap_finalize(h);
	return found;
}

struct json_object *clu_cs_node_links(struct clu_daemon *d)
{
	struct json_object *links = json_object_new_array();
	cmap_handle_t h;

	if (cmap_initialize(&h) != CS_OK)
		return links;
	for (int i = 0; i < CLU_MAX_MEMBERS; i++) {
		char key[64];
		uint32_t id;

		snprintf(key, sizeof(key), "nodelist.node.%d.nodeid", i);
		if (cmap_get_uint32(h, key, &id) != CS_OK || id != d->nodeid)
			continue;
		for (int l = 0; l < 8; l++) {
			char *addr = NULL;

			snprintf(key, sizeof(key), "nodelist.node.%d.ring%d_addr", i, l);
			if (cmap_get_string(h, key, &addr) == CS_OK && addr) {
				json_object_array_add(links, json_object_new_string(addr));
				free(addr);
			}
		}
	}
	cmap_finalize(h);
	return links;
}
