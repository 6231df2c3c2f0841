/*
 * clu_store.c - the durable local copy of the replicated store (SQLite).
 * Contract in clu.h.
 *
 * One table of entries and one of metadata (the store version). Each op is
 * one transaction, so a crash leaves either the old or the new state; WAL
 * with synchronous=FULL makes a committed op survive power loss.
 */
#include "clu.h"
#include "../common/cleanup.h"
#include "../common/util.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clu_store {
	sqlite3 *db;
	uint64_t version;
	sqlite3_stmt *get, *put, *del, *setver;
	/* clu_store_checksum's last result: a scan of the whole store, asked
	 * for by every `status` (each CLI command asks once or more), while
	 * the store changes far less often. Dropped before any change. */
	bool sum_ok;
	uint64_t sum;
};

static bool db_fail(struct clu_store *s, struct err **errp, const char *what)
{
	return err_set(errp, ERR_IO, "store: %s: %s", what, sqlite3_errmsg(s->db));
}

static bool exec(struct clu_store *s, const char *sql, struct err **errp)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set(errp, ERR_IO, "store: %s", msg ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return false;
	}
	return true;
}

static bool prepare(struct clu_store *s, const char *sql, sqlite3_stmt **st, struct err **errp)
{
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
		return db_fail(s, errp, "prepare");
	return true;
}

struct clu_store *clu_store_open(const char *path, struct err **errp)
{
	struct clu_store *s = calloc(1, sizeof(*s));
	sqlite3_stmt *st = NULL;

	if (!s) {
		err_set(errp, ERR_IO, "out of memory");
		return NULL;
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		err_set(errp, ERR_IO, "cannot open store '%s': %s", path,
			s->db ? sqlite3_errmsg(s->db) : "out of memory");
		clu_store_close(s);
		return NULL;
	}
	sqlite3_busy_timeout(s->db, 5000);
	if (!exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
		  "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
		  " version INTEGER NOT NULL) WITHOUT ROWID;"
		  "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
		  "INSERT OR IGNORE INTO meta VALUES ('version', 0);", errp) ||
	    !prepare(s, "SELECT value, version FROM entries WHERE key = ?", &s->get, errp) ||
	    !prepare(s, "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", &s->put, errp) ||
	    !prepare(s, "DELETE FROM entries WHERE key = ?", &s->del, errp) ||
	    !prepare(s, "UPDATE meta SET value = ? WHERE name = 'version'", &s->setver, errp) ||
	    !prepare(s, "SELECT value FROM meta WHERE name = 'version'", &st, errp)) {
		err_prefix(errp ? *errp : NULL, "store '%s'", path);
		clu_store_close(s);
		return NULL;
	}
	if (sqlite3_step(st) == SQLITE_ROW)
		s->version = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return s;
}

void clu_store_close(struct clu_store *s)
{
	if (!s)
		return;
	sqlite3_finalize(s->get);
	sqlite3_finalize(s->put);
	sqlite3_finalize(s->del);
	sqlite3_finalize(s->setver);
	sqlite3_close(s->db);
	free(s);
}

uint64_t clu_store_version(const struct clu_store *s)
{
	return s->version;
}

/* Looks key up; *found tells whether it exists. Copies value if wanted. */
static bool lookup(struct clu_store *s, const char *key, bool *found, char **value,
		   uint64_t *version, struct err **errp)
{
	int rc;

	sqlite3_reset(s->get);
	sqlite3_bind_text(s->get, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s->get);
	*found = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_fail(s, errp, "read");
	if (*found) {
		if (value) {
			*value = strdup((const char *)sqlite3_column_text(s->get, 0));
			if (!*value) {
				sqlite3_reset(s->get);
				return err_set(errp, ERR_IO, "out of memory");
			}
		}
		if (version)
			*version = (uint64_t)sqlite3_column_int64(s->get, 1);
	}
	sqlite3_reset(s->get);
	return true;
}

char *clu_store_get(struct clu_store *s, const char *key, uint64_t *version, struct err **errp)
{
	char *value = NULL;
	bool found;

	if (!lookup(s, key, &found, &value, version, errp))
		return NULL;
	if (!found)
		err_set(errp, ERR_NOTFOUND, "'%s' does not exist", key);
	return value;
}

bool clu_store_list(struct clu_store *s, const char *prefix, clu_store_visit_fn fn,
		    void *opaque, struct err **errp)
{
	sqlite3_stmt *st = NULL;
	_cleanup_free_ char *hi = NULL;
	size_t len = strlen(prefix);
	int rc;

	/* [prefix, prefix with its last byte + 1): a range scan on the key. */
	if (len) {
		hi = strdup(prefix);
		if (!hi)
			return err_set(errp, ERR_IO, "out of memory");
		hi[len - 1]++;
	}
	if (sqlite3_prepare_v2(s->db, len ? "SELECT key, value, version FROM entries WHERE "
				      "key >= ?1 AND key < ?2 ORDER BY key" :
				      "SELECT key, value, version FROM entries ORDER BY key",
			       -1, &st, NULL) != SQLITE_OK)
		return db_fail(s, errp, "list");
	if (len) {
		sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (!fn((const char *)sqlite3_column_text(st, 0),
			(const char *)sqlite3_column_text(st, 1),
			(uint64_t)sqlite3_column_int64(st, 2), opaque)) {
			rc = SQLITE_DONE;
			break;
		}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_fail(s, errp, "list");
	return true;
}

bool clu_lock_parse(const char *value, char *owner, size_t owner_len, int64_t *expires_ms)
{
	struct json_object *o = json_tokener_parse(value), *v;
	bool ok = false;

	if (o && json_object_object_get_ex(o, "owner", &v) &&
	    json_object_is_type(v, json_type_string)) {
		snprintf(owner, owner_len, "%s", json_object_get_string(v));
		if (json_object_object_get_ex(o, "expires_ms", &v)) {
			*expires_ms = json_object_get_int64(v);
			ok = true;
		}
	}
	json_object_put(o);
	return ok;
}

/* Writes (value != NULL) or deletes key and bumps the store version, in
 * the caller's transaction. */
static bool change(struct clu_store *s, const char *key, const char *value, struct err **errp)
{
	uint64_t v = s->version + 1;
	sqlite3_stmt *st = value ? s->put : s->del;

	sqlite3_reset(st);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (value) {
		sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)v);
	}
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_reset(st);
		return db_fail(s, errp, "write");
	}
	sqlite3_reset(st);
	sqlite3_reset(s->setver);
	sqlite3_bind_int64(s->setver, 1, (sqlite3_int64)v);
	if (sqlite3_step(s->setver) != SQLITE_DONE) {
		sqlite3_reset(s->setver);
		return db_fail(s, errp, "write version");
	}
	sqlite3_reset(s->setver);
	return true;
}

/* Decides an op against the current entry; sets *newval (owned) or
 * *delete. Pure: no clock but the op's. */
static bool decide(const struct clu_op *op, bool found, const char *cur, uint64_t curver,
		   char **newval, bool *del, struct err **errp)
{
	char owner[128];
	int64_t exp = 0;

	*newval = NULL;
	*del = false;
	switch (op->kind) {
	case CLU_OP_CREATE:
		if (found)
			return err_set(errp, ERR_CONFLICT, "'%s' already exists", op->key);
		break;
	case CLU_OP_PUT:
	case CLU_OP_DELETE:
		if (op->if_version == 0 && found)
			return err_set(errp, ERR_CONFLICT, "'%s' already exists", op->key);
		if (op->if_version > 0 && (!found || curver != (uint64_t)op->if_version))
			return err_set(errp, ERR_CONFLICT,
				       "'%s' was changed by someone else (version %" PRIu64
				       ", expected %" PRId64 ")", op->key, found ? curver : 0,
				       op->if_version);
		if (op->kind == CLU_OP_DELETE) {
			if (!found)
				return err_set(errp, ERR_NOTFOUND, "'%s' does not exist", op->key);
			*del = true;
			return true;
		}
		break;
	case CLU_OP_LOCK:
		if (found && clu_lock_parse(cur, owner, sizeof(owner), &exp) &&
		    strcmp(owner, op->owner) && exp > op->ts_ms)
			return err_set(errp, ERR_CONFLICT, "'%s' is locked by %s for another %" PRId64
				       " s", op->key, owner, (exp - op->ts_ms + 999) / 1000);
		{
			struct json_object *o = json_object_new_object();
			json_object_object_add(o, "owner", json_object_new_string(op->owner));
			json_object_object_add(o, "expires_ms",
					       json_object_new_int64(op->ts_ms + op->ttl_ms));
			*newval = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
			json_object_put(o);
			if (!*newval)
				return err_set(errp, ERR_IO, "out of memory");
		}
		return true;
	case CLU_OP_UNLOCK:
		if (!found)
			return true; /* nothing to release: the goal holds */
		if (clu_lock_parse(cur, owner, sizeof(owner), &exp) && strcmp(owner, op->owner))
			return err_set(errp, ERR_CONFLICT, "'%s' is locked by %s, not %s", op->key, owner,
				       op->owner);
		*del = true;
		return true;
	case CLU_OP_MAX:
		return err_set(errp, ERR_INVAL, "invalid op");
	}
	*newval = strdup(op->value);
	if (!*newval)
		return err_set(errp, ERR_IO, "out of memory");
	return true;
}

bool clu_store_apply(struct clu_store *s, const struct clu_op *op, struct err **errp)
{
	_cleanup_free_ char *cur = NULL, *newval = NULL;
	uint64_t curver = 0;
	bool found, del, ok;

	if (!clu_key_check(op->key, errp))
		return false;
	if (!lookup(s, op->key, &found, &cur, &curver, errp))
		return false;
	if (!decide(op, found, cur, curver, &newval, &del, errp))
		return false;
	if (op->kind == CLU_OP_UNLOCK && !del)
		return true; /* an absent lock changes nothing, not even the version */
	s->sum_ok = false;
	if (!exec(s, "BEGIN IMMEDIATE", errp))
		return false;
	ok = change(s, op->key, del ? NULL : newval, errp);
	if (!ok || !exec(s, "COMMIT", errp)) {
		exec(s, "ROLLBACK", NULL);
		return false;
	}
	s->version++;
	return true;
}

struct sum {
	uint64_t h;
};

static void fnv(struct sum *x, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		x->h ^= b[i];
		x->h *= 1099511628211ULL;
	}
}

static bool sum_one(const char *key, const char *value, uint64_t version, void *opaque)
{
	fnv(opaque, key, strlen(key) + 1);
	fnv(opaque, value, strlen(value) + 1);
	fnv(opaque, &version, sizeof(version));
	return true;
}

uint64_t clu_store_checksum(struct clu_store *s)
{
	struct sum x = { 14695981039346656037ULL };

	if (s->sum_ok)
		return s->sum;
	fnv(&x, &s->version, sizeof(s->version));
	s->sum_ok = clu_store_list(s, "", sum_one, &x, NULL);
	s->sum = x.h;
	return x.h;
}

struct dump {
	size_t max, bytes;
	struct json_object *entries;
	clu_store_chunk_fn fn;
	void *opaque;
	uint64_t version;
	bool stopped;
};

static struct json_object *chunk_new(struct dump *d)
{
	struct json_object *c = json_object_new_object();

	json_object_object_add(c, "version", json_object_new_uint64(d->version));
	d->entries = json_object_new_array();
	json_object_object_add(c, "entries", d->entries);
	d->bytes = 0;
	return c;
}

static bool dump_one(const char *key, const char *value, uint64_t version, void *opaque)
{
	struct dump *d = opaque;
	struct json_object *e = json_object_new_array();

	json_object_array_add(e, json_object_new_string(key));
	json_object_array_add(e, json_object_new_string(value));
	json_object_array_add(e, json_object_new_uint64(version));
	json_object_array_add(d->entries, e);
	d->bytes += strlen(key) + strlen(value) + 32;
	return true;
}

bool clu_store_dump(struct clu_store *s, size_t max_bytes, clu_store_chunk_fn fn, void *opaque,
		    struct err **errp)
{
	struct dump d = { .max = max_bytes, .fn = fn, .opaque = opaque, .version = s->version };
	struct json_object *chunk = chunk_new(&d);
	sqlite3_stmt *st = NULL;
	int rc;

	if (sqlite3_prepare_v2(s->db, "SELECT key, value, version FROM entries ORDER BY key", -1,
			       &st, NULL) != SQLITE_OK) {
		json_object_put(chunk);
		return db_fail(s, errp, "dump");
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		dump_one((const char *)sqlite3_column_text(st, 0),
			 (const char *)sqlite3_column_text(st, 1),
			 (uint64_t)sqlite3_column_int64(st, 2), &d);
		if (d.bytes >= d.max) {
			bool go = fn(chunk, false, opaque);
			chunk = chunk_new(&d);
			if (!go) {
				d.stopped = true;
				break;
			}
		}
	}
	sqlite3_finalize(st);
	if (d.stopped) {
		json_object_put(chunk);
		return err_set(errp, ERR_IO, "store dump interrupted");
	}
	if (rc != SQLITE_DONE) {
		json_object_put(chunk);
		return db_fail(s, errp, "dump");
	}
	return fn(chunk, true, opaque) ? true : err_set(errp, ERR_IO, "store dump interrupted");
}

bool clu_store_replace(struct clu_store *s, uint64_t version, struct json_object *const *chunks,
		       unsigned nchunks, struct err **errp)
{
	char sql[64];

	s->sum_ok = false;
	if (!exec(s, "BEGIN IMMEDIATE; DELETE FROM entries;", errp))
		return false;
	for (unsigned c = 0; c < nchunks; c++) {
		struct json_object *entries;
		size_t n;

		if (!json_object_object_get_ex(chunks[c], "entries", &entries) ||
		    !json_object_is_type(entries, json_type_array)) {
			err_set(errp, ERR_PROTO, "store snapshot chunk %u has no entries", c);
			goto fail;
		}
		n = json_object_array_length(entries);
		for (size_t i = 0; i < n; i++) {
			struct json_object *e = json_object_array_get_idx(entries, i);
			const char *k = json_object_get_string(json_object_array_get_idx(e, 0));

			if (json_object_array_length(e) != 3 || !clu_key_check(k, errp))
				goto fail;
			sqlite3_reset(s->put);
			sqlite3_bind_text(s->put, 1, k, -1, SQLITE_STATIC);
			sqlite3_bind_text(s->put, 2,
					  json_object_get_string(json_object_array_get_idx(e, 1)),
					  -1, SQLITE_STATIC);
			sqlite3_bind_int64(s->put, 3,
					   json_object_get_int64(json_object_array_get_idx(e, 2)));
			if (sqlite3_step(s->put) != SQLITE_DONE) {
				db_fail(s, errp, "snapshot write");
				sqlite3_reset(s->put);
				goto fail;
			}
			sqlite3_reset(s->put);
		}
	}
	snprintf(sql, sizeof(sql), "UPDATE meta SET value = %" PRIu64 " WHERE name = 'version'",
		 version);
	if (!exec(s, sql, errp) || !exec(s, "COMMIT", errp))
		goto fail;
	s->version = version;
	return true;
fail:
	exec(s, "ROLLBACK", NULL);
	return false;
}
