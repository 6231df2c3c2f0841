/*
 * cli_table.c - the command tables as text for the build's generators.
 *
 * `PROG --cli-table` (hidden: not in --help, not a command) prints every
 * command and option of PROG, one record per line, fields separated by
 * tabs, so that the man pages (scripts/mkman.sh) and the bash completion
 * (scripts/mkcompletion.sh) come from the same tables as the parser and
 * --help and cannot drift from them:
 *   prog  NAME  SUMMARY
 *   cmd   NAME  POSARGS  SUMMARY
 *   opt   CMD   NAME  flag|value|list  METAVAR  required|optional  HELP
 * A tab or newline in a table string would break a record: such a table
 * is a bug in our code, so the dump fails (exit 1) naming it.
 */
#include "cli.h"
#include "../common/util.h"

#include <string.h>

static const char *const type_names[] = {
	[CLI_FLAG] = "flag",
	[CLI_VALUE] = "value",
	[CLI_LIST] = "list",
};
/* enum cli_argtype has no _MAX (cli.h predates the rule): its last value. */
_Static_assert(ARRAY_SIZE(type_names) == CLI_LIST + 1, "type_names");

static bool clean(const char *prog, const char *what, const char *s)
{
	if (s && strpbrk(s, "\t\n")) {
		fprintf(stderr, "%s: internal error: tab or newline in the table's %s '%s'\n",
			prog, what, s);
		return false;
	}
	return true;
}

int cli_table_print(FILE *f, const char *prog, const char *summary,
		    const struct cli_cmd *const *cmds)
{
	if (!clean(prog, "summary", summary))
		return 1;
	fprintf(f, "prog\t%s\t%s\n", prog, summary);
	for (int i = 0; cmds[i]; i++) {
		const struct cli_cmd *c = cmds[i];

		if (!clean(prog, "command", c->name) || !clean(prog, "usage", c->posargs) ||
		    !clean(prog, "summary", c->summary))
			return 1;
		fprintf(f, "cmd\t%s\t%s\t%s\n", c->name, c->posargs, c->summary);
		for (int k = 0; c->opts && c->opts[k].name; k++) {
			const struct cli_opt *o = &c->opts[k];

			if (!clean(prog, "option", o->name) || !clean(prog, "metavar", o->metavar) ||
			    !clean(prog, "help", o->help))
				return 1;
			fprintf(f, "opt\t%s\t%s\t%s\t%s\t%s\t%s\n", c->name, o->name,
				type_names[o->type], o->metavar ? o->metavar : "",
				o->required ? "required" : "optional", o->help);
		}
	}
	return fflush(f) == 0 ? 0 : 1;
}
