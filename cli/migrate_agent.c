/*
 * migrate_agent.c - `vmmigrate _agent`: the target node's half of a
 * migration, run by the worker over SSH with the control channel on its
 * stdin/stdout (protocol in migrate/mig_agent.c, logs on stderr).
 *
 * Requests, in the order a worker sends them:
 *   hello                       -> node, pid
 *   facts {vmid,cidr,cpu,accel,memory,storages}
 *                               -> the checks only this node can make:
 *                                  its address in the migration network,
 *                                  free memory, CPU model, storages
 *   node-facts                  -> memory free for guests, usable storages
 *                                  (a drain's placement)
 *   cleanup {vmid}              -> removes what a dead earlier agent left
 *   start {vmid,mem_bytes,accel,bind,peer}
 *                               -> the guest's QEMU, paused, -incoming
 *                                  defer, and a filtered listener -> port
 *   listen {tune}               -> getfd + migrate-incoming tcp:fd:...
 *   wait-loaded, check, resume, quit   -> the mig_target ops
 *   recv-volume {storage,volume,size,bind,peer} -> port; then
 *   volume-wait                 -> receives one volume stream
 *   keep-volumes                -> the received volumes belong to the guest
 *   bye                         -> ends the session
 *
 * Whatever ends the session without `resume` (bye, EOF because the worker
 * died or its link broke) ends with the store as judge: if the guest's
 * record names this node, the worker died after moving the owner, so the
 * guest is resumed here; otherwise the target QEMU is stopped and the
 * received volumes removed. The guest never runs on two nodes: the source
 * resumes only while the record names the source.
 */
#include "ctl.h"
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../migrate/mig_host.h"
#include "../replicate/repl.h"
#include "../transport/tp_net.h"
#include "../transport/tp_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MARKER "agent.pid"       /* in the run dir while the target is ours */
#define FD_NAME "vmm-mig"        /* QEMU's name for our listening socket */
#define NBD_FD_NAME "vmm-nbd"    /* ... and for the NBD server's */
#define MEM_OVERHEAD (64ULL << 20) /* QEMU's own memory beside the guest's */

struct agent {
	struct cli_ctl x;
	struct mig_chan *ch;
	uint32_t vmid;
	struct mig_qemu *q;      /* the target QEMU, our child */
	int lfd;                 /* listener until handed to QEMU */
	bool committed;          /* resumed: QEMU runs on after us */
	char run_dir[512];
	char *vols[MIG_MAX_DISKS]; /* volumes received this session */
	unsigned nvols;
	bool vols_kept;
	int vol_lfd;             /* listener of the volume being received */
	char *vol_path;
	uint64_t vol_size;
	bool nbd;                /* the target QEMU serves its new disks over NBD */
};

static bool req_vmid(struct agent *ag, struct json_object *req, struct err **errp)
{
	int64_t v;

	if (!cli_mig_jint(req, "vmid", &v) || v < CLU_VMID_MIN || v > CLU_VMID_MAX)
		return err_set(errp, ERR_PROTO, "request without a valid vmid");
	if (ag->vmid && ag->vmid != (uint32_t)v)
		return err_set(errp, ERR_STATE, "this session is for guest %" PRIu32, ag->vmid);
	ag->vmid = (uint32_t)v;
	cli_ctl_run_dir(ag->vmid, ag->run_dir, sizeof(ag->run_dir));
	return true;
}

static void marker_path(const struct agent *ag, char *buf, size_t len)
{
	snprintf(buf, len, "%s/" MARKER, ag->run_dir);
}

/* Whether the store names this node as the guest's owner. */
static bool owned_here(struct agent *ag, bool *yes, struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));

	if (!r)
		return err_set(errp, ERR_IO, "out of memory");
	if (!clu_guest_read(ag->x.c, ag->vmid, r, errp))
		return false;
	*yes = !strcmp(r->node, ag->x.node);
	return true;
}

/* The marker says which agent owns the target and which volumes it made:
 * "PID\nPATH\n..." - what do_cleanup() removes after a dead agent. */
static bool write_marker(struct agent *ag, struct err **errp)
{
	char marker[600];
	_cleanup_free_ char *txt = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&txt, &len);

	if (!m)
		return err_set(errp, ERR_IO, "out of memory");
	fprintf(m, "%d\n", (int)getpid());
	for (unsigned i = 0; i < ag->nvols; i++)
		fprintf(m, "%s\n", ag->vols[i]);
	fclose(m);
	if (!util_mkdir_p(ag->run_dir, 0750, errp))
		return false;
	marker_path(ag, marker, sizeof(marker));
	return util_write_file(marker, txt, 0600, errp);
}

/* A new volume on this node: the storage must be usable here and the file
 * must not exist (never overwrite what another guest or a replica holds). */
static char *new_volume_path(struct agent *ag, const char *sid, const char *vol,
			     struct err **errp)
{
	struct cli_ctl_storages st;
	const struct clu_storage *s;
	struct clu_guest_disk d = { .present = true };
	_cleanup_free_ char *path = NULL, *dir = NULL;
	struct stat sb;

	if (!cli_ctl_storages_read(&ag->x, &st, errp))
		return NULL;
	snprintf(d.storage, sizeof(d.storage), "%s", sid);
	snprintf(d.volume, sizeof(d.volume), "%s", vol);
	s = cli_ctl_storage_usable(&ag->x, &st, sid, errp);
	path = s ? cli_ctl_disk_path(&st, &d, errp) : NULL;
	cli_ctl_storages_free(&st);
	if (!path)
		return NULL;
	if (stat(path, &sb) == 0) {
		err_set(errp, ERR_CONFLICT, "volume %s:%s already exists on node %s (%s)", sid, vol,
			ag->x.node, path);
		return NULL;
	}
	dir = strdup(path);
	if (!dir) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	if (!util_mkdir_p(dirname(dir), 0750, errp))
		return NULL;
	return TAKE_PTR(path);
}

/* ---- facts ------------------------------------------------------------------------ */

static struct json_object *do_facts(struct agent *ag, struct json_object *req, struct err **errp)
{
	_cleanup_json_ struct json_object *rep = mig_chan_ok();
	const char *cidr = cli_mig_jstr(req, "cidr"), *cpu = cli_mig_jstr(req, "cpu"), *accel_s = cli_mig_jstr(req, "accel");
	struct json_object *stor;
	enum mig_accel accel = MIG_ACCEL_TCG;
	int64_t need = 0;
	uint64_t avail;
	bool maint;
	char addr[64], root[600], need_s[32], avail_s[32];

	if (!req_vmid(ag, req, errp))
		return NULL;
	if (!cli_ctl_in_maintenance(&ag->x, ag->x.node, &maint, errp))
		return NULL;
	if (maint) {
		err_set(errp, ERR_STATE, "node %s is in maintenance", ag->x.node);
		return NULL;
	}
	if (cidr) {
		if (!mig_host_addr_in(cidr, addr, sizeof(addr), errp)) {
			err_prefix(errp ? *errp : NULL, "node %s", ag->x.node);
			return NULL;
		}
		json_object_object_add(rep, "address", json_object_new_string(addr));
	}
	if (cli_mig_jint(req, "memory", &need) && need > 0) {
		struct cli_node_mem m;

		if (!cli_ctl_node_mem(&ag->x, ag->vmid, &m, errp))
			return NULL;
		avail = m.free;
		json_object_object_add(rep, "mem_available", json_object_new_uint64(avail));
		if (avail < (uint64_t)need + MEM_OVERHEAD) {
			char com_s[32];

			err_set(errp, ERR_STATE, "node %s has %s of memory free for guests (%u "
				"running there hold %s), guest %" PRIu32 " needs %s", ag->x.node,
				util_fmt_bytes(avail, avail_s, sizeof(avail_s)), m.running,
				util_fmt_bytes(m.committed, com_s, sizeof(com_s)), ag->vmid,
				util_fmt_bytes((uint64_t)need + MEM_OVERHEAD, need_s,
					       sizeof(need_s)));
			return NULL;
		}
	}
	if (accel_s && !mig_accel_parse(accel_s, &accel, errp))
		return NULL;
	if (cpu) {
		snprintf(root, sizeof(root), "%s/libvirt", cli_ctl_data_dir());
		if (!mig_host_cpu_check(cpu, accel, cli_mig_jstr(req, "cpu_xml"), root, errp)) {
			err_prefix(errp ? *errp : NULL, "node %s", ag->x.node);
			return NULL;
		}
	}
	if (json_object_object_get_ex(req, "storages", &stor) &&
	    json_object_is_type(stor, json_type_array)) {
		struct cli_ctl_storages st;
		bool ok = true;

		if (!cli_ctl_storages_read(&ag->x, &st, errp))
			return NULL;
		for (size_t i = 0; ok && i < json_object_array_length(stor); i++) {
			const char *id = json_object_get_string(json_object_array_get_idx(stor, i));

			ok = cli_ctl_storage_usable(&ag->x, &st, id ? id : "", errp) != NULL;
		}
		cli_ctl_storages_free(&st);
		if (!ok)
			return NULL;
	}
	return TAKE_PTR(rep);
}

/* What a drain's placement needs to know of this node: memory free for
 * guests (cli_ctl_node_mem) and the storages usable here. */
static struct json_object *do_node_facts(struct agent *ag, struct err **errp)
{
	_cleanup_json_ struct json_object *rep = mig_chan_ok();
	struct json_object *ids = json_object_new_array();
	struct cli_ctl_storages st;
	struct cli_node_mem m;

	json_object_object_add(rep, "storages", ids);
	if (!cli_ctl_node_mem(&ag->x, 0, &m, errp) || !cli_ctl_storages_read(&ag->x, &st, errp))
		return NULL;
	for (size_t i = 0; i < st.sc.n; i++) {
		struct err *e = NULL;

		if (cli_ctl_storage_usable(&ag->x, &st, st.sc.items[i].id, &e))
			json_object_array_add(ids, json_object_new_string(st.sc.items[i].id));
		err_free(e);
	}
	cli_ctl_storages_free(&st);
	json_object_object_add(rep, "node", json_object_new_string(ag->x.node));
	json_object_object_add(rep, "mem_total", json_object_new_uint64(m.total));
	json_object_object_add(rep, "mem_available", json_object_new_uint64(m.available));
	json_object_object_add(rep, "mem_committed", json_object_new_uint64(m.committed));
	json_object_object_add(rep, "mem_free", json_object_new_uint64(m.free));
	json_object_object_add(rep, "running", json_object_new_int((int)m.running));
	return TAKE_PTR(rep);
}

/* ---- leftovers of a dead agent ------------------------------------------------------ */

static struct json_object *do_cleanup(struct agent *ag, struct json_object *req,
				      struct err **errp)
{
	struct json_object *rep;
	char marker[600];
	_cleanup_free_ char *txt = NULL;
	const char *action = "none";
	uint64_t pid = 0;
	struct mig_qemu *q;
	bool mine = false;

	if (!req_vmid(ag, req, errp))
		return NULL;
	marker_path(ag, marker, sizeof(marker));
	txt = util_read_file(marker, 16384, NULL);
	if (txt) {
		char first[32];

		snprintf(first, sizeof(first), "%.*s", (int)strcspn(txt, "\n"), txt);
		util_parse_u64(first, 1, INT32_MAX, "pid", &pid, NULL);
	}
	if (pid && util_pid_alive((pid_t)pid) && (pid_t)pid != getpid()) {
		err_set(errp, ERR_STATE, "guest %" PRIu32 " is being migrated here by agent pid %"
			PRIu64, ag->vmid, pid);
		return NULL;
	}
	if (txt && cli_ctl_running(ag->vmid, NULL)) {
		if (!owned_here(ag, &mine, errp))
			return NULL;
		q = mig_qemu_attach(ag->run_dir, 5000, errp);
		if (!q)
			return NULL;
		if (mine) {
			tp_qmp_run(q->qmp, "nbd-server-stop", NULL, 5000, NULL); /* if it serves */
			if (!mig_target_local_resume(q->qmp, errp)) {
				mig_qemu_release(q);
				return NULL;
			}
			mig_qemu_release(q);
			action = "resumed";
		} else {
			if (!mig_qemu_stop(q, 10000, errp))
				return NULL;
			action = "stopped";
		}
		log_info("guest %" PRIu32 ": leftover target QEMU of a dead agent %s", ag->vmid,
			 action);
	}
	/* Volumes the dead agent made for a guest that is not ours go too. */
	if (txt && !cli_ctl_running(ag->vmid, NULL)) {
		if (!owned_here(ag, &mine, errp))
			return NULL;
		for (char *line = strchr(txt, '\n'); line && !mine && line[1];) {
			char *next = strchr(line + 1, '\n');

			if (next)
				*next = '\0';
			if (line[1] == '/' && unlink(line + 1) == 0)
				log_info("guest %" PRIu32 ": removed volume %s of a dead agent",
					 ag->vmid, line + 1);
			line = next;
		}
	}
	/* Ours but not running (its QEMU died after the owner moved): the
	 * source may take the guest back and ask again; the marker keeps the
	 * list of volumes until the answer is final. */
	if (txt && !(mine && !cli_ctl_running(ag->vmid, NULL)))
		unlink(marker);
	/* A target QEMU killed outright leaves its sockets and pid file. */
	if (!cli_ctl_running(ag->vmid, NULL)) {
		static const char *const stale[] = { "qmp.sock", "cmd.sock", "qemu.pid" };
		char path[700];

		for (size_t i = 0; i < ARRAY_SIZE(stale); i++) {
			snprintf(path, sizeof(path), "%s/%s", ag->run_dir, stale[i]);
			unlink(path);
		}
	}
	rep = mig_chan_ok();
	json_object_object_add(rep, "action", json_object_new_string(action));
	json_object_object_add(rep, "running", json_object_new_boolean(cli_ctl_running(ag->vmid,
										  NULL)));
	return rep;
}

/* ---- the target QEMU ----------------------------------------------------------------- */

/* The local disks that move with a running guest (--with-local-disks):
 * each {drive, storage, target_storage, volume, size} gets a new sparse
 * volume of that size here, and the record the target QEMU is built from
 * points at it. `drive` is the disk's place among the guest's disks (the
 * launcher's drive<N>). */
static bool new_disks(struct agent *ag, struct clu_guest_rec *r, struct json_object *disks,
		      struct err **errp)
{
	size_t n = json_object_array_length(disks);

	/* Volumes received earlier in the session count too (ag->vols). */
	if (n > MIG_MAX_DISKS - ag->nvols)
		return err_set(errp, ERR_PROTO, "too many disks");
	for (size_t k = 0; k < n; k++) {
		struct json_object *d = json_object_array_get_idx(disks, k);
		const char *sid = cli_mig_jstr(d, "storage"), *tsid = cli_mig_jstr(d, "target_storage");
		const char *vol = cli_mig_jstr(d, "volume");
		int64_t drive = -1, size = 0;
		_cleanup_close_ int fd = -1;
		struct clu_guest_disk *gd = NULL;
		char *path;
		int ord = 0;

		if (!sid || !tsid || !vol || !cli_mig_jint(d, "drive", &drive) || !cli_mig_jint(d, "size", &size) ||
		    size <= 0)
			return err_set(errp, ERR_PROTO, "a disk needs drive, storage, "
				       "target_storage, volume and size");
		for (int i = 0; i < CLU_GUEST_DISKS && !gd; i++)
			if (r->conf.disks[i].present && ord++ == drive)
				gd = &r->conf.disks[i];
		if (!gd || strcmp(gd->storage, sid) || strcmp(gd->volume, vol))
			return err_set(errp, ERR_STATE, "guest %" PRIu32 " has no disk %s:%s as "
				       "drive %" PRId64 " (its config changed?)", ag->vmid, sid, vol,
				       drive);
		path = new_volume_path(ag, tsid, vol, errp);
		if (!path)
			return false;
		/* The mirror writes the guest's view: a qcow2 volume (by its
		 * name) is a new image of that virtual size. */
		if (util_volume_is_qcow2(path)) {
			if (!repl_vol_create_qcow2(path, (uint64_t)size, errp)) {
				free(path);
				return false;
			}
			ag->vols[ag->nvols++] = path;
			if (!write_marker(ag, errp))
				return false;
			snprintf(gd->storage, sizeof(gd->storage), "%s", tsid);
			continue;
		}
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			err_set_errno(errp, errno, "create volume '%s'", path);
			free(path);
			return false;
		}
		ag->vols[ag->nvols++] = path;
		if (!write_marker(ag, errp))
			return false;
		if (ftruncate(fd, size) < 0)
			return err_set_errno(errp, errno, "size volume '%s'", path);
		snprintf(gd->storage, sizeof(gd->storage), "%s", tsid);
	}
	return true;
}

/* The new disks, writable over NBD for the source's mirrors: one server on
 * a listener we bind (peer-filtered like the migration's), handed to QEMU,
 * one export per disk, named after its drive. */
static bool serve_disks(struct agent *ag, struct json_object *disks, const char *bind,
			const char *peer, struct json_object *rep, struct err **errp)
{
	struct json_object *args, *addr, *data, *names = json_object_new_array();
	_cleanup_close_ int lfd = -1;
	unsigned port = 0;

	json_object_object_add(rep, "exports", names);
	lfd = tp_net_listen(bind, peer, &port, errp);
	if (lfd < 0 || !tp_qmp_send_fd(ag->q->qmp, lfd, NBD_FD_NAME, 5000, errp))
		return false;
	args = json_object_new_object();
	addr = json_object_new_object();
	data = json_object_new_object();
	json_object_object_add(data, "str", json_object_new_string(NBD_FD_NAME));
	json_object_object_add(addr, "type", json_object_new_string("fd"));
	json_object_object_add(addr, "data", data);
	json_object_object_add(args, "addr", addr);
	if (!tp_qmp_run(ag->q->qmp, "nbd-server-start", args, 5000, errp))
		return false;
	ag->nbd = true;
	for (size_t k = 0; k < json_object_array_length(disks); k++) {
		int64_t drive = 0;
		char name[32], node[32], id[40];

		cli_mig_jint(json_object_array_get_idx(disks, k), "drive", &drive);
		snprintf(name, sizeof(name), "drive%" PRId64, drive);
		snprintf(node, sizeof(node), "disk%" PRId64, drive);
		snprintf(id, sizeof(id), "vmm-export-%" PRId64, drive);
		args = json_object_new_object();
		json_object_object_add(args, "type", json_object_new_string("nbd"));
		json_object_object_add(args, "id", json_object_new_string(id));
		json_object_object_add(args, "node-name", json_object_new_string(node));
		json_object_object_add(args, "name", json_object_new_string(name));
		json_object_object_add(args, "writable", json_object_new_boolean(true));
		if (!tp_qmp_run(ag->q->qmp, "block-export-add", args, 5000, errp))
			return false;
		json_object_array_add(names, json_object_new_string(name));
	}
	json_object_object_add(rep, "nbd_port", json_object_new_int((int)port));
	log_info("guest %" PRIu32 ": %zu new disk(s) served over NBD on %s port %u", ag->vmid,
		 json_object_array_length(disks), bind, port);
	return true;
}

static struct json_object *do_start(struct agent *ag, struct json_object *req, struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl_spec_files f = { .ndisks = 0 };
	const char *bind = cli_mig_jstr(req, "bind"), *peer = cli_mig_jstr(req, "peer"), *accel_s = cli_mig_jstr(req, "accel");
	struct mig_qemu_spec spec;
	struct json_object *rep;
	struct json_object *disks = NULL;
	int64_t mem = 0;
	unsigned port = 0;

	if (!r) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	if (!req_vmid(ag, req, errp))
		return NULL;
	if (ag->q) {
		err_set(errp, ERR_STATE, "a target QEMU is already started in this session");
		return NULL;
	}
	if (!bind || !cli_mig_jint(req, "mem_bytes", &mem) || mem <= 0 || !accel_s) {
		err_set(errp, ERR_PROTO, "start needs bind, mem_bytes and accel");
		return NULL;
	}
	if (cli_ctl_running(ag->vmid, NULL)) {
		err_set(errp, ERR_STATE, "guest %" PRIu32 " already has a QEMU on node %s",
			ag->vmid, ag->x.node);
		return NULL;
	}
	if (!clu_guest_read(ag->x.c, ag->vmid, r, errp))
		goto fail;
	/* The marker first: a crash from here on leaves a trail to clean. */
	if (!write_marker(ag, errp))
		goto fail;
	json_object_object_get_ex(req, "disks", &disks);
	if (disks && !new_disks(ag, r, disks, errp))
		goto fail;
	if (!cli_ctl_guest_spec(&ag->x, r, &f, &spec, errp))
		goto fail;
	/* The source's machine is the truth: same RAM, same accelerator. */
	spec.mem_bytes = (uint64_t)mem;
	if (!mig_accel_parse(accel_s, &spec.accel, errp))
		goto fail;
	spec.paused = true;
	spec.incoming = true;
	ag->lfd = tp_net_listen(bind, peer, &port, errp);
	if (ag->lfd < 0)
		goto fail;
	ag->q = mig_qemu_start(&spec, errp);
	cli_ctl_spec_files_free(&f);
	if (!ag->q)
		return NULL;
	rep = mig_chan_ok();
	if (disks && !serve_disks(ag, disks, bind, peer, rep, errp)) {
		json_object_put(rep);
		return NULL;
	}
	log_info("guest %" PRIu32 ": target QEMU pid %d waiting on %s port %u (from %s)",
		 ag->vmid, (int)ag->q->pid, bind, port, peer ? peer : "anyone");
	json_object_object_add(rep, "port", json_object_new_int((int)port));
	json_object_object_add(rep, "pid", json_object_new_int((int)ag->q->pid));
	return rep;
fail:
	cli_ctl_spec_files_free(&f);
	return NULL;
}

static struct json_object *do_listen(struct agent *ag, struct json_object *req, struct err **errp)
{
	struct json_object *t = NULL;
	struct mig_tune tune;

	if (!ag->q || ag->lfd < 0) {
		err_set(errp, ERR_STATE, "listen before start");
		return NULL;
	}
	json_object_object_get_ex(req, "tune", &t);
	if (!mig_tune_from_json(t, &tune, errp))
		return NULL;
	/* QEMU listens on our socket (its "tcp:fd:" form): the port was ours
	 * from the start and the peer filter stays on it. */
	if (!tp_qmp_send_fd(ag->q->qmp, ag->lfd, FD_NAME, 5000, errp) ||
	    !mig_target_local_listen(ag->q->qmp, &tune, "tcp:fd:" FD_NAME, errp))
		return NULL;
	close(ag->lfd);
	ag->lfd = -1;
	return mig_chan_ok();
}

static struct json_object *do_wait_loaded(struct agent *ag, struct json_object *req,
					  struct err **errp)
{
	int64_t t = 30000;

	if (!ag->q) {
		err_set(errp, ERR_STATE, "no target QEMU");
		return NULL;
	}
	cli_mig_jint(req, "timeout_ms", &t);
	if (!mig_target_local_wait_loaded(ag->q->qmp, (int)t, errp))
		return NULL;
	return mig_chan_ok();
}

static void drop_marker(struct agent *ag)
{
	char marker[600];

	marker_path(ag, marker, sizeof(marker));
	unlink(marker);
}

static struct json_object *do_resume(struct agent *ag, struct err **errp)
{
	if (!ag->q) {
		err_set(errp, ERR_STATE, "no target QEMU");
		return NULL;
	}
	/* The mirrors are done (the source ended them at pre-switchover):
	 * nobody but the guest writes its disks from now on. */
	if (ag->nbd && !tp_qmp_run(ag->q->qmp, "nbd-server-stop", NULL, 5000, errp))
		return NULL;
	ag->nbd = false;
	if (!mig_target_local_resume(ag->q->qmp, errp))
		return NULL;
	ag->committed = true;
	ag->vols_kept = true; /* its disks now */
	drop_marker(ag);
	log_info("guest %" PRIu32 ": running on %s (QEMU pid %d)", ag->vmid, ag->x.node,
		 (int)ag->q->pid);
	return mig_chan_ok();
}

static bool stop_target(struct agent *ag, struct err **errp)
{
	struct mig_qemu *q = TAKE_PTR(ag->q);

	if (!q)
		return true;
	drop_marker(ag);
	return mig_qemu_stop(q, 10000, errp);
}

static void remove_volumes(struct agent *ag);

static struct json_object *do_quit(struct agent *ag, struct err **errp)
{
	struct err *e = NULL;
	bool mine = false;

	if (ag->committed) {
		err_set(errp, ERR_STATE, "guest %" PRIu32 " runs here now; not stopping it",
			ag->vmid);
		return NULL;
	}
	if (!stop_target(ag, errp))
		return NULL;
	/* The worker rolls back: the volumes made for the guest go before
	 * the answer, so they are gone when the operator's command ends (at
	 * the session's end they raced its exit). */
	if (ag->nvols && !ag->vols_kept) {
		if (owned_here(ag, &mine, &e) && !mine)
			remove_volumes(ag);
		err_free(e);
	}
	return mig_chan_ok();
}

/* ---- volumes ------------------------------------------------------------------------- */

static struct json_object *do_recv_volume(struct agent *ag, struct json_object *req,
					  struct err **errp)
{
	const char *sid = cli_mig_jstr(req, "storage"), *vol = cli_mig_jstr(req, "volume");
	const char *bind = cli_mig_jstr(req, "bind"), *peer = cli_mig_jstr(req, "peer");
	const char *tsid = cli_mig_jstr(req, "target_storage");
	_cleanup_free_ char *path = NULL;
	struct json_object *rep;
	int64_t size = 0;
	unsigned port = 0;

	if (!req_vmid(ag, req, errp))
		return NULL;
	if (!sid || !vol || !bind || !cli_mig_jint(req, "size", &size) || size <= 0) {
		err_set(errp, ERR_PROTO, "recv-volume needs storage, volume, size and bind");
		return NULL;
	}
	if (ag->vol_path || ag->nvols == MIG_MAX_DISKS) {
		err_set(errp, ERR_STATE, "a volume is already being received");
		return NULL;
	}
	path = new_volume_path(ag, tsid ? tsid : sid, vol, errp);
	if (!path)
		return NULL;
	ag->vol_lfd = tp_net_listen(bind, peer, &port, errp);
	if (ag->vol_lfd < 0)
		return NULL;
	ag->vol_path = TAKE_PTR(path);
	ag->vol_size = (uint64_t)size;
	rep = mig_chan_ok();
	json_object_object_add(rep, "port", json_object_new_int((int)port));
	return rep;
}

static struct json_object *do_volume_wait(struct agent *ag, struct err **errp)
{
	_cleanup_close_ int fd = -1;
	struct tp_stream_opts o = { .zstd_level = 0 };
	struct tp_stream_progress fin;
	struct json_object *rep;
	char peer[64];

	if (!ag->vol_path) {
		err_set(errp, ERR_STATE, "volume-wait before recv-volume");
		return NULL;
	}
	fd = tp_net_accept(ag->vol_lfd, 30000, peer, sizeof(peer), errp);
	close(ag->vol_lfd);
	ag->vol_lfd = -1;
	if (fd < 0 || !tp_stream_recv_file(fd, ag->vol_path, ag->vol_size, &o, &fin, errp)) {
		free(TAKE_PTR(ag->vol_path));
		return NULL;
	}
	ag->vols[ag->nvols++] = TAKE_PTR(ag->vol_path);
	rep = mig_chan_ok();
	json_object_object_add(rep, "data_bytes", json_object_new_uint64(fin.data_bytes));
	json_object_object_add(rep, "wire_bytes", json_object_new_uint64(fin.wire_bytes));
	return rep;
}

static void remove_volumes(struct agent *ag)
{
	while (ag->nvols) {
		char *p = ag->vols[--ag->nvols];

		if (unlink(p) == 0)
			log_info("removed volume %s", p);
		free(p);
	}
}

/* ---- session ------------------------------------------------------------------------- */

static struct json_object *dispatch(struct agent *ag, const char *cmd, struct json_object *req,
				    bool *bye, struct err **errp)
{
	struct json_object *rep;

	if (!strcmp(cmd, "hello")) {
		rep = mig_chan_ok();
		json_object_object_add(rep, "node", json_object_new_string(ag->x.node));
		json_object_object_add(rep, "pid", json_object_new_int((int)getpid()));
		json_object_object_add(rep, "version", json_object_new_int(1));
		return rep;
	}
	if (!strcmp(cmd, "facts"))
		return do_facts(ag, req, errp);
	if (!strcmp(cmd, "node-facts"))
		return do_node_facts(ag, errp);
	if (!strcmp(cmd, "cleanup"))
		return do_cleanup(ag, req, errp);
	if (!strcmp(cmd, "start"))
		return do_start(ag, req, errp);
	if (!strcmp(cmd, "listen"))
		return do_listen(ag, req, errp);
	if (!strcmp(cmd, "wait-loaded"))
		return do_wait_loaded(ag, req, errp);
	if (!strcmp(cmd, "resume"))
		return do_resume(ag, errp);
	if (!strcmp(cmd, "check")) {
		if (!ag->q)
			return err_set(errp, ERR_STATE, "no target QEMU"), NULL;
		return mig_target_local_check(ag->q->qmp, errp) ? mig_chan_ok() : NULL;
	}
	if (!strcmp(cmd, "quit"))
		return do_quit(ag, errp);
	if (!strcmp(cmd, "recv-volume"))
		return do_recv_volume(ag, req, errp);
	if (!strcmp(cmd, "volume-wait"))
		return do_volume_wait(ag, errp);
	if (!strcmp(cmd, "keep-volumes")) {
		ag->vols_kept = true;
		return mig_chan_ok();
	}
	if (!strcmp(cmd, "bye")) {
		*bye = true;
		return mig_chan_ok();
	}
	{
		char safe[40];

		err_set(errp, ERR_PROTO, "unknown request '%s'", util_printable(cmd, safe, sizeof(safe)));
	}
	return NULL;
}

/* The session ended without a resume: the store decides (see the top). */
static void finish(struct agent *ag)
{
	struct err *e = NULL;
	bool mine = false;

	if (ag->lfd >= 0)
		close(ag->lfd);
	if (ag->vol_lfd >= 0)
		close(ag->vol_lfd);
	free(ag->vol_path);
	if (ag->vmid && (ag->q || (ag->nvols && !ag->vols_kept)) && !ag->committed &&
	    !owned_here(ag, &mine, &e)) {
		log_error("guest %" PRIu32 ": cannot read the owner (%s); stopping the target",
			  ag->vmid, e->msg);
		err_free(TAKE_PTR(e));
		mine = false;
	}
	if (ag->q && !ag->committed) {
		if (mine) {
			log_warn("guest %" PRIu32 ": the worker left after the guest became ours: "
				 "resuming it here", ag->vmid);
			if (ag->nbd)
				tp_qmp_run(ag->q->qmp, "nbd-server-stop", NULL, 5000, NULL);
			ag->nbd = false;
			if (!mig_target_local_resume(ag->q->qmp, &e)) {
				log_error("guest %" PRIu32 ": resume failed: %s", ag->vmid, e->msg);
				err_free(TAKE_PTR(e));
			} else {
				ag->committed = true;
				drop_marker(ag);
			}
		} else if (!stop_target(ag, &e)) {
			log_error("guest %" PRIu32 ": stopping the target failed: %s", ag->vmid,
				  e->msg);
			err_free(TAKE_PTR(e));
		}
	}
	if (ag->q) {
		mig_qemu_release(TAKE_PTR(ag->q)); /* committed: it runs on */
	}
	if (!ag->vols_kept && !mine)
		remove_volumes(ag);
	while (ag->nvols)
		free(ag->vols[--ag->nvols]);
	cli_ctl_close(&ag->x);
	mig_chan_close(ag->ch);
}

int cli_migrate_agent(void)
{
	struct agent ag = { .lfd = -1, .vol_lfd = -1 };
	struct err *e = NULL;
	bool bye = false;

	signal(SIGPIPE, SIG_IGN);
	/* SSH may end our session with SIGHUP: finish() must still run. */
	signal(SIGHUP, SIG_IGN);
	ag.ch = mig_chan_open(STDIN_FILENO, STDOUT_FILENO);
	if (!ag.ch || !cli_ctl_open(&ag.x, &e)) {
		log_error("agent: %s", e ? e->msg : "out of memory");
		if (ag.ch && e) {
			_cleanup_json_ struct json_object *f = mig_chan_fail(e);
			mig_chan_send(ag.ch, f, NULL);
		}
		err_free(e);
		mig_chan_close(ag.ch);
		return 1;
	}
	while (!bye) {
		_cleanup_json_ struct json_object *req = mig_chan_recv(ag.ch, -1, &e);
		_cleanup_json_ struct json_object *rep = NULL;
		const char *cmd;

		if (!req) {
			if (e->code != ERR_CLOSED)
				log_error("agent: %s", e->msg);
			err_free(TAKE_PTR(e));
			break;
		}
		cmd = cli_mig_jstr(req, "cmd");
		/* The whole request is checked before anything is done for it. */
		if (mig_agent_req_check(req, &e))
			rep = dispatch(&ag, cmd, req, &bye, &e);
		if (!rep) {
			log_warn("agent: %s: %s", cmd ? cmd : "?", e->msg);
			rep = mig_chan_fail(e);
			err_free(TAKE_PTR(e));
		}
		if (!mig_chan_send(ag.ch, rep, &e)) {
			err_free(TAKE_PTR(e));
			break;
		}
	}
	finish(&ag);
	return 0;
}
