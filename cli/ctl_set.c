/* ctl_set.c - `vmctl set VMID` (change config keys, add disks) and
 * `vmctl unlock VMID` (clear a config's lock). Both write with if_version
 * = the version read, under the guest's locks. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_opt set_opts[] = {
	{ "name", CLI_VALUE, "NAME", "guest name" },
	{ "memory", CLI_VALUE, "MiB", "RAM in MiB (16-4194304); guest must be stopped" },
	{ "cores", CLI_VALUE, "N", "CPU cores per socket; guest must be stopped" },
	{ "sockets", CLI_VALUE, "N", "CPU sockets; guest must be stopped" },
	{ "cpu", CLI_VALUE, "MODEL", "CPU model; guest must be stopped" },
	{ "kernel", CLI_VALUE, "FILE", "kernel to boot (next start)" },
	{ "initrd", CLI_VALUE, "FILE", "initramfs (next start)" },
	{ "append", CLI_VALUE, "ARGS", "kernel command line (next start)" },
	{ "onboot", CLI_VALUE, "0|1", "start the guest when its node boots" },
	{ "disk", CLI_LIST, "STORAGE:SIZE[,format=qcow2]", "add a new disk (raw unless format=qcow2); guest must be stopped" },
	{ "delete", CLI_VALUE, "KEYS", "reset these keys to their defaults, e.g. name,kernel" },
	{ NULL }
};

static const struct cli_opt unlock_opts[] = {
	{ NULL }
};

static const char *const keys[] = {
	"name", "memory", "cores", "sockets", "cpu", "kernel", "initrd", "append", "onboot",
};

#define MAX_DELETE 16

struct change {
	const char *del[MAX_DELETE];
	unsigned ndel;
	char delbuf[256];
	struct cli_ctl_disk_req disks[CLI_MAX_LIST];
	unsigned ndisks;
	bool hardware;  /* needs the owner node and the guest stopped */
	const char *hw_key;
	bool boot;      /* kernel/initrd/append touched */
};

/* Checks every value against a scratch config: bad input fails before
 * anything is read or locked. */
static bool parse_change(const struct cli_args *a, struct change *ch, struct err **errp)
{
	_cleanup_free_ struct clu_guest_conf *g = malloc(sizeof(*g));
	const char *const *disks;
	const char *d = cli_get(a, "delete");
	bool any = false;

	if (!g)
		return err_set(errp, ERR_IO, "out of memory");
	clu_guest_conf_defaults(g);
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (!cli_get(a, keys[i]))
			continue;
		if (!cli_ctl_conf_set(g, keys[i], cli_get(a, keys[i]), errp))
			return false;
		any = true;
		if (cli_ctl_conf_is_hardware(keys[i]) && !ch->hardware) {
			ch->hardware = true;
			ch->hw_key = keys[i];
		}
		ch->boot |= !strcmp(keys[i], "kernel") || !strcmp(keys[i], "initrd") ||
			    !strcmp(keys[i], "append");
	}
	if (d) {
		if (strlen(d) >= sizeof(ch->delbuf))
			return err_set(errp, ERR_INVAL, "invalid --delete '%.32s...': too long", d);
		strcpy(ch->delbuf, d);
		for (char *k = strtok(ch->delbuf, ", "); k; k = strtok(NULL, ", ")) {
			if (ch->ndel == MAX_DELETE)
				return err_set(errp, ERR_INVAL, "invalid --delete '%s': too many keys", d);
			if (!cli_ctl_conf_reset(g, k, errp))
				return false;
			for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
				if (!strcmp(keys[i], k) && cli_get(a, k))
					return err_set(errp, ERR_INVAL, "'%s' is both set (--%s) and "
						       "deleted (--delete)", k, k);
			ch->del[ch->ndel++] = k;
			any = true;
			if (cli_ctl_conf_is_hardware(k) && !ch->hardware) {
				ch->hardware = true;
				ch->hw_key = k;
			}
			ch->boot |= !strcmp(k, "kernel");
		}
		if (!ch->ndel)
			return err_set(errp, ERR_INVAL, "invalid --delete '%s': no keys", d);
	}
	disks = cli_list(a, "disk", &ch->ndisks);
	for (unsigned i = 0; i < ch->ndisks; i++)
		if (!cli_ctl_disk_parse(disks[i], &ch->disks[i], errp))
			return false;
	if (ch->ndisks && !ch->hardware) {
		ch->hardware = true;
		ch->hw_key = "disks";
	}
	if (!any && !ch->ndisks)
		return err_set(errp, ERR_INVAL, "nothing to change: give at least one option "
			       "(see 'vmctl set --help')");
	return true;
}

static bool apply(const struct cli_args *a, const struct change *ch, struct clu_guest_conf *g,
		  struct err **errp)
{
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		if (cli_get(a, keys[i]) && !cli_ctl_conf_set(g, keys[i], cli_get(a, keys[i]), errp))
			return false;
	for (unsigned i = 0; i < ch->ndel; i++)
		if (!cli_ctl_conf_reset(g, ch->del[i], errp))
			return false;
	/* Only a change of the boot files is checked against this node's files. */
	return !ch->boot || cli_ctl_check_boot(g, errp);
}

static int exec_set(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	_cleanup_free_ struct change *ch = calloc(1, sizeof(*ch));
	struct cli_ctl_storages st = { .defaulted = false };
	struct cli_ctl x = { .lock_fd = -1 };
	struct cli_ctl_alloc al = { .n = 0 };
	struct err *e = NULL;
	bool have_st = false;
	uint32_t vmid;
	int rc = 1;

	if (!r || !ch)
		return cli_report(a, NULL);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e) || !parse_change(a, ch, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_ctl_lock(&x, vmid, &e) ||
	    !clu_guest_read(x.c, vmid, r, &e) || !cli_ctl_check_unlocked(r, &e))
		goto out;
	if (ch->hardware) {
		pid_t pid;

		/* Only the owner can tell whether the guest runs. */
		if (strcmp(r->node, x.node)) {
			err_set(&e, ERR_INVAL, "guest %" PRIu32 " is owned by %s (this is %s): "
				"change %s there", vmid, r->node, x.node, ch->hw_key);
			goto out;
		}
		if (cli_ctl_running(vmid, &pid)) {
			err_set(&e, ERR_STATE, "guest %" PRIu32 " is running (pid %d): stop it to "
				"change %s", vmid, (int)pid, ch->hw_key);
			goto out;
		}
	}
	if (!apply(a, ch, &r->conf, &e))
		goto out;
	if (ch->ndisks) {
		if (!cli_ctl_storages_read(&x, &st, &e))
			goto out;
		have_st = true;
		if (!cli_ctl_alloc_disks(&x, &st, vmid, ch->disks, ch->ndisks, &r->conf, &al, &e))
			goto out;
	}
	if (!clu_guest_update(x.c, r, &e)) {
		cli_ctl_alloc_undo(&al);
		goto out;
	}
	printf("updated guest %" PRIu32 "\n", vmid);
	for (unsigned i = 0; i < al.n; i++)
		printf("  %s\n", al.paths[i]);
	cli_ctl_alloc_keep(&al);
	rc = 0;
out:
	if (have_st)
		cli_ctl_storages_free(&st);
	if (x.c)
		cli_ctl_close(&x);
	return rc ? cli_report(a, e) : 0;
}

static int exec_unlock(const struct cli_args *a)
{
	_cleanup_free_ struct clu_guest_rec *r = calloc(1, sizeof(*r));
	struct cli_ctl x = { .lock_fd = -1 };
	char was[CLU_GUEST_LOCK_MAX + 1];
	struct err *e = NULL;
	uint32_t vmid;
	int rc = 1;

	if (!r)
		return cli_report(a, NULL);
	if (!cli_ctl_vmid(a->pos[0], &vmid, &e))
		return cli_report(a, e);
	if (!cli_ctl_open(&x, &e) || !cli_ctl_lock(&x, vmid, &e) ||
	    !clu_guest_read(x.c, vmid, r, &e))
		goto out;
	if (!r->conf.lock[0]) {
		printf("guest %" PRIu32 " is not locked\n", vmid);
		rc = 0;
		goto out;
	}
	strcpy(was, r->conf.lock);
	r->conf.lock[0] = '\0';
	if (!clu_guest_update(x.c, r, &e))
		goto out;
	printf("unlocked guest %" PRIu32 " (was locked: %s)\n", vmid, was);
	rc = 0;
out:
	if (x.c)
		cli_ctl_close(&x);
	return rc ? cli_report(a, e) : 0;
}

const struct cli_cmd cli_ctl_set = {
	.name = "set",
	.posargs = "VMID",
	.summary = "change a guest's config (memory, CPUs, disks: owner node, guest stopped)",
	.opts = set_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_set,
};

const struct cli_cmd cli_ctl_unlock = {
	.name = "unlock",
	.posargs = "VMID",
	.summary = "clear the lock a guest's config holds (e.g. after a failed migration)",
	.opts = unlock_opts,
	.min_pos = 1,
	.max_pos = 1,
	.exec = exec_unlock,
};
