/*
 * clu_validate.c - what vmmd checks before it proposes a write: values of
 * keys the cluster understands must parse, so a typo in datacenter.cfg or
 * a guest config is refused at the door with the parser's file:line error
 * and never reaches any node's store. Unknown keys are free-form.
 */
#include "clu.h"
#include "clu_conf.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>

static bool check_node(const char *name, const char *value, struct err **errp)
{
	struct json_object *o, *v;
	bool ok;

	if (!clu_node_name_valid(name))
		return err_set(errp, ERR_INVAL, "invalid node name '%s' in key 'nodes/%s'", name,
			       name);
	o = json_tokener_parse(value);
	ok = o && json_object_is_type(o, json_type_object) &&
	     json_object_object_get_ex(o, "nodeid", &v) && json_object_is_type(v, json_type_int) &&
	     (!json_object_object_get_ex(o, "maintenance", &v) ||
	      json_object_is_type(v, json_type_boolean));
	json_object_put(o);
	if (!ok)
		return err_set(errp, ERR_INVAL,
			       "invalid record for node '%s': want {\"nodeid\":N,\"maintenance\":bool,...}",
			       name);
	return true;
}

bool clu_value_check(const char *key, const char *value, struct err **errp)
{
	if (!strcmp(key, "datacenter.cfg")) {
		struct clu_datacenter dc;

		return clu_datacenter_parse(value, "datacenter.cfg", &dc, errp);
	}
	if (!strcmp(key, "storage.cfg")) {
		struct clu_storage_conf sc = { 0 };
		bool ok = clu_storage_parse(value, "storage.cfg", &sc, errp);

		clu_storage_conf_free(&sc);
		return ok;
	}
	if (!strcmp(key, "replication.cfg")) {
		struct clu_repl_conf rc = { 0 };
		bool ok = clu_repl_parse(value, "replication.cfg", &rc, errp);

		clu_repl_conf_free(&rc);
		return ok;
	}
	if (!strncmp(key, "guests/", 7)) {
		_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
		uint64_t vmid;

		if (!r)
			return err_set(errp, ERR_IO, "out of memory");
		if (!util_parse_u64(key + 7, 1, 999999999, "VMID", &vmid, errp))
			return false;
		return clu_guest_record_parse(value, (uint32_t)vmid, r, errp);
	}
	if (!strncmp(key, "nodes/", 6))
		return check_node(key + 6, value, errp);
	if (!strcmp(key, "cluster/corosync.conf") && !clu_cc_text_version(value))
		return err_set(errp, ERR_INVAL, "cluster/corosync.conf has no totem config_version");
	return true;
}
