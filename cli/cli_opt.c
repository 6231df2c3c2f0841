/* cli_opt.c - the option parser and help behind every command. See cli.h. */
#include "cli.h"
#include "../common/log.h"
#include "../common/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int opt_index(const struct cli_cmd *c, const char *name, size_t len)
{
	for (int i = 0; c->opts && c->opts[i].name; i++)
		if (strlen(c->opts[i].name) == len && !strncmp(c->opts[i].name, name, len))
			return i;
	return -1;
}

static int find(const struct cli_args *a, const char *name)
{
	int i = opt_index(a->cmd, name, strlen(name));

	if (i < 0) {
		/* A typo in our own code, not the user's: fail loudly in tests. */
		fprintf(stderr, "%s: internal error: option '--%s' is not in the table of '%s'\n",
			a->prog, name, a->cmd->name);
		abort();
	}
	return i;
}

const char *cli_get(const struct cli_args *a, const char *name)
{
	return a->val[find(a, name)];
}

bool cli_has(const struct cli_args *a, const char *name)
{
	return a->set[find(a, name)];
}

const char *const *cli_list(const struct cli_args *a, const char *name, unsigned *n)
{
	int i = find(a, name);

	*n = a->nlist[i];
	return a->list[i];
}

void cli_help(FILE *f, const char *prog, const struct cli_cmd *c)
{
	fprintf(f, "usage: %s %s%s%s [options]\n  %s\n", prog, c->name,
		*c->posargs ? " " : "", c->posargs, c->summary);
	if (!c->opts || !c->opts[0].name)
		return;
	fprintf(f, "options:\n");
	for (int i = 0; c->opts[i].name; i++) {
		const struct cli_opt *o = &c->opts[i];
		char left[64];

		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->metavar ? " " : "",
			 o->metavar ? o->metavar : "");
		fprintf(f, "  %-28s %s%s%s\n", left, o->help, o->required ? " (required)" : "",
			o->type == CLI_LIST ? " (repeatable)" : "");
	}
}

static void list_cmds(FILE *f, const char *prog, const char *summary,
		      const struct cli_cmd *const *cmds)
{
	fprintf(f, "usage: %s COMMAND [options]\n  %s\ncommands:\n", prog, summary);
	for (int i = 0; cmds[i]; i++)
		fprintf(f, "  %-10s %s\n", cmds[i]->name, cmds[i]->summary);
	fprintf(f, "Run '%s COMMAND --help' for a command's options.\n", prog);
}

#define QUOTED_MAX 128 /* bytes of a quoted value an error line shows */

/* Prints "PROG: MSG" as one line whatever a user typed into it: control
 * characters become \xNN, and a quoted value longer than QUOTED_MAX is cut
 * ('aaaa...'), so a 5000-byte argument still gets a readable line. */
static void put_error(const char *prog, const char *msg)
{
	const char *open = NULL;

	fprintf(stderr, "%s: ", prog);
	for (const char *p = msg; *p; p++) {
		/* A quote after a letter is an apostrophe ("target's"), not
		 * the start of a value. */
		if (*p == '\'' && !open && (p == msg || !isalnum((unsigned char)p[-1]))) {
			open = p;
		} else if (*p == '\'' && open) {
			open = NULL;
		} else if (open && p - open > QUOTED_MAX) {
			const char *close = p;

			/* the value's closing quote: one not followed by a letter */
			while ((close = strchr(close, '\'')) && isalnum((unsigned char)close[1]))
				close++;
			if (close) {
				fputs("...", stderr);
				p = close - 1;
				continue;
			}
		}
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			fprintf(stderr, "\\x%02x", (unsigned char)*p);
		else
			fputc(*p, stderr);
	}
	fputc('\n', stderr);
}

static int usage_error(const char *prog, const char *fmt, const char *a, const char *b)
{
	char *msg = NULL;

	if (asprintf(&msg, fmt, a, b) < 0)
		msg = NULL;
	put_error(prog, msg ? msg : "out of memory");
	free(msg);
	return 2;
}

static int parse(struct cli_args *a, int argc, char **argv)
{
	const struct cli_cmd *c = a->cmd;
	char full[80];
	int i;

	snprintf(full, sizeof(full), "%s %s", a->prog, c->name);
	a->pos = calloc((size_t)argc + 1, sizeof(char *));
	if (!a->pos)
		return usage_error(a->prog, "%s%s", "out of memory", "");
	for (i = 0; i < argc; i++) {
		const char *s = argv[i], *eq, *name;
		size_t len;
		int k;

		if (!strcmp(s, "--")) {
			for (i++; i < argc; i++)
				a->pos[a->npos++] = argv[i];
			break;
		}
		if (strncmp(s, "--", 2) || !s[2]) {
			a->pos[a->npos++] = argv[i];
			continue;
		}
		name = s + 2;
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		k = opt_index(c, name, len);
		if (k < 0)
			return usage_error(a->prog, "unknown option '%s' for '%s'", s, full);
		if (c->opts[k].type == CLI_FLAG) {
			if (eq)
				return usage_error(a->prog, "option '--%s' takes no value in '%s'",
						   c->opts[k].name, s);
			a->set[k] = true;
			continue;
		}
		if (!eq && i + 1 >= argc)
			return usage_error(a->prog, "option '%s' needs a value (%s)", s,
					   c->opts[k].metavar ? c->opts[k].metavar : "VALUE");
		a->val[k] = eq ? eq + 1 : argv[++i];
		a->set[k] = true;
		if (c->opts[k].type == CLI_LIST) {
			if (a->nlist[k] >= CLI_MAX_LIST)
				return usage_error(a->prog, "too many '--%s' options (max 8), at '%s'",
						   c->opts[k].name, a->val[k]);
			a->list[k][a->nlist[k]++] = a->val[k];
		}
	}
	for (int k = 0; c->opts && c->opts[k].name; k++)
		if (c->opts[k].required && !a->set[k])
			return usage_error(a->prog, "missing option '--%s' for '%s'",
					   c->opts[k].name, full);
	if (a->npos < c->min_pos)
		return usage_error(a->prog, "missing argument %s for '%s'", c->posargs, full);
	if (a->npos > c->max_pos)
		return usage_error(a->prog, "unexpected argument '%s' for '%s'",
				   a->pos[c->max_pos], full);
	return 0;
}

bool cli_parse(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
	       int argc, char **argv, struct cli_args *a, int *status)
{
	*a = (struct cli_args){ .prog = prog };
	if (argc == 2 && !strcmp(argv[1], "--cli-table")) {
		*status = cli_table_print(stdout, prog, summary, cmds);
		return false;
	}
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		list_cmds(argc < 2 ? stderr : stdout, prog, summary, cmds);
		*status = argc < 2 ? 2 : 0;
		return false;
	}
	for (int i = 0; cmds[i]; i++)
		if (!strcmp(cmds[i]->name, argv[1]))
			a->cmd = cmds[i];
	if (!a->cmd) {
		*status = usage_error(prog, "unknown command '%s' (try '%s --help')", argv[1], prog);
		return false;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			cli_help(stdout, prog, a->cmd);
			*status = 0;
			return false;
		}
	}
	*status = parse(a, argc - 2, argv + 2);
	if (!*status)
		return true;
	free(a->pos);
	a->pos = NULL;
	return false;
}

int cli_main(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
	     int argc, char **argv)
{
	struct cli_args a;
	int rc;

	log_init(prog);
	if (!cli_parse(prog, summary, cmds, argc, argv, &a, &rc))
		return rc;
	rc = a.cmd->exec(&a);
	free(a.pos);
	return rc;
}

int cli_report(const struct cli_args *a, struct err *e)
{
	int rc = (e && (e->code == ERR_INVAL || e->code == ERR_NOTFOUND)) ? 2 : 1;

	put_error(a->prog, e ? e->msg : "failed");
	err_free(e);
	return rc;
}

int cli_fail(const struct cli_args *a, const char *fmt, ...)
{
	va_list ap;
	char *msg = NULL;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	put_error(a->prog, msg ? msg : "out of memory");
	free(msg);
	return 2;
}

bool cli_seconds(const struct cli_args *a, const char *name, int def_s, int *out_ms,
		 struct err **errp)
{
	const char *s = cli_get(a, name);
	uint64_t v = (uint64_t)def_s;
	char what[64];

	snprintf(what, sizeof(what), "--%s", name);
	if (s && !util_parse_u64(s, 1, 86400, what, &v, errp))
		return false;
	*out_ms = (int)v * 1000;
	return true;
}
