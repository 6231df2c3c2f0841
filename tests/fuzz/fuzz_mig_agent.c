/*
 * fuzz_mig_agent.c - libFuzzer target for the migration's control channel
 * as `vmmigrate _agent` reads it: the input is what the worker sent (JSON
 * lines), read by mig_chan_recv; every message is checked as a request
 * (mig_agent_req_check, what the agent does before acting on one) and as a
 * reply (mig_chan_reply_check, what the worker does with an answer). No
 * request is carried out. A request that passes must be readable the way
 * cli/migrate_agent.c reads it (disks a list of objects, a tune), and a
 * refusal is ERR_PROTO or ERR_INVAL.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tests/fuzz/chan_feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What dispatch() and its handlers read of a request that passed. */
static void read_like_agent(struct json_object *req)
{
	struct json_object *v = NULL, *cmd = NULL;
	struct mig_tune tune;

	json_object_object_get_ex(req, "cmd", &cmd);
	if (!strcmp(json_object_get_string(cmd), "listen")) {
		json_object_object_get_ex(req, "tune", &v);
		if (!mig_tune_from_json(v, &tune, NULL) || tune.multifd > 64)
			abort();
	}
	if (!strcmp(json_object_get_string(cmd), "start") &&
	    json_object_object_get_ex(req, "disks", &v) && v) {
		if (json_object_array_length(v) > MIG_MAX_DISKS)
			abort();
		for (size_t k = 0; k < json_object_array_length(v); k++)
			if (!json_object_is_type(json_object_array_get_idx(v, k), json_type_object))
				abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mig_chan *c = chan_feed(data, size);
	struct json_object *m;
	struct err *e = NULL;

	if (!c)
		return 0;
	while ((m = mig_chan_recv(c, -1, &e))) {
		struct err *re = NULL;
		bool ok = mig_agent_req_check(m, &re);

		if (ok != !re || (re && re->code != ERR_PROTO && re->code != ERR_INVAL))
			abort();
		if (ok)
			read_like_agent(m);
		err_free(re);
		chan_reply(m);
		json_object_put(m);
	}
	chan_end(c, e);
	return 0;
}
