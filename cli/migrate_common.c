/* migrate_common.c - the migration record in the store, peers and SSH
 * settings, and recovery after a crashed worker. See migrate.h. */
#include "migrate.h"
#include "../common/cleanup.h"
#include "../common/log.h"
#include "../common/util.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD_RETRIES 20

const char *cli_mig_key(uint32_t vmid, char *buf, size_t len)
{
	snprintf(buf, len, "migrations/%" PRIu32, vmid);
	return buf;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

static bool jbool(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_get_boolean(v);
}

bool cli_mig_record_parse(const char *text, struct cli_mig_record *r, struct err **errp)
{
	_cleanup_json_ struct json_object *o = json_tokener_parse(text);
	struct json_object *v;

	*r = (struct cli_mig_record){ .vmid = 0 };
	if (!o || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "vmid", &v))
		return err_set(errp, ERR_PROTO, "malformed migration record");
	r->vmid = (uint32_t)json_object_get_int64(v);
	snprintf(r->source, sizeof(r->source), "%s", jstr(o, "source") ?: "?");
	snprintf(r->target, sizeof(r->target), "%s", jstr(o, "target") ?: "?");
	snprintf(r->phase, sizeof(r->phase), "%s", jstr(o, "phase") ?: "?");
	snprintf(r->cancel_by, sizeof(r->cancel_by), "%s", jstr(o, "cancel_by") ?: "");
	if (json_object_object_get_ex(o, "pid", &v))
		r->pid = (pid_t)json_object_get_int(v);
	if (json_object_object_get_ex(o, "started_ms", &v))
		r->started_ms = json_object_get_int64(v);
	r->online = jbool(o, "online");
	r->secure = jstr(o, "type") && !strcmp(jstr(o, "type"), "secure");
	r->was_running = jbool(o, "was_running");
	r->cancel = jbool(o, "cancel");
	if (json_object_object_get_ex(o, "moved", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v) && r->nmoved < MIG_MAX_DISKS;
		     i++) {
			struct json_object *m = json_object_array_get_idx(v, i);
			struct cli_mig_moved *d = &r->moved[r->nmoved];
			int64_t conf;

			if (!json_object_is_type(m, json_type_array) ||
			    json_object_array_length(m) != 3)
				return err_set(errp, ERR_PROTO, "malformed migration record: moved");
			conf = json_object_get_int64(json_object_array_get_idx(m, 0));
			if (conf < 0 || conf >= CLU_GUEST_DISKS)
				return err_set(errp, ERR_PROTO, "malformed migration record: moved");
			d->conf = (unsigned)conf;
			snprintf(d->storage, sizeof(d->storage), "%s",
				 json_object_get_string(json_object_array_get_idx(m, 1)));
			snprintf(d->path, sizeof(d->path), "%s",
				 json_object_get_string(json_object_array_get_idx(m, 2)));
			r->nmoved++;
		}
	}
	return true;
}

static struct json_object *record_json(const struct cli_mig_record *r)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "vmid", json_object_new_int64(r->vmid));
	json_object_object_add(o, "source", json_object_new_string(r->source));
	json_object_object_add(o, "target", json_object_new_string(r->target));
	json_object_object_add(o, "pid", json_object_new_int((int)r->pid));
	json_object_object_add(o, "phase", json_object_new_string(r->phase));
	json_object_object_add(o, "online", json_object_new_boolean(r->online));
	json_object_object_add(o, "type", json_object_new_string(r->secure ? "secure" : "insecure"));
	json_object_object_add(o, "was_running", json_object_new_boolean(r->was_running));
	json_object_object_add(o, "started_ms", json_object_new_int64(r->started_ms));
	json_object_object_add(o, "cancel", json_object_new_boolean(r->cancel));
	if (r->cancel_by[0])
		json_object_object_add(o, "cancel_by", json_object_new_string(r->cancel_by));
	if (r->nmoved) {
		struct json_object *arr = json_object_new_array();

		for (unsigned i = 0; i < r->nmoved; i++) {
			struct json_object *m = json_object_new_array();

			json_object_array_add(m, json_object_new_int((int)r->moved[i].conf));
			json_object_array_add(m, json_object_new_string(r->moved[i].storage));
			json_object_array_add(m, json_object_new_string(r->moved[i].path));
			json_object_array_add(arr, m);
		}
		json_object_object_add(o, "moved", arr);
	}
	return o;
}

bool cli_mig_record_read(struct clu_client *c, uint32_t vmid, struct cli_mig_record *r,
			 uint64_t *version, struct err **errp)
{
	char key[CLI_MIG_KEY_LEN];
	_cleanup_free_ char *v = clu_client_get(c, cli_mig_key(vmid, key, sizeof(key)), version,
						errp);

	return v && cli_mig_record_parse(v, r, errp);
}

static bool write_record(struct clu_client *c, const struct cli_mig_record *r,
			 enum clu_op_kind kind, int64_t if_version, struct err **errp)
{
	_cleanup_json_ struct json_object *o = record_json(r);
	char key[CLI_MIG_KEY_LEN];
	struct clu_op op = {
		.kind = kind,
		.key = cli_mig_key(r->vmid, key, sizeof(key)),
		.value = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
		.if_version = if_version,
	};

	return clu_client_write(c, &op, NULL, errp);
}

bool cli_mig_record_create(struct clu_client *c, const struct cli_mig_record *r,
			   struct err **errp)
{
	return write_record(c, r, CLU_OP_CREATE, -1, errp);
}

bool cli_mig_record_phase(struct clu_client *c, uint32_t vmid, const char *phase,
			  bool *cancel, struct err **errp)
{
	for (int i = 0; i < RECORD_RETRIES; i++) {
		struct cli_mig_record r;
		uint64_t version;
		struct err *e = NULL;

		if (!cli_mig_record_read(c, vmid, &r, &version, errp))
			return false;
		if (cancel)
			*cancel = r.cancel;
		if (!strcmp(r.phase, phase))
			return true;
		snprintf(r.phase, sizeof(r.phase), "%s", phase);
		if (write_record(c, &r, CLU_OP_PUT, (int64_t)version, &e))
			return true;
		if (e->code != ERR_CONFLICT) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e); /* someone (cancel) wrote meanwhile: read again */
	}
	return err_set(errp, ERR_CONFLICT, "migration record of guest %" PRIu32
		       " keeps changing", vmid);
}

bool cli_mig_record_delete(struct clu_client *c, uint32_t vmid, struct err **errp)
{
	char key[CLI_MIG_KEY_LEN];
	struct clu_op op = {
		.kind = CLU_OP_DELETE,
		.key = cli_mig_key(vmid, key, sizeof(key)),
		.if_version = -1,
	};
	struct err *e = NULL;

	if (clu_client_write(c, &op, NULL, &e))
		return true;
	if (e->code == ERR_NOTFOUND) {
		err_free(e);
		return true;
	}
	err_propagate(errp, &e);
	return false;
}

bool cli_mig_worker_alive(pid_t pid)
{
	char path[64];
	_cleanup_free_ char *cmd = NULL;

	if (pid <= 0 || !util_pid_alive(pid))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	cmd = util_read_file(path, 4096, NULL);
	/* argv[0] ends in "vmmigrate": a recycled pid is someone else. */
	return cmd && strstr(cmd, "vmmigrate") != NULL;
}

/* ---- peers ---------------------------------------------------------------------- */

bool cli_mig_peer_read(struct cli_ctl *x, const char *node, struct cli_mig_peer *p,
		       struct err **errp)
{
	struct json_object *req = json_object_new_object(), *list, *v, *links;
	_cleanup_json_ struct json_object *st = NULL, *rec = NULL;
	_cleanup_free_ char *val = NULL;
	char key[CLU_KEY_MAX];
	struct err *e = NULL;
	bool found = false;

	*p = (struct cli_mig_peer){ .host_key = NULL };
	snprintf(p->name, sizeof(p->name), "%s", node);
	json_object_object_add(req, "cmd", json_object_new_string("status"));
	st = clu_client_call(x->c, req, 10000, errp);
	if (!st)
		return false;
	if (json_object_object_get_ex(st, "nodelist", &list) &&
	    json_object_is_type(list, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(list) && !found; i++) {
			struct json_object *n = json_object_array_get_idx(list, i);

			if (!jstr(n, "name") || strcmp(jstr(n, "name"), node))
				continue;
			found = true;
			p->online = jbool(n, "online") && jbool(n, "vmmd");
			if (json_object_object_get_ex(n, "links", &links) &&
			    json_object_array_length(links) > 0 &&
			    json_object_object_get_ex(json_object_array_get_idx(links, 0), "addr", &v))
				snprintf(p->addr, sizeof(p->addr), "%s", json_object_get_string(v));
		}
	}
	if (!found)
		return err_set(errp, ERR_NOTFOUND, "unknown target node '%s' (not in the "
			       "cluster's nodelist)", node);
	snprintf(key, sizeof(key), "nodes/%s", node);
	val = clu_client_get(x->c, key, NULL, &e);
	if (!val) {
		if (e->code != ERR_NOTFOUND) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
		return true; /* never registered: no key to pin (refused later) */
	}
	rec = json_tokener_parse(val);
	p->maintenance = rec && jbool(rec, "maintenance");
	if (rec && jstr(rec, "ssh_host_key"))
		p->host_key = strdup(jstr(rec, "ssh_host_key"));
	return true;
}

void cli_mig_peer_free(struct cli_mig_peer *p)
{
	free(p->host_key);
	p->host_key = NULL;
}

const char *cli_mig_ssh_key(void)
{
	const char *k = getenv("VMM_SSH_KEY");

	return k && *k ? k : "/root/.ssh/id_ed25519";
}

unsigned cli_mig_ssh_port(void)
{
	const char *p = getenv("VMM_SSH_PORT");
	uint64_t v;

	return p && util_parse_u64(p, 1, 65535, "port", &v, NULL) ? (unsigned)v : 22;
}

bool cli_mig_record_list(struct clu_client *c,
			 bool (*fn)(const struct cli_mig_record *r, const char *text, void *opaque),
			 void *opaque, struct err **errp)
{
	struct json_object *req = json_object_new_object(), *entries = NULL;
	_cleanup_json_ struct json_object *rep = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("list"));
	json_object_object_add(req, "prefix", json_object_new_string("migrations/"));
	rep = clu_client_call(c, req, 10000, errp);
	if (!rep)
		return false;
	json_object_object_get_ex(rep, "entries", &entries);
	for (size_t i = 0; entries && i < json_object_array_length(entries); i++) {
		struct json_object *ent = json_object_array_get_idx(entries, i), *val = NULL;
		struct cli_mig_record r;

		if (json_object_is_type(ent, json_type_array))
			val = json_object_array_get_idx(ent, 1);
		else
			json_object_object_get_ex(ent, "value", &val);
		if (val && cli_mig_record_parse(json_object_get_string(val), &r, NULL) &&
		    !fn(&r, json_object_get_string(val), opaque))
			break;
	}
	return true;
}

const char *cli_mig_remote_cmd(char *buf, size_t len)
{
	const char *r = getenv("VMM_REMOTE_VMMIGRATE");
	ssize_t n;

	if (r && *r) {
		snprintf(buf, len, "%s", r);
		return buf;
	}
	/* The cluster's nodes run the same build at the same path; the
	 * caller may be vmmd (its recovery), so: our directory's vmmigrate. */
	n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0 || !memchr(buf, '/', (size_t)n)) {
		snprintf(buf, len, "vmmigrate");
		return buf;
	}
	buf[n] = '\0';
	snprintf(strrchr(buf, '/') + 1, len - (size_t)(strrchr(buf, '/') + 1 - buf), "vmmigrate");
	return buf;
}

const char *cli_mig_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : NULL;
}

bool cli_mig_jint(struct json_object *o, const char *key, int64_t *out)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return false;
	*out = json_object_get_int64(v);
	return true;
}
