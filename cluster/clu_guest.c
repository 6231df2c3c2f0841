/*
 * clu_guest.c - guest records in the replicated store: the owner line in
 * front of a guest config, VMIDs, volume paths, and the reads and
 * conditional writes the CLIs make through vmmd. Layout in clu.h.
 */
#include "clu.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define OWNER_PREFIX "node: "

/* ---- records (pure) ------------------------------------------------------ */

bool clu_vmid_parse(const char *s, uint32_t *out, struct err **errp)
{
	size_t n = s ? strlen(s) : 0;
	uint64_t v = 0;

	if (!n || strspn(s, "0123456789") != n)
		return err_set(errp, ERR_INVAL, "invalid VMID '%s': not a number",
			       s ? CLU_Q(s) : "");
	if (s[0] == '0')
		return err_set(errp, ERR_INVAL, "invalid VMID '%s': leading zero", CLU_Q(s));
	if (n > 9)
		return err_set(errp, ERR_INVAL, "invalid VMID '%s': must be %u to %u",
			       CLU_Q(s), CLU_VMID_MIN, CLU_VMID_MAX);
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (v < CLU_VMID_MIN || v > CLU_VMID_MAX)
		return err_set(errp, ERR_INVAL, "invalid VMID '%s': must be %u to %u",
			       s, CLU_VMID_MIN, CLU_VMID_MAX);
	*out = (uint32_t)v;
	return true;
}

const char *clu_guest_key(uint32_t vmid, char *buf, size_t len)
{
	snprintf(buf, len, "guests/%" PRIu32, vmid);
	return buf;
}

bool clu_guest_record_split(const char *record, uint32_t vmid, char *owner,
			    size_t owner_len, const char **conf, struct err **errp)
{
	const size_t plen = strlen(OWNER_PREFIX);
	const char *nl, *name;
	char buf[CLU_NODE_NAME_MAX + 1];
	size_t n;

	if (strncmp(record, OWNER_PREFIX, plen))
		return err_set(errp, ERR_PROTO, "guests/%" PRIu32 ": first line is not "
			       "the owner line 'node: NAME'", vmid);
	name = record + plen;
	nl = strchr(name, '\n');
	n = nl ? (size_t)(nl - name) : strlen(name);
	if (n && name[n - 1] == '\r')
		n--;
	if (n >= sizeof(buf) || n >= owner_len)
		return err_set(errp, ERR_PROTO, "guests/%" PRIu32 ": owner name too long", vmid);
	memcpy(buf, name, n);
	buf[n] = '\0';
	if (!clu_node_name_valid(buf))
		return err_set(errp, ERR_PROTO, "guests/%" PRIu32 ": invalid owner node '%s'",
			       vmid, CLU_Q(buf));
	memcpy(owner, buf, n + 1);
	*conf = nl ? nl + 1 : name + strlen(name);
	return true;
}

bool clu_guest_record_parse(const char *record, uint32_t vmid,
			    struct clu_guest_rec *out, struct err **errp)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	char key[CLU_GUEST_KEY_LEN];
	const char *conf;

	if (!r)
		return err_set(errp, ERR_IO, "out of memory");
	if (!clu_guest_record_split(record, vmid, r->node, sizeof(r->node), &conf, errp) ||
	    !clu_guest_parse(conf, clu_guest_key(vmid, key, sizeof(key)), &r->conf, errp))
		return false;
	r->vmid = vmid;
	*out = *r;
	return true;
}

char *clu_guest_record_format(const struct clu_guest_rec *r, struct err **errp)
{
	_cleanup_free_ char *conf = NULL;
	char *text;

	if (!clu_node_name_valid(r->node)) {
		err_set(errp, ERR_INVAL, "invalid owner node '%s'", CLU_Q(r->node));
		return NULL;
	}
	conf = clu_guest_format(&r->conf, errp);
	if (!conf)
		return NULL;
	if (asprintf(&text, OWNER_PREFIX "%s\n%s", r->node, conf) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	return text;
}

char *clu_volume_path(const struct clu_storage *st, const char *volume,
		      struct err **errp)
{
	char *p;

	if (st->type != CLU_STORAGE_DIR) {
		err_set(errp, ERR_INVAL, "storage '%s' is not a dir storage", st->id);
		return NULL;
	}
	if (asprintf(&p, "%s%simages/%s", st->path,
		     st->path[strlen(st->path) - 1] == '/' ? "" : "/", volume) < 0) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	return p;
}

/* ---- through vmmd ---------------------------------------------------------- */

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : NULL;
}

bool clu_client_node(struct clu_client *c, char *node, size_t len, struct err **errp)
{
	struct json_object *req = json_object_new_object();
	_cleanup_json_ struct json_object *r = NULL;
	const char *n;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	r = clu_client_call(c, req, 10000, errp);
	if (!r)
		return false;
	n = jstr(r, "node");
	if (!n || !*n || strlen(n) >= len)
		return err_set(errp, ERR_PROTO, "vmmd did not say which node it is");
	strcpy(node, n);
	return true;
}

/* The value (caller frees) and version of key, or *out = NULL when it is
 * absent. Asked as a list with the key as prefix, so that absence is an
 * answer rather than an error code to decode. */
static bool get_optional(struct clu_client *c, const char *key, char **out,
			 uint64_t *version, struct err **errp)
{
	struct json_object *req = json_object_new_object(), *entries, *v;
	_cleanup_json_ struct json_object *r = NULL;

	json_object_object_add(req, "cmd", json_object_new_string("list"));
	json_object_object_add(req, "prefix", json_object_new_string(key));
	r = clu_client_call(c, req, 10000, errp);
	if (!r)
		return false;
	if (!json_object_object_get_ex(r, "entries", &entries) ||
	    !json_object_is_type(entries, json_type_array))
		return err_set(errp, ERR_PROTO, "vmmd's list reply has no entries");
	for (size_t i = 0; i < json_object_array_length(entries); i++) {
		struct json_object *en = json_object_array_get_idx(entries, i);
		const char *k = jstr(en, "key"), *value = jstr(en, "value");

		if (!k || strcmp(k, key))
			continue;
		if (!value)
			return err_set(errp, ERR_PROTO, "vmmd listed '%s' without a value", key);
		*out = strdup(value);
		if (!*out)
			return err_set(errp, ERR_IO, "out of memory");
		if (version)
			*version = json_object_object_get_ex(en, "version", &v) ?
					   (uint64_t)json_object_get_int64(v) : 0;
		return true;
	}
	*out = NULL;
	return true;
}

bool clu_guest_read(struct clu_client *c, uint32_t vmid, struct clu_guest_rec *out,
		    struct err **errp)
{
	char key[CLU_GUEST_KEY_LEN];
	_cleanup_free_ char *text = NULL;
	uint64_t version = 0;

	if (!get_optional(c, clu_guest_key(vmid, key, sizeof(key)), &text, &version, errp))
		return false;
	if (!text)
		return err_set(errp, ERR_NOTFOUND, "guest %" PRIu32 " does not exist", vmid);
	if (!clu_guest_record_parse(text, vmid, out, errp))
		return false;
	out->version = version;
	return true;
}

static bool write_record(struct clu_client *c, struct clu_guest_rec *r,
			 enum clu_op_kind kind, struct err **errp)
{
	char key[CLU_GUEST_KEY_LEN];
	_cleanup_free_ char *text = clu_guest_record_format(r, errp);
	struct clu_op op = {
		.kind = kind,
		.key = clu_guest_key(r->vmid, key, sizeof(key)),
		.value = text,
		.if_version = kind == CLU_OP_CREATE ? -1 : (int64_t)r->version,
	};
	struct err *e = NULL;
	uint64_t version;

	if (!text)
		return false;
	if (kind == CLU_OP_PUT && !r->version)
		return err_set(errp, ERR_INVAL, "update of guest %" PRIu32 " without a version",
			       r->vmid);
	if (!clu_client_write(c, &op, &version, &e)) {
		/* Another node created this VMID first: the user's VMID is taken. */
		if (kind == CLU_OP_CREATE && e->code == ERR_CONFLICT) {
			err_free(e);
			return err_set(errp, ERR_INVAL, "VMID %" PRIu32 " already exists", r->vmid);
		}
		err_prefix(e, "guest %" PRIu32 " not saved", r->vmid);
		err_propagate(errp, &e);
		return false;
	}
	r->version = version;
	return true;
}

bool clu_guest_create(struct clu_client *c, struct clu_guest_rec *r, struct err **errp)
{
	return write_record(c, r, CLU_OP_CREATE, errp);
}

bool clu_guest_update(struct clu_client *c, struct clu_guest_rec *r, struct err **errp)
{
	return write_record(c, r, CLU_OP_PUT, errp);
}

bool clu_guest_remove(struct clu_client *c, const struct clu_guest_rec *r,
		      struct err **errp)
{
	char key[CLU_GUEST_KEY_LEN];
	struct clu_op op = {
		.kind = CLU_OP_DELETE,
		.key = clu_guest_key(r->vmid, key, sizeof(key)),
		.if_version = r->version ? (int64_t)r->version : -1,
	};
	struct err *e = NULL;

	if (clu_client_write(c, &op, NULL, &e))
		return true;
	err_prefix(e, "guest %" PRIu32 " not removed", r->vmid);
	err_propagate(errp, &e);
	return false;
}

static const char *lock_key(uint32_t vmid, char *buf, size_t len)
{
	snprintf(buf, len, "locks/guest/%" PRIu32, vmid);
	return buf;
}

/* Who holds a lock key now: true with owner and seconds left if someone
 * does. */
static bool lock_holder(struct clu_client *c, const char *key, char *owner, size_t len,
			int64_t *left_s)
{
	_cleanup_free_ char *v = NULL;
	struct timespec ts;
	int64_t exp;

	if (!get_optional(c, key, &v, NULL, NULL) || !v ||
	    !clu_lock_parse(v, owner, len, &exp))
		return false;
	clock_gettime(CLOCK_REALTIME, &ts);
	*left_s = (exp - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000) + 999) / 1000;
	return true;
}

bool clu_guest_lock(struct clu_client *c, uint32_t vmid, int wait_ms, struct err **errp)
{
	char key[40], owner[CLU_NODE_NAME_MAX + 1];
	struct clu_op op = {
		.kind = CLU_OP_LOCK,
		.key = lock_key(vmid, key, sizeof(key)),
		.if_version = -1,
		.ttl_ms = CLU_GUEST_LOCK_TTL_MS,
	};
	int64_t deadline = util_now_ms() + wait_ms, left_s = 0;
	struct err *e = NULL;

	/* The owner is left out: vmmd stamps this node's name. ERR_CONFLICT is
	 * "another node holds it now": wait and try again. The holder may have
	 * released it by the time we look, so reading the lock only names the
	 * holder for the message; it never decides whether to retry. */
	snprintf(owner, sizeof(owner), "another node");
	for (;;) {
		if (clu_client_write(c, &op, NULL, &e))
			return true;
		if (e->code != ERR_CONFLICT) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
		e = NULL;
		lock_holder(c, op.key, owner, sizeof(owner), &left_s);
		if (util_now_ms() >= deadline)
			break;
		usleep(100 * 1000);
	}
	return err_set(errp, ERR_STATE, "guest %" PRIu32 " is locked by %s (for another %"
		       PRId64 " s)", vmid, owner, left_s > 0 ? left_s : 0);
}

bool clu_guest_unlock(struct clu_client *c, uint32_t vmid, struct err **errp)
{
	char key[40];
	struct clu_op op = {
		.kind = CLU_OP_UNLOCK,
		.key = lock_key(vmid, key, sizeof(key)),
		.if_version = -1,
	};

	return clu_client_write(c, &op, NULL, errp);
}

struct listed {
	uint32_t vmid;
	struct json_object *entry;
};

static int by_vmid(const void *a, const void *b)
{
	const struct listed *x = a, *y = b;

	return x->vmid < y->vmid ? -1 : x->vmid > y->vmid;
}

bool clu_guest_list(struct clu_client *c, clu_guest_visit_fn fn, void *opaque,
		    struct err **errp)
{
	struct json_object *req = json_object_new_object(), *entries;
	_cleanup_json_ struct json_object *r = NULL;
	_cleanup_free_ struct listed *items = NULL;
	_cleanup_free_ struct clu_guest_rec *rec = calloc(1, sizeof(*rec));
	size_t n = 0, len;

	json_object_object_add(req, "cmd", json_object_new_string("list"));
	json_object_object_add(req, "prefix", json_object_new_string("guests/"));
	if (!rec) {
		json_object_put(req);
		return err_set(errp, ERR_IO, "out of memory");
	}
	r = clu_client_call(c, req, 30000, errp);
	if (!r)
		return false;
	if (!json_object_object_get_ex(r, "entries", &entries) ||
	    !json_object_is_type(entries, json_type_array))
		return err_set(errp, ERR_PROTO, "vmmd's list reply has no entries");
	len = json_object_array_length(entries);
	items = calloc(len ? len : 1, sizeof(*items));
	if (!items)
		return err_set(errp, ERR_IO, "out of memory");
	for (size_t i = 0; i < len; i++) {
		struct json_object *en = json_object_array_get_idx(entries, i);
		const char *key = jstr(en, "key");
		uint32_t vmid;

		/* Only "guests/<vmid>": anything else under guests/ is not ours. */
		if (!key || !clu_vmid_parse(key + strlen("guests/"), &vmid, NULL))
			continue;
		items[n++] = (struct listed){ vmid, en };
	}
	qsort(items, n, sizeof(*items), by_vmid);
	for (size_t i = 0; i < n; i++) {
		const char *value = jstr(items[i].entry, "value");
		struct json_object *v;
		struct err *bad = NULL;
		bool go;

		rec->version = 0;
		if (!value)
			err_set(&bad, ERR_PROTO, "guests/%" PRIu32 ": no value", items[i].vmid);
		else if (clu_guest_record_parse(value, items[i].vmid, rec, &bad) &&
			 json_object_object_get_ex(items[i].entry, "version", &v))
			rec->version = (uint64_t)json_object_get_int64(v);
		go = fn(items[i].vmid, bad ? NULL : rec, bad, opaque);
		err_free(bad);
		if (!go)
			break;
	}
	return true;
}

bool clu_datacenter_read(struct clu_client *c, struct clu_datacenter *out,
			 struct err **errp)
{
	_cleanup_free_ char *text = NULL;

	if (!get_optional(c, "datacenter.cfg", &text, NULL, errp))
		return false;
	if (!text) {
		clu_datacenter_defaults(out);
		return true;
	}
	return clu_datacenter_parse(text, "datacenter.cfg", out, errp);
}

bool clu_storage_read(struct clu_client *c, const char *default_path,
		      struct clu_storage_conf *out, bool *defaulted, struct err **errp)
{
	_cleanup_free_ char *text = NULL, *dflt = NULL, *both = NULL;

	if (!get_optional(c, "storage.cfg", &text, NULL, errp))
		return false;
	if (asprintf(&dflt, "dir: local\n\tpath %s\n",
		     default_path) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	if (text) {
		struct clu_storage_conf probe = { 0 };
		bool has_local;

		if (!clu_storage_parse(text, "storage.cfg", &probe, errp))
			return false;
		has_local = clu_storage_find(&probe, "local") != NULL;
		clu_storage_conf_free(&probe);
		/* "local" is every node's own directory unless storage.cfg
		 * says otherwise (Proxmox's /var/lib/vz). */
		if (!has_local && asprintf(&both, "%s\n%s", dflt, text) < 0)
			return err_set(errp, ERR_IO, "out of memory");
		if (!clu_storage_parse(has_local ? text : both, "storage.cfg", out, errp))
			return false;
		if (defaulted)
			*defaulted = !has_local;
		return true;
	}
	/* Parsed like a file so a bad default path is named, not used. */
	if (!clu_storage_parse(dflt, "default storage.cfg", out, errp))
		return false;
	if (defaulted)
		*defaulted = true;
	return true;
}
