/* ctl_config.c - `vmctl config VMID`: a guest's config from the store, with
 * its owner node; every key that is set, memory/cores/sockets always. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../transport/tp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_opt opts[] = {
	{ "output", CLI_VALUE, "text|json", "output format; default text" },
	{ NULL }
};

static void add_str(struct json_object *o, const char *key, const char *v)
{
	if (*v)
		json_object_object_add(o, key, json_object_new_string(v));
}

/* Keys in config-file order; text output prints them as "key: value". */
static struct json_object *conf_json(const struct clu_guest_rec *r)
{
	const struct clu_guest_conf *g = &r->conf;
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "vmid", json_object_new_int64(r->vmid));
	json_object_object_add(o, "node", json_object_new_string(r->node));
	add_str(o, "name", g->name);
	json_object_object_add(o, "memory", json_object_new_uint64(g->memory));
	json_object_object_add(o, "cores", json_object_new_int64(g->cores));
	json_object_object_add(o, "sockets", json_object_new_int64(g->sockets));
	add_str(o, "cpu", g->cpu);
	add_str(o, "machine", g->machine);
	add_str(o, "kernel", g->kernel);
	add_str(o, "initrd", g->initrd);
	add_str(o, "append", g->append);
	if (g->onboot)
		json_object_object_add(o, "onboot", json_object_new_int(1));
	add_str(o, "lock", g->lock);
	for (int i = 0; i < CLU_GUEST_DISKS; i++) {
		char key[16], val[CLU_CONF_LINE_MAX] = "";

		if (!g->disks[i].present)
			continue;
		snprintf(key, sizeof(key), "virtio%d", i);
		clu_guest_disk_format(&g->disks[i], val, sizeof(val));
		json_object_object_add(o, key, json_object_new_string(val));
	}
	add_str(o, "description", g->description);
	json_object_object_add(o, "version", json_object_new_uint64(r->version));
	return o;
}

static void print_text(struct json_object *o)
{
	struct json_object *d;

	/* The description first, as '#' lines, the way the config file has it. */
	if (json_object_object_get_ex(o, "description", &d)) {
		_cleanup_free_ char *copy = strdup(json_object_get_string(d));

		for (char *line = copy, *next; line; line = next) {
			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			printf("#%s\n", line);
		}
	}
	json_object_object_foreach(o, key, val) {
		if (!strcmp(key, "vmid") || !strcmp(key, "version") || !strcmp(key, "description"))
			continue;
		printf("%s: %s\n", key, json_object_get_string(val));
	}
}

static int exec_config(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	_cleanup_json_ struct json_object *o = NULL;
	struct cli_ctl x = { .lock_fd = -1 };
	struct err *e = NULL;
	uint32_t vmid;
	bool json;

	if (!r)
		return cli_report(a, NULL);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e) || !cli_ctl_output(a, &json, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e))
		return cli_report(a, e);
	if (!clu_guest_read(x.c, vmid, r, &e)) {
		cli_ctl_close(&x);
		return cli_report(a, e);
	}
	cli_ctl_close(&x);
	o = conf_json(r);
	if (json)
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	else
		print_text(o);
	return 0;
}

const struct cli_cmd cli_ctl_config = {
	.name = "config",
	.posargs = "VMID",
	.summary = "show a guest's config and owner node",
	.opts = opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_config,
};
