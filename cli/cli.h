/*
 * cli.h - table-driven command line (after tmux's cmd_entry).
 *
 * Each command is one `struct cli_cmd` in its own file. The parser, the
 * usage lines and --help all come from the tables, so they cannot drift.
 * Options are long only: `--name value`, `--name=value`, flags `--name`;
 * `--` ends options. Errors are one line naming the bad value:
 *   vmguest: unknown option '--memroy' for 'vmguest start'
 * Exit status: 0 success, 1 the operation failed, 2 bad usage or input.
 */
#ifndef VMM_CLI_H
#define VMM_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "../common/err.h"

enum cli_argtype { CLI_FLAG, CLI_VALUE, CLI_LIST };

struct cli_opt {
	const char *name;     /* without the leading "--" */
	enum cli_argtype type;
	const char *metavar;  /* e.g. "SIZE"; NULL for flags */
	const char *help;
	bool required;
};

#define CLI_MAX_OPTS 24
#define CLI_MAX_LIST 8

struct cli_cmd;

struct cli_args {
	const char *prog;
	const struct cli_cmd *cmd;
	const char *val[CLI_MAX_OPTS];
	const char *list[CLI_MAX_OPTS][CLI_MAX_LIST];
	unsigned nlist[CLI_MAX_OPTS];
	bool set[CLI_MAX_OPTS];
	char **pos;
	int npos;
};

struct cli_cmd {
	const char *name;
	const char *posargs;  /* usage text for positional args, or "" */
	const char *summary;
	const struct cli_opt *opts; /* ends with { NULL } */
	int min_pos, max_pos;
	int (*exec)(const struct cli_args *a);
};

/* Value of option `name` (last one given), or NULL. */
const char *cli_get(const struct cli_args *a, const char *name);
bool cli_has(const struct cli_args *a, const char *name);
/* Values of a CLI_LIST option; *n gets their count. */
const char *const *cli_list(const struct cli_args *a, const char *name, unsigned *n);

/* Parses argv and runs the command; returns the exit status. */
int cli_main(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
	     int argc, char **argv);
/* cli_main without running the command: true with *a ready for a->cmd->exec
 * (the caller frees a->pos); false with *status the exit status once --help,
 * --cli-table or a usage error has been printed. Also for tests/fuzz. */
bool cli_parse(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
	       int argc, char **argv, struct cli_args *a, int *status);

/* Reports e once ("prog: message") and frees it; returns 2 for ERR_INVAL /
 * ERR_NOTFOUND (the user's input was wrong) and 1 otherwise. */
int cli_report(const struct cli_args *a, struct err *e);

/* Option `name` in whole seconds (1-86400), def_s if absent, as ms;
 * the error names the value: "invalid --timeout 'soon': not a number". */
bool cli_seconds(const struct cli_args *a, const char *name, int def_s, int *out_ms,
		 struct err **errp);

/* Reports bad user input ("prog: message") and returns 2. */
int cli_fail(const struct cli_args *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prints a command's usage and option table. */
void cli_help(FILE *f, const char *prog, const struct cli_cmd *c);

/* `PROG --cli-table`, hidden: every command and option as tab-separated
 * records for the man page and completion generators (cli_table.c). */
int cli_table_print(FILE *f, const char *prog, const char *summary,
		    const struct cli_cmd *const *cmds);

#endif
