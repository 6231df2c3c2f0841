/* log.c - see log.h. */
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug",
	[LOG_INFO] = "info",
	[LOG_WARN] = "warn",
	[LOG_ERROR] = "error",
};
_Static_assert(ARRAY_SIZE(level_names) == LOG_LEVEL_MAX, "level_names");

static enum log_level cur_level = LOG_INFO;
static const char *prog_name = "vmmigrate";

void log_init(const char *prog)
{
	const char *env = getenv("VMM_LOG");

	if (prog)
		prog_name = prog;
	if (!env)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
		if (!strcmp(env, level_names[i]))
			cur_level = (enum log_level)i;
}

void log_set_level(enum log_level lvl)
{
	cur_level = lvl;
}

enum log_level log_get_level(void)
{
	return cur_level;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (lvl < cur_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
	/* One fprintf per line keeps lines whole when threads log at once. */
	char line[2048];
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s.%03ld %s %s: %s\n", stamp, ts.tv_nsec / 1000000,
		prog_name, level_names[lvl], line);
}
