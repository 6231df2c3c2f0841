/* clu_op.c - store ops: names, key rules and their JSON form. See clu.h. */
#include "clu.h"
#include "../common/util.h"

#include <ctype.h>
#include <string.h>

static const char *const op_names[] = {
	[CLU_OP_PUT] = "put",
	[CLU_OP_CREATE] = "create",
	[CLU_OP_DELETE] = "delete",
	[CLU_OP_LOCK] = "lock",
	[CLU_OP_UNLOCK] = "unlock",
};
_Static_assert(ARRAY_SIZE(op_names) == CLU_OP_MAX, "op_names");

const char *clu_op_name(enum clu_op_kind k)
{
	return (unsigned)k < CLU_OP_MAX ? op_names[k] : "?";
}

bool clu_op_kind_parse(const char *s, enum clu_op_kind *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(op_names); i++)
		if (s && !strcmp(s, op_names[i])) {
			*out = (enum clu_op_kind)i;
			return true;
		}
	return false;
}

bool clu_key_check(const char *key, struct err **errp)
{
	size_t len = key ? strlen(key) : 0;
	const char *p;

	if (!len || len > CLU_KEY_MAX)
		return err_set(errp, ERR_INVAL, "invalid key '%.64s': must be 1-%d bytes",
			       key ? key : "", CLU_KEY_MAX);
	for (p = key; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("_.:/-", *p))
			return err_set(errp, ERR_INVAL, "invalid key '%.64s': bad character", key);
	if (key[0] == '/' || key[len - 1] == '/' || strstr(key, "//") ||
	    !strcmp(key, "..") || !strncmp(key, "../", 3) || strstr(key, "/../") ||
	    (len >= 3 && !strcmp(key + len - 3, "/..")))
		return err_set(errp, ERR_INVAL, "invalid key '%.64s': empty or '..' component",
			       key);
	return true;
}

struct json_object *clu_op_to_json(const struct clu_op *op)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "op", json_object_new_string(clu_op_name(op->kind)));
	json_object_object_add(o, "key", json_object_new_string(op->key));
	if (op->value)
		json_object_object_add(o, "value", json_object_new_string(op->value));
	if (op->if_version >= 0)
		json_object_object_add(o, "if_version", json_object_new_int64(op->if_version));
	if (op->owner)
		json_object_object_add(o, "owner", json_object_new_string(op->owner));
	if (op->ttl_ms)
		json_object_object_add(o, "ttl_ms", json_object_new_int64(op->ttl_ms));
	json_object_object_add(o, "ts_ms", json_object_new_int64(op->ts_ms));
	return o;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(struct json_object *o, const char *k, int64_t def)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || !json_object_is_type(v, json_type_int))
		return def;
	return json_object_get_int64(v);
}

bool clu_op_from_json(struct json_object *o, struct clu_op *op, struct err **errp)
{
	struct clu_op r = { .if_version = -1 };
	const char *kind = jstr(o, "op");

	if (!clu_op_kind_parse(kind, &r.kind))
		return err_set(errp, ERR_INVAL, "invalid op '%s'", kind ? kind : "");
	r.key = jstr(o, "key");
	if (!clu_key_check(r.key, errp))
		return false;
	r.value = jstr(o, "value");
	r.owner = jstr(o, "owner");
	r.if_version = jint(o, "if_version", -1);
	r.ttl_ms = jint(o, "ttl_ms", 0);
	r.ts_ms = jint(o, "ts_ms", 0);
	if ((r.kind == CLU_OP_PUT || r.kind == CLU_OP_CREATE) && !r.value)
		return err_set(errp, ERR_INVAL, "%s '%s' needs a value", clu_op_name(r.kind), r.key);
	if (r.value && strlen(r.value) > CLU_VALUE_MAX)
		return err_set(errp, ERR_INVAL, "value for '%s' is larger than %u bytes", r.key,
			       CLU_VALUE_MAX);
	if ((r.kind == CLU_OP_LOCK || r.kind == CLU_OP_UNLOCK) && (!r.owner || !*r.owner))
		return err_set(errp, ERR_INVAL, "%s '%s' needs an owner", clu_op_name(r.kind), r.key);
	if (r.kind == CLU_OP_LOCK && (r.ttl_ms <= 0 || r.ttl_ms > 86400000))
		return err_set(errp, ERR_INVAL, "lock '%s' needs a ttl of 1 ms to 1 day", r.key);
	*op = r;
	return true;
}
