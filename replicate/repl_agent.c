/*
 * repl_agent.c - the requests a replication run's worker sends to the
 * target's agent (`vmrepl _agent`, cli/repl_agent.c), as the agent reads
 * them: each is checked whole before anything is done for it, and the
 * block hashes that come in base64 pieces (manifest-put) are put together
 * here. No I/O: both are fuzzed (tests/fuzz/fuzz_repl_agent.c).
 */
#include "repl.h"
#include "../cluster/clu.h"
#include "../common/util.h"

#include <stdlib.h>
#include <string.h>

static bool has_vmid(struct json_object *req)
{
	int64_t v;

	return tp_json_int(req, "vmid", &v) && v >= CLU_VMID_MIN && v <= CLU_VMID_MAX;
}

/* A job ID as replication.cfg has it, VMID-N (it names side files). */
static bool job_ok(const char *s)
{
	size_t a = 0, b = 0;

	while (s[a] >= '0' && s[a] <= '9')
		a++;
	if (a < 3 || a > 9 || s[a] != '-')
		return false;
	while (s[a + 1 + b] >= '0' && s[a + 1 + b] <= '9')
		b++;
	return b >= 1 && b <= 4 && !s[a + 1 + b];
}

bool repl_agent_req_check(struct json_object *req, struct err **errp)
{
	static const char *const cmds[] = {
		"hello", "address", "replica-info", "recv", "recv-wait", "remove", "release",
		"manifest-put", "bye",
	};
	const char *cmd = tp_json_str(req, "cmd"), *mode = tp_json_str(req, "mode");
	int64_t n = 0, drive = -1, off = -1;
	size_t i;

	for (i = 0; cmd && i < ARRAY_SIZE(cmds) && strcmp(cmd, cmds[i]); i++)
		;
	if (!cmd || i == ARRAY_SIZE(cmds))
		return err_set(errp, ERR_PROTO, "unknown request '%s'", cmd ? cmd : "");
	if (tp_json_str(req, "job") && !job_ok(tp_json_str(req, "job")))
		return err_set(errp, ERR_PROTO, "request with an invalid job ID (want VMID-N)");
	if (!strcmp(cmd, "address") && !tp_json_str(req, "cidr"))
		return err_set(errp, ERR_PROTO, "address needs cidr");
	if (!strcmp(cmd, "recv") &&
	    (!tp_json_str(req, "job") || !mode || !tp_json_str(req, "bind") || !tp_json_int(req, "size", &n) ||
	     n <= 0 || !tp_json_int(req, "gen", &n) || n <= 0 || !tp_json_int(req, "time", &n) ||
	     (strcmp(mode, "create") && strcmp(mode, "update"))))
		return err_set(errp, ERR_PROTO, "recv needs job, size, gen, time, mode and bind");
	if (!strcmp(cmd, "remove") && !tp_json_str(req, "job"))
		return err_set(errp, ERR_PROTO, "remove needs job and vmid");
	if (!strcmp(cmd, "release") && (!tp_json_str(req, "job") || !has_vmid(req)))
		return err_set(errp, ERR_PROTO, "release needs job and vmid");
	if ((!strcmp(cmd, "replica-info") || !strcmp(cmd, "recv") || !strcmp(cmd, "remove")) &&
	    !has_vmid(req))
		return err_set(errp, ERR_PROTO, "request without a valid vmid");
	if ((!strcmp(cmd, "replica-info") || !strcmp(cmd, "recv")) &&
	    (!tp_json_str(req, "storage") || !tp_json_str(req, "volume")))
		return err_set(errp, ERR_PROTO, "request without storage and volume");
	if (!strcmp(cmd, "manifest-put") &&
	    (!tp_json_str(req, "job") || !tp_json_str(req, "data") || !tp_json_int(req, "drive", &drive) || drive < 0 ||
	     drive > 99 || !tp_json_int(req, "gen", &n) || n <= 0 || !tp_json_int(req, "size", &n) || n <= 0 ||
	     !tp_json_int(req, "total", &n) || n <= 0 || n > REPL_MANIFEST_WIRE_MAX ||
	     !tp_json_int(req, "offset", &off) || off < 0))
		return err_set(errp, ERR_PROTO, "manifest-put needs job, drive, gen, size, total, "
			       "offset and base64 data");
	return true;
}

bool repl_mani_rx_add(struct repl_mani_rx *m, size_t total, size_t off, const char *b64,
		      bool *whole, struct err **errp)
{
	size_t n = 0;

	if (!off) {
		free(m->buf);
		m->buf = malloc(total);
		m->len = total;
		m->have = 0;
		if (!m->buf)
			return err_set(errp, ERR_IO, "out of memory");
	}
	if (!m->buf || off != m->have || total != m->len)
		return err_set(errp, ERR_PROTO, "manifest-put: piece at %zu does not follow", off);
	if (!util_base64_decode(b64, m->buf + m->have, m->len - m->have, &n, errp))
		return false;
	m->have += n;
	*whole = m->have == m->len;
	return true;
}

void repl_mani_rx_free(struct repl_mani_rx *m)
{
	free(m->buf);
	*m = (struct repl_mani_rx){ .buf = NULL };
}
