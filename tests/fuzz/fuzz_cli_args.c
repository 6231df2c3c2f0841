/*
 * fuzz_cli_args.c - libFuzzer target for the command lines of the seven
 * programs. The first byte picks the program, the rest is its argv after
 * argv[0], split at NUL bytes. Each program's own main() runs, with its
 * own command table and its rewrites (`vmmigrate 106 due` is `vmmigrate
 * migrate 106 due`), but cli_main() is replaced by one that parses as the
 * real one does (cli_parse) and runs no command: nothing reaches vmmd,
 * SSH, QEMU or a file. The hidden `_agent` and `_replica` entries, which
 * main() runs before any parsing, are skipped for the same reason.
 * Checks: a parsed command line fits its command's table (positional
 * count, required options, list limits), every option reads back through
 * cli_get/cli_has/cli_list, and everything is freed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The programs' mains call this instead of cli_main (the real one lives in
 * cli/cli_opt.c, linked too). */
int fuzz_cli_main(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
		  int argc, char **argv);

#define cli_main fuzz_cli_main
#define main vmcluster_main
#define cmds vmcluster_cmds
#include "cli/vmcluster.c"
#undef main
#undef cmds
#define main vmctl_main
#define cmds vmctl_cmds
#include "cli/vmctl.c"
#undef main
#undef cmds
#define main vmguest_main
#define cmds vmguest_cmds
#include "cli/vmguest.c"
#undef main
#undef cmds
#define main vmmd_main
#define cmds vmmd_cmds
#include "cli/vmmd.c"
#undef main
#undef cmds
#define main vmmigrate_main
#define cmds vmmigrate_cmds
#include "cli/vmmigrate.c"
#undef main
#undef cmds
#define main vmrepl_main
#define cmds vmrepl_cmds
#include "cli/vmrepl.c"
#undef main
#undef cmds
#define main vmstore_main
#define cmds vmstore_cmds
#include "cli/vmstore.c"
#undef main
#undef cmds
#undef cli_main

#define MAX_ARGS 64

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
} progs[] = {
	{ "vmmigrate", vmmigrate_main }, { "vmrepl", vmrepl_main }, { "vmctl", vmctl_main },
	{ "vmcluster", vmcluster_main }, { "vmstore", vmstore_main }, { "vmmd", vmmd_main },
	{ "vmguest", vmguest_main },
};

static void check_parsed(const struct cli_args *a, int argc, char **argv)
{
	const struct cli_cmd *c = a->cmd;
	int nopts = 0;

	if (a->npos < c->min_pos || a->npos > c->max_pos)
		abort();
	for (int i = 0; i < a->npos; i++) {
		int k = 2;

		while (k < argc && a->pos[i] != argv[k])
			k++;
		if (k == argc)
			abort(); /* a positional that is not one of the arguments */
	}
	for (const struct cli_opt *o = c->opts; o && o->name; o++, nopts++) {
		const char *const *l;
		const char *v = cli_get(a, o->name);
		bool set = cli_has(a, o->name);
		unsigned n;

		l = cli_list(a, o->name, &n);
		if ((o->required && !set) || (v && !set) || n > CLI_MAX_LIST ||
		    (o->type == CLI_FLAG && v) || (o->type != CLI_LIST && n) ||
		    (o->type != CLI_FLAG && set && !v) || (n && l[n - 1] != v))
			abort();
		for (unsigned i = 0; i < n; i++)
			(void)strlen(l[i]); /* ASan: each points into a live argument */
		if (v)
			(void)strlen(v);
	}
	if (nopts > CLI_MAX_OPTS)
		abort(); /* the table outgrew struct cli_args */
}

int fuzz_cli_main(const char *prog, const char *summary, const struct cli_cmd *const *cmds,
		  int argc, char **argv)
{
	struct cli_args a;
	int status;

	if (!cli_parse(prog, summary, cmds, argc, argv, &a, &status)) {
		if (status < 0 || status > 2)
			abort();
		return status;
	}
	check_parsed(&a, argc, argv);
	free(a.pos);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char **argv[])
{
	(void)argc;
	(void)argv;
	/* Help, tables and usage errors go nowhere; libFuzzer and the
	 * sanitizers keep the real stderr (their own FILE, fd 2). */
	if (!freopen("/dev/null", "w", stdout) || !(stderr = fopen("/dev/null", "w")))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[MAX_ARGS + 1];
	int argc = 1;
	size_t off = 1;

	if (size < 1)
		return 0;
	argv[0] = (char *)progs[data[0] % ARRAY_SIZE(progs)].name;
	/* Each argument a malloc'ed string of its own, so that ASan sees a
	 * read past one. "a\0b" is two arguments, "a\0" one. */
	while (off < size && argc < MAX_ARGS) {
		const uint8_t *nul = memchr(data + off, 0, size - off);
		size_t len = nul ? (size_t)(nul - (data + off)) : size - off;

		argv[argc] = strndup((const char *)data + off, len);
		if (!argv[argc])
			abort();
		argc++;
		off += len + 1;
	}
	argv[argc] = NULL;
	/* What main() does before parsing, with side effects: not here. */
	if (!(argc == 2 && !strcmp(argv[1], "_agent")) &&
	    !(argc == 3 && !strcmp(argv[1], "_replica")))
		progs[data[0] % ARRAY_SIZE(progs)].main(argc, argv);
	for (int i = 1; i < argc; i++)
		free(argv[i]);
	return 0;
}
