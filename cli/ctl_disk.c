/* ctl_disk.c - storages as this node sees them, and guest volumes: sparse
 * raw files <storage path>/images/<vmid>/vm-<vmid>-disk-<n>.raw, or qcow2
 * images named .qcow2 (the name is what says the format). See ctl.h. */
#include "ctl.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../replicate/repl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_SIZE_MIN (1ULL << 20)
#define DISK_SIZE_MAX (1ULL << 50) /* as the guest config allows */

bool cli_ctl_disk_parse(const char *s, struct cli_ctl_disk_req *out, struct err **errp)
{
	const char *colon = strchr(s, ':'), *comma;
	char id[CLU_STORAGE_ID_MAX + 2], sz[32];
	size_t n = colon ? (size_t)(colon - s) : 0;
	uint64_t size;
	bool qcow2 = false;

	if (!colon || !n || !colon[1])
		return err_set(errp, ERR_INVAL, "invalid --disk '%s': expected STORAGE:SIZE "
			       "(e.g. local:32G)", CLU_Q(s));
	if (n >= sizeof(id))
		return err_set(errp, ERR_INVAL, "invalid storage ID in --disk '%s': too long",
			       CLU_Q(s));
	memcpy(id, s, n);
	id[n] = '\0';
	if (!clu_storage_id_valid(id))
		return err_set(errp, ERR_INVAL, "invalid storage ID '%s' in --disk '%s'",
			       CLU_Q(id), CLU_Q(s));
	/* STORAGE:SIZE[,format=raw|qcow2], as in Proxmox. */
	comma = strchr(colon + 1, ',');
	if (comma) {
		if (!strcmp(comma + 1, "format=qcow2"))
			qcow2 = true;
		else if (strcmp(comma + 1, "format=raw"))
			return err_set(errp, ERR_INVAL, "invalid disk option '%s' in --disk '%s': "
				       "expected format=raw or format=qcow2", CLU_Q(comma + 1),
				       CLU_Q(s));
	}
	n = comma ? (size_t)(comma - colon - 1) : strlen(colon + 1);
	if (n >= sizeof(sz))
		return err_set(errp, ERR_INVAL, "invalid disk size in --disk '%s': too long", CLU_Q(s));
	memcpy(sz, colon + 1, n);
	sz[n] = '\0';
	/* A bare number is GiB, as in Proxmox (`--virtio0 local:32`). */
	if (!util_parse_size(sz, 1ULL << 30, DISK_SIZE_MIN, DISK_SIZE_MAX,
			     "disk size", &size, errp))
		return false;
	if (size % 512)
		return err_set(errp, ERR_INVAL, "invalid disk size '%s': not a multiple of "
			       "512 bytes", CLU_Q(colon + 1));
	strcpy(out->storage, id);
	out->size = size;
	out->qcow2 = qcow2;
	out->arg = s;
	return true;
}

bool cli_ctl_storages_read(struct cli_ctl *x, struct cli_ctl_storages *st, struct err **errp)
{
	*st = (struct cli_ctl_storages){ .defaulted = false };
	return clu_storage_read(x->c, cli_ctl_data_dir(), &st->sc, &st->defaulted, errp);
}

void cli_ctl_storages_free(struct cli_ctl_storages *st)
{
	clu_storage_conf_free(&st->sc);
}

static void storage_ids(const struct clu_storage_conf *sc, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sc->n && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
					 sc->items[i].id);
	if (!sc->n)
		snprintf(buf, len, "none");
}

const struct clu_storage *cli_ctl_storage_usable(const struct cli_ctl *x,
						 const struct cli_ctl_storages *st,
						 const char *id, struct err **errp)
{
	const struct clu_storage *s = clu_storage_find(&st->sc, id);
	char list[512];
	struct stat sb;
	bool here = !s || !s->n_nodes;

	if (!s) {
		storage_ids(&st->sc, list, sizeof(list));
		err_set(errp, ERR_INVAL, "unknown storage '%s' (storages: %s)", CLU_Q(id), list);
		return NULL;
	}
	if (s->disabled) {
		err_set(errp, ERR_INVAL, "storage '%s' is disabled", id);
		return NULL;
	}
	for (size_t i = 0; i < s->n_nodes; i++)
		here = here || !strcmp(s->nodes[i], x->node);
	if (!here) {
		err_set(errp, ERR_INVAL, "storage '%s' is not available on node %s", id, x->node);
		return NULL;
	}
	if (s->content && !(s->content & (1u << CLU_CONTENT_IMAGES))) {
		err_set(errp, ERR_INVAL, "storage '%s' does not hold disk images "
			"(no 'images' in its content)", id);
		return NULL;
	}
	/* Only the built-in default is created on demand: a configured path that
	 * is missing is more likely an unmounted disk than a wish. */
	if (st->defaulted && !strcmp(s->id, "local") && !util_mkdir_p(s->path, 0755, errp))
		return NULL;
	if (stat(s->path, &sb) < 0) {
		err_set_errno(errp, errno, "storage '%s' is not usable: path '%s'", id, s->path);
		return NULL;
	}
	if (!S_ISDIR(sb.st_mode)) {
		err_set(errp, ERR_INVAL, "storage '%s' is not usable: path '%s' is not a "
			"directory", id, s->path);
		return NULL;
	}
	return s;
}

char *cli_ctl_disk_path(const struct cli_ctl_storages *st, const struct clu_guest_disk *d,
			struct err **errp)
{
	const struct clu_storage *s = clu_storage_find(&st->sc, d->storage);

	if (!s) {
		err_set(errp, ERR_INVAL, "unknown storage '%s' in disk %s:%s", d->storage,
			d->storage, d->volume);
		return NULL;
	}
	return clu_volume_path(s, d->volume, errp);
}

static bool volume_used(const struct clu_guest_conf *g, const char *storage, const char *vol)
{
	for (int i = 0; i < CLU_GUEST_DISKS; i++)
		if (g->disks[i].present && !strcmp(g->disks[i].storage, storage) &&
		    !strcmp(g->disks[i].volume, vol))
			return true;
	return false;
}

static int free_slot(const struct clu_guest_conf *g)
{
	int used = 0;

	for (int i = 0; i < CLU_GUEST_DISKS; i++)
		used += g->disks[i].present;
	if (used >= MIG_MAX_DISKS)
		return -1;
	for (int i = 0; i < CLU_GUEST_DISKS; i++)
		if (!g->disks[i].present)
			return i;
	return -1;
}

/* Creates <path>/images/<vmid> if missing, remembering it for undo. */
static bool make_dir(const struct clu_storage *s, uint32_t vmid, struct cli_ctl_alloc *al,
		     struct err **errp)
{
	_cleanup_free_ char *images = NULL, *dir = NULL;

	if (asprintf(&images, "%s/images", s->path) < 0 ||
	    asprintf(&dir, "%s/%" PRIu32, images, vmid) < 0)
		return err_set(errp, ERR_IO, "out of memory");
	if (!util_mkdir_p(images, 0755, errp))
		return false;
	if (mkdir(dir, 0750) == 0) {
		al->dirs[al->ndirs++] = TAKE_PTR(dir);
		return true;
	}
	if (errno == EEXIST)
		return true;
	return err_set_errno(errp, errno, "cannot create directory '%s'", dir);
}

/* One volume at the first free vm-<vmid>-disk-<n>.raw (sparse) or
 * .qcow2 (an empty image, by qemu-img). */
static bool alloc_one(const struct clu_storage *s, uint32_t vmid, uint64_t size, bool qcow2,
		      const struct clu_guest_conf *g, char *volume, size_t vlen,
		      char **path_out, struct err **errp)
{
	for (unsigned n = 0; n < 1000; n++) {
		_cleanup_free_ char *path = NULL;
		_cleanup_close_ int fd = -1;
		struct err *e = NULL;

		snprintf(volume, vlen, "%" PRIu32 "/vm-%" PRIu32 "-disk-%u.%s", vmid, vmid, n,
			 qcow2 ? "qcow2" : "raw");
		if (volume_used(g, s->id, volume))
			continue;
		path = clu_volume_path(s, volume, errp);
		if (!path)
			return false;
		if (qcow2 && !repl_vol_create_qcow2(path, size, &e) && e->code == ERR_CONFLICT) {
			err_free(e);
			continue; /* someone's file: never reuse it */
		}
		if (qcow2 && e) {
			err_propagate(errp, &e);
			return false;
		}
		if (qcow2) {
			*path_out = TAKE_PTR(path);
			return true;
		}
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (fd < 0 && errno == EEXIST)
			continue; /* someone's file: never reuse it */
		if (fd < 0)
			return err_set_errno(errp, errno, "cannot create volume '%s'", path);
		if (ftruncate(fd, (off_t)size) < 0) {
			err_set_errno(errp, errno, "cannot size volume '%s'", path);
			unlink(path);
			return false;
		}
		*path_out = TAKE_PTR(path);
		return true;
	}
	return err_set(errp, ERR_STATE, "no free volume name for guest %" PRIu32 " on storage "
		       "'%s'", vmid, s->id);
}

bool cli_ctl_alloc_disks(const struct cli_ctl *x, const struct cli_ctl_storages *st,
			 uint32_t vmid, const struct cli_ctl_disk_req *reqs, unsigned n,
			 struct clu_guest_conf *g, struct cli_ctl_alloc *al, struct err **errp)
{
	*al = (struct cli_ctl_alloc){ .n = 0 };
	for (unsigned i = 0; i < n; i++) {
		const struct clu_storage *s = cli_ctl_storage_usable(x, st, reqs[i].storage, errp);
		struct clu_guest_disk *d;
		char volume[CLU_VOLUME_MAX + 1];
		char *path = NULL;
		int slot = free_slot(g);

		if (!s)
			goto fail;
		if (slot < 0) {
			err_set(errp, ERR_INVAL, "too many disks at --disk '%s': a guest has at "
				"most %d", CLU_Q(reqs[i].arg), MIG_MAX_DISKS);
			goto fail;
		}
		if (!make_dir(s, vmid, al, errp) ||
		    !alloc_one(s, vmid, reqs[i].size, reqs[i].qcow2, g, volume, sizeof(volume), &path,
			       errp))
			goto fail;
		al->paths[al->n++] = path;
		d = &g->disks[slot];
		*d = (struct clu_guest_disk){ .present = true, .size = reqs[i].size,
					      .replicate = true };
		strcpy(d->storage, s->id);
		strcpy(d->volume, volume);
	}
	return true;
fail:
	cli_ctl_alloc_undo(al);
	return false;
}

void cli_ctl_alloc_undo(struct cli_ctl_alloc *al)
{
	while (al->n) {
		char *p = al->paths[--al->n];
		unlink(p);
		free(p);
	}
	while (al->ndirs) {
		char *d = al->dirs[--al->ndirs];
		rmdir(d); /* only if empty: never more than we made */
		free(d);
	}
}

void cli_ctl_alloc_keep(struct cli_ctl_alloc *al)
{
	while (al->n)
		free(al->paths[--al->n]);
	while (al->ndirs)
		free(al->dirs[--al->ndirs]);
}
