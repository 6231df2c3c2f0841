/*
 * fuzz_repl_agent.c - libFuzzer target for a replication run's control
 * channel as `vmrepl _agent` reads it: the input is what the worker sent
 * (JSON lines), read by mig_chan_recv; every message is checked as a
 * request (repl_agent_req_check) and as a reply (mig_chan_reply_check).
 * manifest-put pieces that pass are put together as the agent does
 * (repl_mani_rx_add, across the messages of one input); nothing is
 * written anywhere. A refusal is ERR_PROTO / ERR_INVAL; a whole manifest
 * holds exactly its total bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "replicate/repl.h"
#include "tests/fuzz/chan_feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		abort(); /* the check let a request through without it */
	return json_object_get_int64(v);
}

/* do_manifest_put() after the check, without the file it writes. */
static void manifest_put(struct repl_mani_rx *mx, struct json_object *req)
{
	struct json_object *d;
	int64_t total = jint(req, "total"), off = jint(req, "offset");
	struct err *e = NULL;
	bool whole = false;

	if (!json_object_object_get_ex(req, "data", &d) || total <= 0 ||
	    total > REPL_MANIFEST_WIRE_MAX || off < 0)
		abort();
	if (!repl_mani_rx_add(mx, (size_t)total, (size_t)off, json_object_get_string(d), &whole,
			      &e)) {
		if (!e || whole)
			abort();
		err_free(e);
		return;
	}
	if (e || mx->len != (size_t)total || mx->have > mx->len || whole != (mx->have == mx->len))
		abort();
	if (whole)
		repl_mani_rx_free(mx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_chan *c = chan_feed(data, size);
	struct repl_mani_rx mx = { .buf = NULL };
	struct json_object *m;
	struct err *e = NULL;

	if (!c)
		return 0;
	while ((m = mig_chan_recv(c, -1, &e))) {
		struct err *re = NULL;
		struct json_object *cmd;
		bool ok = repl_agent_req_check(m, &re);

		if (ok != !re || (re && re->code != ERR_PROTO && re->code != ERR_INVAL))
			abort();
		err_free(re);
		if (ok && json_object_object_get_ex(m, "cmd", &cmd) &&
		    !strcmp(json_object_get_string(cmd), "manifest-put"))
			manifest_put(&mx, m);
		chan_reply(m);
		json_object_put(m);
	}
	repl_mani_rx_free(&mx);
	chan_end(c, e);
	return 0;
}
