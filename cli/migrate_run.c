/*
 * migrate_run.c - `vmmigrate VMID TARGET [options]`: the checks the store
 * can answer, the guest lock and the migration record, then the phase
 * machine of migrate/mig_job.c with progress, and the source's side of the
 * end: its QEMU stopped or its copied volumes removed. Options and defaults
 * as in Proxmox's `qm migrate`; datacenter.cfg `migration:` and `bwlimit:`
 * give the defaults. docs/vmmigrate.md is the manual.
 */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"
#include "../migrate/mig_host.h"
#include "../replicate/repl.h"
#include "repl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Defaults chosen by measurement (docs/BENCHMARKS.md, docs/vmmigrate.md):
 * - the downtime ramp stops at 300 ms, the most a busy guest should see;
 * - auto-converge starts at 30 % and steps by 20 % (QEMU: 20 and 10): a
 *   guest dirtying 256 MiB as fast as it can converged in ~13 s instead of
 *   ~23 s over SSH, with no cost to guests that never trigger it;
 * - secure mode compresses pages with zstd: libssh2 1.10 encrypts one
 *   16-byte block per call (~220 MB/s per core here), zstd -1 is cheaper
 *   per byte, and even incompressible pages went faster (25 s vs 44 s). */
#define DEFAULT_DOWNTIME_MS 100
#define DEFAULT_DOWNTIME_MAX_MS 300
#define DEFAULT_MULTIFD 2
#define DEFAULT_THROTTLE_INITIAL 30
#define DEFAULT_THROTTLE_INCREMENT 20
#define DEFAULT_TIMEOUT_S 3600
#define CHECK_EVERY_MS 250
#define RENEW_EVERY_MS 20000
#define QUORUM_WAIT_MS 60000 /* to remove our record and lock after quorum loss */
#define REPL_WAIT_MS (30 * 60000) /* for a replication run of the guest to end */

static const struct cli_opt opts[] = {
	{ "online", CLI_FLAG, NULL, "live-migrate a running guest" },
	{ "migration_type", CLI_VALUE, "secure|insecure", "secure: over SSH; insecure: plain "
	  "TCP; default from datacenter.cfg, else secure" },
	{ "migration_network", CLI_VALUE, "CIDR", "network for the migration data; default "
	  "from datacenter.cfg, else the cluster network" },
	{ "bwlimit", CLI_VALUE, "KiB/s", "bandwidth limit; default from datacenter.cfg, else "
	  "none" },
	{ "downtime", CLI_VALUE, "MS", "downtime limit (raised step by step up to "
	  "--downtime-max when the guest does not converge); default 100" },
	{ "downtime-max", CLI_VALUE, "MS", "ceiling of the downtime ramp; default 300" },
	{ "multifd", CLI_VALUE, "N", "parallel streams (1 = off); default 2" },
	{ "compress", CLI_VALUE, "none|zstd", "compress RAM pages with zstd before they "
	  "cross the link; default zstd in secure mode, none in insecure mode" },
	{ "xbzrle", CLI_FLAG, NULL, "delta-encode re-sent pages (slow links, busy guests)" },
	{ "no-auto-converge", CLI_FLAG, NULL, "never throttle the guest's vCPUs" },
	{ "with-local-disks", CLI_FLAG, NULL, "move local disks of a running guest too "
	  "(mirrored while it runs)" },
	{ "targetstorage", CLI_VALUE, "ID|SRC:DST,...", "where local disks go on the target: "
	  "one storage for all, or a map; default the same storage ID" },
	{ "mirror-mode", CLI_VALUE, "write-blocking|background", "local disks: guest writes "
	  "reach the target synchronously (default) or are copied behind them" },
	{ "timeout", CLI_VALUE, "S", "give the migration this long; default 3600" },
	{ "timeout-action", CLI_VALUE, "abort|pause|postcopy", "what the timeout does; "
	  "default abort" },
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

struct run {
	struct cli_ctl x;
	const struct cli_args *a;
	struct clu_guest_rec *g;
	struct cli_mig_peer target;
	struct cli_progress prog;
	enum mig_phase shown;
	int64_t next_check_ms, next_renew_ms;
	char cidr_s[64], source_addr[64], remote[512];
	struct mig_job_volume vols[MIG_MAX_DISKS];
	char *vol_paths[MIG_MAX_DISKS];
	unsigned vol_conf[MIG_MAX_DISKS];  /* the volume's index in conf.disks */
	struct storage_map { char src[CLU_STORAGE_ID_MAX + 1], dst[CLU_STORAGE_ID_MAX + 1]; }
		map[MIG_MAX_DISKS];
	unsigned nmap;
	char map_all[CLU_STORAGE_ID_MAX + 1]; /* --targetstorage ID: every local disk */
	const char *storages[MIG_MAX_DISKS];
	unsigned nvols, nstorages;
	uint64_t last_wire;
	int64_t last_wire_ms;
	uint64_t wire_rate;
	/* a replication job to the target: its replicas are the disks there */
	char repl_job[24];
	bool replicated[CLU_GUEST_DISKS]; /* by conf.disks index */
	struct cli_repl_mig *rm;
};

/* ---- options ---------------------------------------------------------------------- */

static bool parse_tune(const struct cli_args *a, const struct clu_datacenter *dc,
		       struct mig_job *j, struct err **errp)
{
	const char *v;
	uint64_t n;

	j->tune = (struct mig_tune){
		.downtime_ms = DEFAULT_DOWNTIME_MS,
		.downtime_max_ms = DEFAULT_DOWNTIME_MAX_MS,
		.multifd = DEFAULT_MULTIFD,
		.auto_converge = !cli_has(a, "no-auto-converge"),
		.throttle_initial = DEFAULT_THROTTLE_INITIAL,
		.throttle_increment = DEFAULT_THROTTLE_INCREMENT,
		.xbzrle = cli_has(a, "xbzrle"),
	};
	n = dc->bwlimit_migration ? dc->bwlimit_migration : dc->bwlimit_default;
	if ((v = cli_get(a, "bwlimit")) &&
	    !util_parse_u64(v, 0, 1ULL << 30, "bwlimit (KiB/s)", &n, errp))
		return false;
	j->tune.max_bandwidth = n << 10;
	if ((v = cli_get(a, "downtime")) &&
	    !util_parse_u64(v, 1, 60000, "downtime (ms)", &j->tune.downtime_ms, errp))
		return false;
	if ((v = cli_get(a, "downtime-max")) &&
	    !util_parse_u64(v, 1, 60000, "downtime-max (ms)", &j->tune.downtime_max_ms, errp))
		return false;
	if (j->tune.downtime_max_ms < j->tune.downtime_ms)
		j->tune.downtime_max_ms = j->tune.downtime_ms;
	if ((v = cli_get(a, "multifd"))) {
		if (!util_parse_u64(v, 1, 16, "multifd streams", &n, errp))
			return false;
		j->tune.multifd = (unsigned)n;
	}
	/* j->secure is known: parse_network() ran first. */
	j->tune.multifd_zstd = j->secure && j->tune.multifd > 1;
	if ((v = cli_get(a, "compress"))) {
		if (strcmp(v, "none") && strcmp(v, "zstd"))
			return err_set(errp, ERR_INVAL, "invalid --compress '%s': use none or zstd",
				       v);
		j->tune.multifd_zstd = !strcmp(v, "zstd");
		if (j->tune.multifd_zstd && j->tune.multifd < 2)
			return err_set(errp, ERR_INVAL, "--compress zstd needs --multifd 2 or more");
	}
	if (!cli_seconds(a, "timeout", DEFAULT_TIMEOUT_S, &j->timeout_ms, errp))
		return false;
	j->timeout_action = MIG_TIMEOUT_ABORT;
	if ((v = cli_get(a, "timeout-action"))) {
		int i;

		for (i = 0; i < MIG_TIMEOUT_ACTION_MAX; i++)
			if (!strcmp(v, mig_timeout_action_names[i]))
				break;
		if (i == MIG_TIMEOUT_ACTION_MAX)
			return err_set(errp, ERR_INVAL, "invalid --timeout-action '%s': use abort, "
				       "pause or postcopy", v);
		j->timeout_action = (enum mig_timeout_action)i;
	}
	j->tune.postcopy = j->timeout_action == MIG_TIMEOUT_POSTCOPY;
	return true;
}

static bool parse_network(struct run *r, const struct clu_datacenter *dc, struct mig_job *j,
			  struct err **errp)
{
	const char *type = cli_get(r->a, "migration_type"), *net = cli_get(r->a, "migration_network");
	struct clu_cidr c;

	j->secure = dc->migration_type != CLU_MIGRATION_INSECURE;
	if (type) {
		if (strcmp(type, "secure") && strcmp(type, "insecure"))
			return err_set(errp, ERR_INVAL, "invalid --migration_type '%s': use secure "
				       "or insecure", type);
		j->secure = !strcmp(type, "secure");
	}
	if (net) {
		if (!clu_cidr_parse(net, &c, errp))
			return false;
	} else if (dc->has_migration_network) {
		c = dc->migration_network;
	} else {
		return true; /* the cluster network */
	}
	clu_cidr_format(&c, r->cidr_s, sizeof(r->cidr_s));
	j->cidr = r->cidr_s;
	return true;
}

/* --targetstorage: "ID" (every local disk there) or "SRC:DST,SRC:DST" (as
 * Proxmox's qm migrate); storages not named keep their ID. */
static bool parse_targetstorage(struct run *r, const char *v, struct err **errp)
{
	_cleanup_free_ char *copy = strdup(v);
	char *save = NULL, *tok;

	if (!copy)
		return err_set(errp, ERR_IO, "out of memory");
	if (!strchr(v, ':')) {
		if (!clu_storage_id_valid(v))
			return err_set(errp, ERR_INVAL, "invalid --targetstorage '%s'", v);
		snprintf(r->map_all, sizeof(r->map_all), "%s", v);
		return true;
	}
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':');

		if (!colon || r->nmap == MIG_MAX_DISKS)
			return err_set(errp, ERR_INVAL, "invalid --targetstorage '%s'", v);
		*colon = '\0';
		if (!clu_storage_id_valid(tok) || !clu_storage_id_valid(colon + 1))
			return err_set(errp, ERR_INVAL, "invalid --targetstorage '%s'", v);
		for (unsigned i = 0; i < r->nmap; i++)
			if (!strcmp(r->map[i].src, tok))
				return err_set(errp, ERR_INVAL, "invalid --targetstorage '%s': "
					       "storage '%s' mapped twice", v, tok);
		snprintf(r->map[r->nmap].src, sizeof(r->map[0].src), "%s", tok);
		snprintf(r->map[r->nmap].dst, sizeof(r->map[0].dst), "%s", colon + 1);
		r->nmap++;
	}
	return true;
}

static const char *target_storage_of(const struct run *r, const char *sid)
{
	if (r->map_all[0])
		return r->map_all;
	for (unsigned i = 0; i < r->nmap; i++)
		if (!strcmp(r->map[i].src, sid))
			return r->map[i].dst;
	return sid;
}

/* ---- checks ---------------------------------------------------------------------- */

static bool quorate(struct cli_ctl *x, struct err **errp)
{
	struct json_object *req = json_object_new_object(), *v;
	_cleanup_json_ struct json_object *st = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	st = clu_client_call(x->c, req, 10000, errp);
	if (!st)
		return false;
	if (!json_object_object_get_ex(st, "quorate", &v) || !json_object_get_boolean(v))
		return err_set(errp, ERR_STATE, "cluster not quorate: no migration without quorum");
	return true;
}

static bool check_target(struct run *r, const char *target, struct err **errp)
{
	if (!clu_node_name_valid(target))
		return err_set(errp, ERR_INVAL, "invalid target node name '%s'", target);
	if (!strcmp(target, r->x.node))
		return err_set(errp, ERR_INVAL, "target node '%s' is this node", target);
	if (!cli_mig_peer_read(&r->x, target, &r->target, errp))
		return false;
	if (!r->target.online)
		return err_set(errp, ERR_STATE, "target node '%s' is offline", target);
	if (r->target.maintenance)
		return err_set(errp, ERR_STATE, "target node '%s' is in maintenance", target);
	if (!r->target.addr[0])
		return err_set(errp, ERR_STATE, "target node '%s' has no cluster address", target);
	return true;
}

/* Storages the target must offer, and (offline) local volumes to copy. */
static bool add_storage(struct run *r, const char *id)
{
	for (unsigned k = 0; k < r->nstorages; k++)
		if (!strcmp(r->storages[k], id))
			return true;
	return (r->storages[r->nstorages++] = strdup(id)) != NULL;
}

static bool on_target(const struct run *r, const struct clu_storage *s)
{
	if (!s->n_nodes)
		return true;
	for (size_t k = 0; k < s->n_nodes; k++)
		if (!strcmp(s->nodes[k], r->target.name))
			return true;
	return false;
}

/* Storages the target must offer, and the local volumes to move: copied
 * (offline) or mirrored (online, --with-local-disks). Shared disks stay. */
static bool check_disks(struct run *r, bool online, struct err **errp)
{
	struct cli_ctl_storages st;
	bool ok = true, with_local = cli_has(r->a, "with-local-disks");
	unsigned drive = 0;

	if (!cli_ctl_storages_read(&r->x, &st, errp))
		return false;
	for (int i = 0; i < CLU_GUEST_DISKS && ok; i++) {
		const struct clu_guest_disk *d = &r->g->conf.disks[i];
		const struct clu_storage *s, *ts;
		const char *tsid;

		if (!d->present)
			continue;
		drive++;
		s = clu_storage_find(&st.sc, d->storage);
		if (!s) {
			ok = err_set(errp, ERR_INVAL, "disk %s:%s of guest %" PRIu32 " is on an "
				     "unknown storage", d->storage, d->volume, r->g->vmid);
			break;
		}
		tsid = s->shared ? s->id : target_storage_of(r, s->id);
		ts = clu_storage_find(&st.sc, tsid);
		if (!ts) {
			ok = err_set(errp, ERR_INVAL, "unknown target storage '%s' for disk %s:%s",
				     tsid, d->storage, d->volume);
			break;
		}
		if (!on_target(r, ts)) {
			ok = err_set(errp, ERR_STATE, "storage '%s' of disk %s:%s is not available "
				     "on node %s", ts->id, d->storage, d->volume, r->target.name);
			break;
		}
		if (!add_storage(r, ts->id)) {
			ok = err_set(errp, ERR_IO, "out of memory");
			break;
		}
		if (s->shared)
			continue;
		if (online && !with_local) {
			ok = err_set(errp, ERR_STATE, "guest %" PRIu32 " has the local disk %s:%s: "
				     "a live migration with local disks needs --with-local-disks",
				     r->g->vmid, d->storage, d->volume);
			break;
		}
		/* A replica there is the disk: only the delta since its last sync goes. */
		if (r->replicated[i] && ts != s) {
			ok = err_set(errp, ERR_STATE, "disk %s:%s is replicated to %s by job %s: it "
				     "cannot move to storage '%s' (--targetstorage)", d->storage,
				     d->volume, r->target.name, r->repl_job, ts->id);
			break;
		}
		if (r->replicated[i])
			continue;
		{
			struct mig_job_volume *v = &r->vols[r->nvols];
			char *path = cli_ctl_disk_path(&st, d, errp);
			struct stat sb;
			uint64_t size;

			if (!path) {
				ok = false;
				break;
			}
			if (stat(path, &sb) < 0) {
				ok = err_set_errno(errp, errno, "disk %s:%s: '%s'", d->storage,
						   d->volume, path);
				free(path);
				break;
			}
			/* Offline the file's bytes go; online the guest's view is
			 * mirrored into a new volume of its size (qcow2: virtual). */
			size = (uint64_t)sb.st_size;
			if (online && util_volume_is_qcow2(path)) {
				_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

				if (fd < 0 || !repl_vol_size(path, fd, true, &size, errp)) {
					if (fd < 0)
						err_set_errno(errp, errno, "disk %s:%s: '%s'",
							      d->storage, d->volume, path);
					free(path);
					ok = false;
					break;
				}
			}
			r->vol_paths[r->nvols] = path;
			r->vol_conf[r->nvols] = (unsigned)i;
			*v = (struct mig_job_volume){
				.storage = d->storage,
				.volume = d->volume,
				.target_storage = ts == s ? NULL : strdup(ts->id),
				.path = path,
				.size = size,
				.drive = drive - 1,
			};
			r->nvols++;
		}
	}
	cli_ctl_storages_free(&st);
	return ok;
}

/* ---- hooks ------------------------------------------------------------------------ */

static bool hook_persist(enum mig_phase ph, void *opaque, struct err **errp)
{
	struct run *r = opaque;

	return cli_mig_record_phase(r->x.c, r->g->vmid, mig_phase_name(ph), NULL, errp);
}

static bool hook_check(void *opaque, struct err **errp)
{
	struct run *r = opaque;
	struct cli_mig_record rec;
	int64_t now = util_now_ms();

	if (now < r->next_check_ms)
		return true;
	r->next_check_ms = now + CHECK_EVERY_MS;
	if (!cli_mig_record_read(r->x.c, r->g->vmid, &rec, NULL, errp))
		return false;
	if (rec.cancel)
		return err_set(errp, ERR_STATE, "cancelled by 'vmmigrate cancel' on %s",
			       rec.cancel_by[0] ? rec.cancel_by : "?");
	if (!quorate(&r->x, errp)) {
		err_prefix(errp ? *errp : NULL, "quorum lost during the migration");
		return false;
	}
	if (now >= r->next_renew_ms) {
		if (!cli_ctl_lock_renew(&r->x, errp))
			return false;
		r->next_renew_ms = now + RENEW_EVERY_MS;
	}
	return true;
}

static bool hook_move_owner(void *opaque, struct err **errp)
{
	struct run *r = opaque;
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));

	if (!g)
		return err_set(errp, ERR_IO, "out of memory");
	/* Re-read: the version must be current for the conditional write. */
	if (!clu_guest_read(r->x.c, r->g->vmid, g, errp))
		return false;
	if (strcmp(g->node, r->x.node))
		return err_set(errp, ERR_STATE, "guest %" PRIu32 " is owned by %s now", g->vmid,
			       g->node);
	snprintf(g->node, sizeof(g->node), "%s", r->target.name);
	/* Disks moved to another storage ID (--targetstorage) are there now. */
	for (unsigned i = 0; i < r->nvols; i++)
		if (r->vols[i].target_storage)
			snprintf(g->conf.disks[r->vol_conf[i]].storage,
				 sizeof(g->conf.disks[0].storage), "%s", r->vols[i].target_storage);
	return clu_guest_update(r->x.c, g, errp);
}

static void hook_progress(const struct mig_job_progress *p, void *opaque)
{
	struct run *r = opaque;
	int64_t now = util_now_ms();

	if (p->phase != r->shown) {
		cli_progress_break(&r->prog);
		cli_progress_phase(&r->prog, mig_phase_name(p->phase));
		r->shown = p->phase;
	}
	if (p->phase != MIG_PHASE_TRANSFER)
		return;
	if (p->online && !p->mirroring) {
		cli_progress_ram(&r->prog, mig_phase_name(p->phase), &p->raw);
		return;
	}
	/* A mirror under a bandwidth limit moves in bursts: smooth the rate
	 * over one-second samples so the ETA does not jump about. */
	if (now - r->last_wire_ms >= 1000) {
		if (r->last_wire_ms) {
			uint64_t inst = (p->vol_covered - r->last_wire) * 1000 /
					(uint64_t)(now - r->last_wire_ms);

			r->wire_rate = r->wire_rate ? (r->wire_rate * 3 + inst) / 4 : inst;
		}
		r->last_wire = p->vol_covered;
		r->last_wire_ms = now;
	}
	cli_progress_disk(&r->prog, p->mirroring ? "mirror" : mig_phase_name(p->phase),
			  p->vols_total, p->vol_covered, p->vol_wire, r->wire_rate, p->elapsed_ms,
			  p->mirroring ? p->disk : NULL, p->mirroring ? p->ndisks : 0);
}

/* ---- the source QEMU -------------------------------------------------------------- */

static bool source_facts(struct mig_qemu *q, struct mig_job *j, struct err **errp)
{
	_cleanup_json_ struct json_object *mem = NULL, *kvm = NULL, *st = NULL;
	struct json_object *v;

	mem = tp_qmp_call(q->qmp, "query-memory-size-summary", NULL, 5000, errp);
	kvm = mem ? tp_qmp_call(q->qmp, "query-kvm", NULL, 5000, errp) : NULL;
	st = kvm ? tp_qmp_call(q->qmp, "query-status", NULL, 5000, errp) : NULL;
	if (!st)
		return false;
	if (!json_object_object_get_ex(mem, "base-memory", &v))
		return err_set(errp, ERR_PROTO, "QEMU did not report its memory size");
	j->mem_bytes = (uint64_t)json_object_get_int64(v);
	j->accel = json_object_object_get_ex(kvm, "enabled", &v) && json_object_get_boolean(v) ?
			   MIG_ACCEL_KVM : MIG_ACCEL_TCG;
	j->src_was_running = json_object_object_get_ex(st, "running", &v) &&
			     json_object_get_boolean(v);
	if (!j->src_was_running)
		return err_set(errp, ERR_STATE, "guest %" PRIu32 "'s QEMU is not running (status "
			       "%s): resume or stop it first", j->vmid,
			       json_object_object_get_ex(st, "status", &v) ?
				       json_object_get_string(v) : "?");
	return true;
}

/* ---- output ---------------------------------------------------------------------- */

static void summary(struct run *r, const struct mig_job *j, const struct mig_job_progress *p)
{
	char t[32], w[32];
	const char *mode = j->secure ? "secure" : "insecure";

	cli_progress_break(&r->prog);
	if (r->prog.out == CLI_OUT_JSON) {
		printf("{\"event\":\"done\",\"vmid\":%" PRIu32 ",\"target\":\"%s\",\"online\":%s,"
		       "\"type\":\"%s\",\"address\":\"%s\",\"total_ms\":%" PRId64, j->vmid,
		       j->target, j->online ? "true" : "false", mode, p->target_addr, p->elapsed_ms);
		if (j->online)
			printf(",\"migration_ms\":%" PRId64 ",\"downtime_ms\":%" PRId64
			       ",\"transferred\":%" PRIu64 ",\"ram\":%" PRIu64 ",\"passes\":%" PRIu64
			       ",\"downtime_limit_ms\":%" PRIu64 ",\"disks\":%u,\"disk_bytes\":%" PRIu64,
			       p->raw.elapsed_ms, p->raw.downtime_ms, p->raw.transferred, p->raw.total,
			       p->raw.passes, p->raw.downtime_limit_ms, r->nvols, p->vols_total);
		else
			printf(",\"disk_bytes\":%" PRIu64 ",\"data_bytes\":%" PRIu64
			       ",\"wire_bytes\":%" PRIu64, p->vols_total, p->data_done, p->wire_done);
		printf("}\n");
		fflush(stdout);
		return;
	}
	if (j->online) {
		double secs = (double)(p->raw.elapsed_ms > 0 ? p->raw.elapsed_ms : 1) / 1000.0;

		char d[32];

		printf("migrated guest %" PRIu32 " to %s in %.2f s (%s via %s): downtime %" PRId64
		       " ms, %s sent at %s/s, %" PRIu64 " passes", j->vmid, j->target,
		       (double)p->elapsed_ms / 1000.0, mode, p->target_addr, p->raw.downtime_ms,
		       util_fmt_bytes(p->raw.transferred, t, sizeof(t)),
		       util_fmt_bytes((uint64_t)((double)p->raw.transferred / secs), w, sizeof(w)),
		       p->raw.passes);
		if (r->nvols)
			printf(", %u local disk(s) of %s mirrored", r->nvols,
			       util_fmt_bytes(p->vols_total, d, sizeof(d)));
		if (r->rm)
			printf(", replicas synced by job %s", r->repl_job);
		printf("\n");
	} else {
		printf("moved guest %" PRIu32 " to %s in %.2f s (offline, %s): %u disk(s), %s "
		       "copied, %s on the wire\n", j->vmid, j->target,
		       (double)p->elapsed_ms / 1000.0, mode, r->nvols,
		       util_fmt_bytes(p->data_done, t, sizeof(t)),
		       util_fmt_bytes(p->wire_done, w, sizeof(w)));
	}
	fflush(stdout);
}

/* ---- replication runs of the guest ------------------------------------------------ */

/* A sync of one of the guest's replication jobs running on this node (its
 * state says syncing, its worker lives), or NULL in *job. */
static bool replication_running(struct run *r, uint32_t vmid, char *job, size_t len,
				pid_t *pid, struct err **errp)
{
	_cleanup_free_ char *text = clu_client_get(r->x.c, "replication.cfg", NULL, NULL);
	struct clu_repl_conf rc = { .n = 0 };

	*job = '\0';
	if (!text)
		return true;
	if (!clu_repl_parse(text, "replication.cfg", &rc, errp))
		return false;
	for (size_t i = 0; i < rc.n && !*job; i++) {
		struct repl_job_state st;

		if (rc.items[i].vmid != vmid ||
		    !repl_state_read(r->x.c, rc.items[i].id, &st, NULL, NULL))
			continue;
		if (st.state == REPL_STATE_SYNCING && !strcmp(st.node, r->x.node) && st.pid > 0 &&
		    kill(st.pid, 0) == 0) {
			snprintf(job, len, "%s", rc.items[i].id);
			*pid = st.pid;
		}
	}
	clu_repl_conf_free(&rc);
	return true;
}

static bool wait_replication(struct run *r, uint32_t vmid, struct err **errp)
{
	int64_t deadline = util_now_ms() + REPL_WAIT_MS;
	char job[32];
	pid_t pid = 0;
	bool told = false;

	for (;;) {
		if (!replication_running(r, vmid, job, sizeof(job), &pid, errp))
			return false;
		if (!*job)
			return true;
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_STATE, "guest %" PRIu32 " is being replicated (job %s, "
				       "pid %d) for more than %d min", vmid, job, (int)pid,
				       REPL_WAIT_MS / 60000);
		if (!told)
			log_info("guest %" PRIu32 ": waiting for replication job %s (pid %d) to finish",
				 vmid, job, (int)pid);
		told = true;
		usleep(500 * 1000);
	}
}

/* ---- the end ---------------------------------------------------------------------- */

/* Removes the migration record. Without quorum the store is read-only
 * (the usual reason a migration just failed): wait a while for quorum so
 * the record and the guest lock do not outlive us; if it does not come
 * back, the next vmmigrate of the guest on this node clears the record
 * (a dead worker's) and the lock expires. */
static void settle(struct run *r, uint32_t vmid)
{
	int64_t deadline = util_now_ms() + QUORUM_WAIT_MS;
	struct err *e = NULL;
	bool told = false;

	while (!cli_mig_record_delete(r->x.c, vmid, &e)) {
		bool no_quorum = e->code == ERR_STATE && strstr(e->msg, "no quorum");

		if (!no_quorum || util_now_ms() >= deadline) {
			log_warn("cannot remove the record of this migration (%s): the next "
				 "'vmmigrate %" PRIu32 "' on %s clears it", e->msg, vmid, r->x.node);
			err_free(e);
			return;
		}
		err_free(TAKE_PTR(e));
		if (!told)
			log_info("cluster not quorate: waiting up to %d s to release guest %" PRIu32
				 "'s lock and migration record", QUORUM_WAIT_MS / 1000, vmid);
		told = true;
		usleep(500 * 1000);
	}
	if (told)
		log_info("quorum is back: guest %" PRIu32 "'s migration record removed", vmid);
}

/* ---- the command ------------------------------------------------------------------ */

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void run_free(struct run *r)
{
	cli_mig_peer_free(&r->target);
	for (unsigned i = 0; i < r->nvols; i++) {
		free(r->vol_paths[i]);
		free((char *)r->vols[i].target_storage);
	}
	for (unsigned i = 0; i < r->nstorages; i++)
		free((char *)r->storages[i]);
	cli_repl_mig_close(r->rm);
	free(r->g);
	if (r->x.c)
		cli_ctl_close(&r->x);
}

/* At the switchover (guest paused): the writes since the first sync. */
static bool hook_repl_final(void *opaque, struct err **errp)
{
	struct run *r = opaque;

	log_info("guest %" PRIu32 ": last replication sync (job %s), guest paused", r->g->vmid,
		 r->repl_job);
	return cli_repl_mig_sync(r->rm, true, errp);
}

static int fail(struct run *r, struct err *e);

/* After the switchover the target did not resume (its QEMU died, its
 * agent was cut off): recover as after a crashed worker, then say where
 * the guest runs. */
static int target_lost(struct run *r, uint32_t vmid, const char *target, struct err *e)
{
	_cleanup_free_ struct clu_guest_rec *g = calloc(1, sizeof(*g));
	struct err *e2 = NULL;

	log_warn("guest %" PRIu32 ": %s did not resume it (%s): recovering", vmid, target,
		 e ? e->msg : "?");
	if (!cli_migrate_recover(&r->x, vmid, &e2)) {
		err_prefix(e2, "migration of guest %" PRIu32 " to %s failed at the switchover (%s); "
			   "recovery", vmid, target, e ? e->msg : "?");
		err_free(e);
		return fail(r, e2);
	}
	if (g && clu_guest_read(r->x.c, vmid, g, NULL) && !strcmp(g->node, target)) {
		log_warn("guest %" PRIu32 " runs on %s after all (its agent resumed it)", vmid,
			 target);
		err_free(e);
		log_task_close(NULL);
		run_free(r);
		return 0;
	}
	err_prefix(e, "migration of guest %" PRIu32 " to %s failed at the switchover, guest "
		   "runs on the source again", vmid, target);
	return fail(r, e);
}

static int fail(struct run *r, struct err *e)
{
	int rc;

	cli_progress_break(&r->prog);
	if (r->prog.out == CLI_OUT_JSON && e) {
		_cleanup_json_ struct json_object *m = json_object_new_string(e->msg);

		printf("{\"event\":\"failed\",\"error\":%s}\n", json_object_to_json_string(m));
		fflush(stdout);
	}
	log_task_close(e ? e->msg : "failed");
	rc = cli_report(r->a, e);
	run_free(r);
	return rc;
}

static int exec_migrate(const struct cli_args *a)
{
	struct run r = { .a = a, .shown = MIG_PHASE_MAX };
	struct mig_job j = { .timeout_ms = -1 };
	struct clu_datacenter dc;
	struct mig_job_progress fin = { .failed_in = MIG_PHASE_MAX };
	struct cli_mig_record rec;
	struct mig_qemu *src = NULL;
	struct err *e = NULL;
	char dir[512];
	bool json, running, ok;
	uint32_t vmid;

	r.x.lock_fd = -1;
	if (!cli_ctl_output(a, &json, &e))
		return fail(&r, e);
	cli_progress_init(&r.prog, json ? CLI_OUT_JSON : CLI_OUT_TEXT);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e))
		return fail(&r, e);
	if (!clu_node_name_valid(a->pos[1]))
		return fail(&r, (err_set(&e, ERR_INVAL, "invalid target node name '%s'",
					 a->pos[1]), e));
	if (cli_get(a, "targetstorage") && !parse_targetstorage(&r, cli_get(a, "targetstorage"), &e))
		return fail(&r, e);
	if (cli_get(a, "mirror-mode")) {
		const char *mm = cli_get(a, "mirror-mode");

		if (strcmp(mm, "write-blocking") && strcmp(mm, "background"))
			return fail(&r, (err_set(&e, ERR_INVAL, "invalid --mirror-mode '%s': use "
						 "write-blocking or background", mm), e));
		j.mirror_background = !strcmp(mm, "background");
	}
	r.g = calloc(1, sizeof(*r.g));
	if (!r.g)
		return fail(&r, NULL);
	if (!cli_ctl_open(&r.x, &e) || !clu_datacenter_read(r.x.c, &dc, &e) ||
	    !parse_network(&r, &dc, &j, &e) || !parse_tune(a, &dc, &j, &e))
		return fail(&r, e);
	/* Checks: nothing changes until all of them passed. */
	if (!clu_guest_read(r.x.c, vmid, r.g, &e) || !cli_ctl_check_owner(&r.x, r.g, &e) ||
	    !check_target(&r, a->pos[1], &e) || !quorate(&r.x, &e) ||
	    !cli_ctl_check_unlocked(r.g, &e))
		return fail(&r, e);
	if (!cli_migrate_recover(&r.x, vmid, &e))
		return fail(&r, e);
	/* The guest is ours to move: from here on the task log and the
	 * journal's VMMIGRATE_VMID follow this migration. */
	log_field_set("VMMIGRATE_VMID", a->pos[0]);
	if (!cli_mig_tasklog_open(vmid, &e)) {
		log_warn("guest %" PRIu32 ": no task log: %s", vmid, e->msg);
		err_free(TAKE_PTR(e));
	}
	running = cli_ctl_running(vmid, NULL);
	if (running && !cli_has(a, "online"))
		return fail(&r, (err_set(&e, ERR_STATE, "guest %" PRIu32 " is running: use "
					 "--online for a live migration", vmid), e));
	if (!running && cli_has(a, "online"))
		log_info("guest %" PRIu32 " is not running: migrating it offline", vmid);
	if (cli_repl_mig_find(&r.x, r.g, r.target.name, r.repl_job, sizeof(r.repl_job),
			      r.replicated, &e))
		log_info("guest %" PRIu32 ": replication job %s keeps replicas on %s: only the "
			 "delta since its last sync moves", vmid, r.repl_job, r.target.name);
	else if (e)
		return fail(&r, e);
	if (!check_disks(&r, running, &e))
		return fail(&r, e);
	if (j.cidr && !mig_host_addr_in(j.cidr, r.source_addr, sizeof(r.source_addr), &e)) {
		err_prefix(e, "node %s", r.x.node);
		return fail(&r, e);
	}
	if (!j.cidr) {
		struct cli_mig_peer self;

		if (!cli_mig_peer_read(&r.x, r.x.node, &self, &e))
			return fail(&r, e);
		snprintf(r.source_addr, sizeof(r.source_addr), "%s", self.addr);
		cli_mig_peer_free(&self);
	}
	if (!r.target.host_key)
		return fail(&r, (err_set(&e, ERR_STATE, "node %s has no SSH host key in the "
					 "cluster store to pin (is its vmmd running?)",
					 r.target.name), e));
	/* From here on the guest is ours to move: lock, record. A replication
	 * run of the guest holds the lock for its duration: wait for it. */
	if (!wait_replication(&r, vmid, &e) || !cli_ctl_lock(&r.x, vmid, &e))
		return fail(&r, e);
	rec = (struct cli_mig_record){
		.vmid = vmid, .pid = getpid(), .online = running, .secure = j.secure,
		.was_running = running, .started_ms = wall_ms(),
	};
	snprintf(rec.source, sizeof(rec.source), "%s", r.x.node);
	snprintf(rec.target, sizeof(rec.target), "%s", r.target.name);
	snprintf(rec.phase, sizeof(rec.phase), "%s", mig_phase_name(MIG_PHASE_CHECK));
	for (unsigned i = 0; i < r.nvols; i++) {
		rec.moved[i].conf = r.vol_conf[i];
		snprintf(rec.moved[i].storage, sizeof(rec.moved[i].storage), "%s", r.vols[i].storage);
		snprintf(rec.moved[i].path, sizeof(rec.moved[i].path), "%s", r.vols[i].path);
	}
	rec.nmoved = r.nvols;
	if (!cli_mig_record_create(r.x.c, &rec, &e))
		return fail(&r, e);
	if (running) {
		src = mig_qemu_attach(cli_ctl_run_dir(vmid, dir, sizeof(dir)), 5000, &e);
		if (!src || !source_facts(src, &j, &e)) {
			mig_qemu_release(src);
			cli_mig_record_delete(r.x.c, vmid, NULL);
			return fail(&r, e);
		}
		j.src_qmp = src->qmp;
		j.src_run_dir = dir;
		j.cpu_model = r.g->conf.cpu[0] ? r.g->conf.cpu :
			      j.accel == MIG_ACCEL_KVM ? "host" : "qemu64";
	} else {
		j.cpu_model = r.g->conf.cpu[0] ? r.g->conf.cpu : "qemu64";
		j.accel = MIG_ACCEL_TCG;
	}
	if (r.repl_job[0]) {
		bool any = false;

		for (int i = 0; i < CLU_GUEST_DISKS; i++)
			any |= r.replicated[i];
		/* The replicas catch up while the guest runs on. */
		if (any && (!(r.rm = cli_repl_mig_open(&r.x, r.g, r.repl_job, src ? src->qmp : NULL,
							&e)) || !cli_repl_mig_sync(r.rm, false, &e))) {
			err_prefix(e, "migration of guest %" PRIu32 " to %s aborted before it began "
				   "(replication job %s)", vmid, r.target.name, r.repl_job);
			mig_qemu_release(src);
			cli_mig_record_delete(r.x.c, vmid, NULL);
			return fail(&r, e);
		}
	}
	j.vmid = vmid;
	j.target = r.target.name;
	j.target_ctl_addr = r.target.addr;
	j.target_host_key = r.target.host_key;
	j.ssh_key = cli_mig_ssh_key();
	j.ssh_port = cli_mig_ssh_port();
	j.remote_cmd = cli_mig_remote_cmd(r.remote, sizeof(r.remote));
	j.source_addr = r.source_addr;
	j.online = running;
	j.storages = r.storages;
	j.nstorages = r.nstorages;
	j.volumes = r.vols;
	j.nvolumes = r.nvols;
	j.hooks = (struct mig_job_hooks){
		.persist = hook_persist,
		.check = hook_check,
		.move_owner = hook_move_owner,
		.progress = hook_progress,
		.pre_switchover = r.rm && running ? hook_repl_final : NULL,
		.opaque = &r,
	};
	r.next_renew_ms = util_now_ms() + RENEW_EVERY_MS;
	ok = mig_job_run(&j, &fin, &e);
	if (ok) {
		/* The guest runs on the target: the source's copy goes. */
		if (src && !mig_qemu_stop(TAKE_PTR(src), 10000, &e)) {
			log_error("guest %" PRIu32 " runs on %s, but stopping its old QEMU here "
				  "failed: %s", vmid, j.target, e->msg);
			err_free(TAKE_PTR(e));
		}
		for (unsigned i = 0; i < r.nvols; i++)
			if (unlink(r.vols[i].path) < 0)
				log_warn("cannot remove the source volume '%s': %m", r.vols[i].path);
		if (r.rm && !cli_repl_mig_flip(r.rm, &e)) {
			log_error("guest %" PRIu32 " runs on %s, but turning replication job %s "
				  "around failed: %s (its next sync may send everything)", vmid,
				  j.target, r.repl_job, e->msg);
			err_free(TAKE_PTR(e));
		}
		if (fin.warning[0])
			log_warn("%s", fin.warning);
		summary(&r, &j, &fin);
	} else if (fin.target_lost) {
		/* The owner moved but the target did not resume: never stop our
		 * paused copy on a guess. The crash recovery asks the target what
		 * it runs and keeps whichever side holds the guest. */
		mig_qemu_release(TAKE_PTR(src));
		return target_lost(&r, vmid, j.target, e);
	} else if (fin.failed_in != MIG_PHASE_CHECK) {
		/* A refusal by the target's checks speaks for itself. */
		err_prefix(e, "migration of guest %" PRIu32 " to %s aborted%s", vmid, j.target,
			   running ? ", guest still runs on the source" : "");
	}
	mig_qemu_release(src);
	settle(&r, vmid);
	if (!ok)
		return fail(&r, e);
	log_task_close(NULL);
	run_free(&r);
	return 0;
}

const struct cli_cmd cli_migrate_run = {
	.name = "migrate",
	.posargs = "VMID TARGET",
	.summary = "move a guest to another node (live with --online); also "
		   "'vmmigrate VMID TARGET'",
	.opts = opts,
	.min_pos = 2,
	.max_pos = 2,
	.exec = exec_migrate,
};
