/*
 * cluster_common.c - what several vmcluster commands share: settings,
 * link options, vmmd status and waits, the cluster's corosync.conf in the
 * store, child processes (corosync restart, ssh), files and base64. See
 * cluster.h.
 */
#include "cluster.h"
#include "../common/cleanup.h"
#include "../common/util.h"
#include "../transport/tp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- settings ------------------------------------------------------------ */

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);

	return v && *v ? v : def;
}

const char *cli_cc_conf_path(void)
{
	return env_or("VMM_COROSYNC_CONF", "/etc/corosync/corosync.conf");
}

const char *cli_cc_authkey_path(void)
{
	return env_or("VMM_COROSYNC_AUTHKEY", "/etc/corosync/authkey");
}

const char *cli_cc_data_dir(void)
{
	return env_or("VMM_DATA_DIR", "/var/lib/vmmigrate");
}

char *cli_cc_data_conf_path(void)
{
	char *p = NULL;

	if (asprintf(&p, "%s/corosync.conf", cli_cc_data_dir()) < 0)
		return NULL;
	return p;
}

/* ---- options ------------------------------------------------------------- */

bool cli_links_parse(const struct cli_args *a, struct cli_links *l, struct err **errp)
{
	memset(l, 0, sizeof(*l));
	for (unsigned n = 0; n < CLU_CC_LINKS; n++) {
		char opt[8], addr[CLU_CC_ADDR_MAX + 64];
		const char *v, *comma, *why;
		char what[32];
		uint64_t prio;

		l->priority[n] = -1;
		snprintf(opt, sizeof(opt), "link%u", n);
		if (!(v = cli_get(a, opt)))
			continue;
		comma = strchr(v, ',');
		if ((comma ? (size_t)(comma - v) : strlen(v)) >= sizeof(addr))
			return err_set(errp, ERR_INVAL, "invalid --%s '%s': address too long", opt, v);
		snprintf(addr, sizeof(addr), "%.*s", comma ? (int)(comma - v) : (int)strlen(v), v);
		if ((why = clu_cc_addr_check(addr)))
			return err_set(errp, ERR_INVAL, "invalid --%s address '%s': %s", opt, addr, why);
		if (comma) {
			if (strncmp(comma + 1, "priority=", 9))
				return err_set(errp, ERR_INVAL,
					       "invalid --%s '%s': expected ADDR or ADDR,priority=N", opt, v);
			snprintf(what, sizeof(what), "--%s priority", opt);
			if (!util_parse_u64(comma + 10, 0, 255, what, &prio, errp))
				return false;
			l->priority[n] = (int)prio;
		}
		for (unsigned k = 0; k < n; k++)
			if ((l->mask & (1u << k)) && !strcmp(l->addr[k], addr))
				return err_set(errp, ERR_INVAL, "invalid --%s '%s': also given as --link%u",
					       opt, addr, k);
		memcpy(l->addr[n], addr, strlen(addr) + 1); /* < CLU_CC_ADDR_MAX: checked */
		l->mask |= 1u << n;
	}
	return true;
}

/* Unicast addresses of this node (no loopback, no IPv6 link-local), as
 * text, into list (max n); returns how many. */
static size_t local_addrs(char (*list)[INET6_ADDRSTRLEN], size_t n, struct err **errp)
{
	struct ifaddrs *ifs, *i;
	size_t k = 0;

	if (getifaddrs(&ifs) < 0) {
		err_set_errno(errp, errno, "getifaddrs");
		return (size_t)-1;
	}
	for (i = ifs; i; i = i->ifa_next) {
		char buf[INET6_ADDRSTRLEN];

		if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
			continue;
		if (i->ifa_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, buf,
				  sizeof(buf));
		else if (i->ifa_addr->sa_family == AF_INET6) {
			const struct in6_addr *a6 = &((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr;

			if (IN6_IS_ADDR_LINKLOCAL(a6))
				continue;
			inet_ntop(AF_INET6, a6, buf, sizeof(buf));
		} else {
			continue;
		}
		if (k < n)
			snprintf(list[k], INET6_ADDRSTRLEN, "%s", buf);
		k++;
	}
	freeifaddrs(ifs);
	return k;
}

static bool is_local(char (*list)[INET6_ADDRSTRLEN], size_t n, const char *addr)
{
	unsigned char a[16], b[16];
	int fam = strchr(addr, ':') ? AF_INET6 : AF_INET;

	if (inet_pton(fam, addr, a) != 1)
		return false;
	for (size_t i = 0; i < n; i++)
		if (inet_pton(fam, list[i], b) == 1 && !memcmp(a, b, fam == AF_INET ? 4 : 16))
			return true;
	return false;
}

bool cli_links_local(struct cli_links *l, struct err **errp)
{
	char list[32][INET6_ADDRSTRLEN];
	size_t n = local_addrs(list, 32, errp);

	if (n == (size_t)-1)
		return false;
	if (n > 32)
		n = 32;
	if (!l->mask) {
		char all[256] = "";

		if (n == 1) {
			snprintf(l->addr[0], sizeof(l->addr[0]), "%s", list[0]);
			l->mask = 1;
			return true;
		}
		for (size_t i = 0; i < n; i++)
			if (strlen(all) + strlen(list[i]) + 3 < sizeof(all)) {
				strcat(all, i ? ", " : "");
				strcat(all, list[i]);
			}
		return err_set(errp, ERR_INVAL, "this node has %zu addresses (%s): choose one with --link0",
			       n, n ? all : "none");
	}
	for (unsigned k = 0; k < CLU_CC_LINKS; k++)
		if ((l->mask & (1u << k)) && !is_local(list, n, l->addr[k]))
			return err_set(errp, ERR_INVAL,
				       "invalid --link%u address '%s': not an address of this node", k,
				       l->addr[k]);
	return true;
}

bool cli_cc_node_name(const struct cli_args *a, char *out, size_t len, struct err **errp)
{
	char host[256] = "";
	const char *name = cli_get(a, "name");

	if (!name) {
		if (gethostname(host, sizeof(host) - 1) < 0)
			return err_set_errno(errp, errno, "gethostname");
		*strchrnul(host, '.') = '\0';
		name = host;
	}
	if (!clu_cc_node_name_valid(name) || strlen(name) >= len)
		return err_set(errp, ERR_INVAL,
			       "invalid node name '%s'%s: 1 to %d characters of a-z, 0-9 and '-', not starting or ending with '-'",
			       name, cli_get(a, "name") ? "" : " (the hostname; use --name)",
			       CLU_CC_NODE_NAME_MAX);
	snprintf(out, len, "%s", name);
	return true;
}

bool cli_cc_number(const struct cli_args *a, const char *name, uint64_t min, uint64_t max,
		   uint64_t def, uint64_t *out, struct err **errp)
{
	char what[32];

	*out = def;
	if (!cli_get(a, name))
		return true;
	snprintf(what, sizeof(what), "--%s", name);
	return util_parse_u64(cli_get(a, name), min, max, what, out, errp);
}

/* ---- vmmd ------------------------------------------------------------------ */

struct clu_client *cli_cc_connect(const struct cli_args *a, struct err **errp)
{
	return clu_client_open(cli_get(a, "socket"), errp);
}

struct json_object *cli_cc_status(struct clu_client *c, struct err **errp)
{
	struct json_object *req = json_object_new_object();

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	return clu_client_call(c, req, 10000, errp);
}

const char *cli_cc_jstr(struct json_object *o, const char *key)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
		       json_object_get_string(v) : NULL;
}

int64_t cli_cc_jint(struct json_object *o, const char *key, int64_t def)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int) ?
		       json_object_get_int64(v) : def;
}

bool cli_cc_jbool(struct json_object *o, const char *key)
{
	struct json_object *v;

	return o && json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

bool cli_cc_require_cluster(struct json_object *st, struct err **errp)
{
	const char *state = cli_cc_jstr(st, "state");

	if (state && !strcmp(state, "standalone"))
		return err_set(errp, ERR_STATE,
			       "this node is not in a cluster (vmmd runs standalone; no %s)",
			       cli_cc_conf_path());
	return true;
}

bool cli_cc_require_standalone(struct clu_client *c, struct err **errp)
{
	_cleanup_json_ struct json_object *st = NULL;
	_cleanup_free_ char *marker = cli_cc_data_conf_path();
	struct stat sb;
	const char *state;

	if (stat(cli_cc_conf_path(), &sb) == 0)
		return err_set(errp, ERR_STATE, "this node is already in a cluster: '%s' exists",
			       cli_cc_conf_path());
	if (marker && stat(marker, &sb) == 0)
		return err_set(errp, ERR_STATE, "this node is already in a cluster: '%s' exists", marker);
	st = cli_cc_status(c, errp);
	if (!st)
		return false;
	state = cli_cc_jstr(st, "state");
	if (!state || strcmp(state, "standalone"))
		return err_set(errp, ERR_STATE, "this node is already in a cluster (vmmd state %s)",
			       state ? state : "unknown");
	return true;
}

bool cli_cc_wait_ready(struct clu_client *c, int timeout_ms, uint64_t min_version,
		       struct err **errp)
{
	int64_t deadline = util_now_ms() + timeout_ms;
	char last[160] = "no answer";

	for (;;) {
		_cleanup_json_ struct json_object *st = NULL;
		struct err *e = NULL;
		const char *state;
		bool quorate;

		st = cli_cc_status(c, &e);
		if (!st) {
			err_propagate(errp, &e);
			return false;
		}
		state = cli_cc_jstr(st, "state");
		quorate = cli_cc_jbool(st, "quorate");
		snprintf(last, sizeof(last), "vmmd %s, %squorate", state ? state : "?",
			 quorate ? "" : "not ");
		if (state && !strcmp(state, "synced") && quorate) {
			_cleanup_free_ char *text = NULL;

			if (!min_version)
				return true;
			text = clu_client_get(c, CLI_CC_KEY, NULL, &e);
			err_free(e);
			if (text) {
				_cleanup_(clu_ccconf_freep) struct clu_ccconf *cc =
					clu_ccconf_parse(text, CLI_CC_KEY, NULL);
				if (cc && cc->config_version >= min_version)
					return true;
				snprintf(last + strlen(last), sizeof(last) - strlen(last),
					 ", store at config version %" PRIu64, cc ? cc->config_version : 0);
			} else {
				snprintf(last + strlen(last), sizeof(last) - strlen(last),
					 ", store has no %s yet", CLI_CC_KEY);
			}
		}
		if (util_now_ms() >= deadline)
			return err_set(errp, ERR_TIMEOUT, "not ready after %d s: %s", timeout_ms / 1000,
				       last);
		usleep(100 * 1000);
	}
}

struct clu_ccconf *cli_cc_read_cluster_conf(struct clu_client *c, int64_t *key_version,
					    struct err **errp)
{
	_cleanup_free_ char *text = NULL;
	struct err *e = NULL;
	uint64_t ver = 0;

	text = clu_client_get(c, CLI_CC_KEY, &ver, &e);
	if (text) {
		*key_version = (int64_t)ver;
		return clu_ccconf_parse(text, CLI_CC_KEY, errp);
	}
	if (e->code != ERR_NOTFOUND) {
		err_propagate(errp, &e);
		return NULL;
	}
	err_free(e);
	*key_version = 0;
	return clu_ccconf_load(cli_cc_conf_path(), errp);
}

bool cli_cc_write_cluster_conf(struct clu_client *c, const char *text, int64_t key_version,
			       struct err **errp)
{
	struct clu_op op = { .kind = CLU_OP_PUT, .key = CLI_CC_KEY, .value = text,
			     .if_version = key_version };

	return clu_client_write(c, &op, NULL, errp);
}

bool cli_cc_update_cluster_conf(struct clu_client *c, cli_cc_edit_fn edit, void *opaque,
				char **text, uint64_t *version, struct err **errp)
{
	enum { TRIES = 5 };

	for (int try = 1;; try++) {
		_cleanup_(clu_ccconf_freep) struct clu_ccconf *cc = NULL;
		_cleanup_free_ char *out = NULL;
		struct err *e = NULL;
		int64_t kv;

		if (!(cc = cli_cc_read_cluster_conf(c, &kv, errp)) || !edit(cc, opaque, errp))
			return false;
		clu_ccconf_bump(cc);
		if (!(out = clu_ccconf_format(cc, errp)))
			return false;
		if (cli_cc_write_cluster_conf(c, out, kv, &e)) {
			*version = cc->config_version;
			*text = TAKE_PTR(out);
			return true;
		}
		/* Someone changed it between our read and write: read again. */
		if (e->code != ERR_CONFLICT || try == TRIES) {
			err_propagate(errp, &e);
			return false;
		}
		err_free(e);
	}
}

/* ---- processes ----------------------------------------------------------- */

struct buf {
	char *p;
	size_t len;
};

static void buf_add(struct buf *b, const char *data, size_t n)
{
	char *np;

	if (b->len + n > (1u << 20))
		n = (1u << 20) - b->len;
	np = realloc(b->p, b->len + n + 1);
	if (!np)
		return;
	memcpy(np + b->len, data, n);
	b->p = np;
	b->len += n;
	b->p[b->len] = '\0';
}

bool cli_cc_run(char *const *argv, int timeout_ms, char **out, char **errtext, int *status,
		struct err **errp)
{
	int po[2], pe[2], st;
	int64_t deadline = util_now_ms() + timeout_ms;
	struct buf bo = { 0 }, be = { 0 };
	bool open_o = true, open_e = true, killed = false;
	pid_t pid;

	if (pipe2(po, O_CLOEXEC) < 0)
		return err_set_errno(errp, errno, "pipe");
	if (pipe2(pe, O_CLOEXEC) < 0) {
		close(po[0]);
		close(po[1]);
		return err_set_errno(errp, errno, "pipe");
	}
	pid = fork();
	if (pid < 0) {
		err_set_errno(errp, errno, "fork");
		close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
		return false;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(devnull, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		dprintf(2, "cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	while (open_o || open_e) {
		struct pollfd p[2] = { { .fd = open_o ? po[0] : -1, .events = POLLIN },
				       { .fd = open_e ? pe[0] : -1, .events = POLLIN } };
		int64_t left = deadline - util_now_ms();
		char chunk[8192];

		if (left <= 0) {
			kill(pid, SIGKILL); /* our own child */
			killed = true;
			break;
		}
		if (poll(p, 2, (int)left) < 0 && errno != EINTR)
			break;
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!p[i].revents)
				continue;
			n = read(p[i].fd, chunk, sizeof(chunk));
			if (n > 0)
				buf_add(i ? &be : &bo, chunk, (size_t)n);
			else if (n == 0 || errno != EINTR)
				*(i ? &open_e : &open_o) = false;
		}
	}
	close(po[0]);
	close(pe[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (!bo.p)
		buf_add(&bo, "", 0);
	if (!be.p)
		buf_add(&be, "", 0);
	if (killed)
		buf_add(&be, "\n(killed: no answer in time)\n", 29);
	*out = bo.p;
	*errtext = be.p;
	return true;
}

char **cli_cc_split(const char *cmdline, size_t extra)
{
	char *copy = strdup(cmdline), *save = NULL, *w;
	size_t n = 0, cap = strlen(cmdline) / 2 + 2 + extra;
	char **argv = calloc(cap, sizeof(char *));

	if (!copy || !argv) {
		free(copy);
		free(argv);
		return NULL;
	}
	for (w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
		argv[n++] = w;
	if (!n) {
		free(copy);
		free(argv);
		return NULL;
	}
	/* argv[0] points at the start of copy: freeing it frees every word. */
	if (argv[0] != copy) {
		memmove(copy, argv[0], strlen(argv[0]) + 1);
		argv[0] = copy;
	}
	return argv;
}

void cli_cc_argv_free(char **argv)
{
	if (!argv)
		return;
	free(argv[0]);
	free(argv);
}

const char *cli_cc_last_line(const char *text, char *buf, size_t len)
{
	const char *end = text + strlen(text), *start;

	while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		end--;
	start = end;
	while (start > text && start[-1] != '\n')
		start--;
	if (!strncmp(start, "vmcluster: ", 11) && start + 11 <= end)
		start += 11;
	snprintf(buf, len, "%.*s", (int)(end - start), start);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return buf;
}

bool cli_cc_restart_corosync(struct err **errp)
{
	const char *cmd = env_or("VMM_COROSYNC_RESTART", "systemctl restart corosync");
	char **argv = cli_cc_split(cmd, 0);
	_cleanup_free_ char *out = NULL, *errtext = NULL;
	char line[256];
	int status;
	bool ok;

	if (!argv)
		return err_set(errp, ERR_INVAL, "invalid VMM_COROSYNC_RESTART '%s'", cmd);
	ok = cli_cc_run(argv, 120000, &out, &errtext, &status, errp);
	cli_cc_argv_free(argv);
	if (!ok)
		return false;
	if (status)
		return err_set(errp, ERR_CHILD, "restarting corosync ('%s') failed (exit %d): %s", cmd,
			       status, cli_cc_last_line(*errtext ? errtext : out, line, sizeof(line)));
	return true;
}

char *cli_cc_shell_quote(const char *s)
{
	size_t n = 2;
	char *q, *o;

	for (const char *p = s; *p; p++)
		n += *p == '\'' ? 4 : 1;
	q = o = malloc(n + 1);
	if (!q)
		return NULL;
	*o++ = '\'';
	for (const char *p = s; *p; p++) {
		if (*p == '\'') {
			memcpy(o, "'\\''", 4);
			o += 4;
		} else {
			*o++ = *p;
		}
	}
	*o++ = '\'';
	*o = '\0';
	return q;
}

/* ---- files and encoding ------------------------------------------------------ */

bool cli_cc_write_file(const char *path, const void *data, size_t len, int mode,
		       struct err **errp)
{
	return util_write_file_bytes(path, data, len, mode, errp);
}

bool cli_cc_read_file(const char *path, size_t max, unsigned char **data, size_t *len,
		      struct err **errp)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ unsigned char *b = NULL;
	size_t n = 0;

	if (fd < 0)
		return err_set_errno(errp, errno, "cannot open '%s'", path);
	b = malloc(max + 1);
	if (!b)
		return err_set(errp, ERR_IO, "out of memory");
	for (;;) {
		ssize_t r = read(fd, b + n, max + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return err_set_errno(errp, errno, "cannot read '%s'", path);
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max)
			return err_set(errp, ERR_INVAL, "'%s' is larger than %zu bytes", path, max);
	}
	*data = TAKE_PTR(b);
	*len = n;
	return true;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *cli_cc_base64(const unsigned char *d, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < len ? (uint32_t)d[i + 1] << 8 : 0) |
			     (i + 2 < len ? d[i + 2] : 0);

		*o++ = b64[v >> 18 & 63];
		*o++ = b64[v >> 12 & 63];
		*o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
		*o++ = i + 2 < len ? b64[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

bool cli_cc_unbase64(const char *s, unsigned char **data, size_t *len, struct err **errp)
{
	size_t n = strlen(s), k = 0;
	_cleanup_free_ unsigned char *out = NULL;

	if (n % 4)
		return err_set(errp, ERR_PROTO, "invalid base64: length %zu", n);
	out = malloc(n / 4 * 3 + 1);
	if (!out)
		return err_set(errp, ERR_IO, "out of memory");
	for (size_t i = 0; i < n; i += 4) {
		int v[4];

		for (int j = 0; j < 4; j++) {
			const char *p = s[i + j] ? strchr(b64, s[i + j]) : NULL;

			if (s[i + j] == '=' && i + 4 == n && j >= 2 && (j == 3 || s[i + 3] == '='))
				v[j] = -1;
			else if (p)
				v[j] = (int)(p - b64);
			else
				return err_set(errp, ERR_PROTO, "invalid base64 at byte %zu", i + j);
		}
		out[k++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (v[2] >= 0)
			out[k++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (v[2] >= 0 && v[3] >= 0)
			out[k++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	*data = TAKE_PTR(out);
	*len = k;
	return true;
}

const char *cli_cc_elapsed(int64_t t0_ms, char *buf, size_t len)
{
	int64_t d = util_now_ms() - t0_ms;

	snprintf(buf, len, "%" PRId64 ".%02" PRId64 " s", d / 1000, d % 1000 / 10);
	return buf;
}
