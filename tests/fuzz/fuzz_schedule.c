/* fuzz_schedule.c - libFuzzer target for replication schedules. Any text
 * either fails with one line and leaves the output alone, or parses to a
 * schedule whose canonical text reads back equal and formats the same
 * again, and whose next event from a few fixed times, in UTC and in
 * Berlin local time (POSIX rules, DST both ways), is later, fits the
 * schedule, is a wall-clock time's first occurrence, and has no fitting
 * minute before it (checked minute by minute over the next 26 hours).
 * Any breach abort()s, which libFuzzer reports. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replicate/repl_schedule.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const time_t froms[] = {
	-1,         /* 1969-12-31 23:59:59 UTC */
	1709633220, /* 2024-03-05 10:07 UTC */
	1711846799, /* 2024-03-31 01:59:59 CET, before spring forward */
	1729989000, /* 2024-10-27 02:30 CEST, in the fall-back night */
	4107542399, /* 2100-02-28 23:59:59 UTC, not a leap year */
};

static bool fits(const struct repl_schedule *s, const struct tm *tm)
{
	return tm->tm_sec == 0 && (s->minutes >> tm->tm_min & 1) &&
	       (s->hours >> tm->tm_hour & 1) && (s->mdays >> tm->tm_mday & 1) &&
	       (s->months >> (tm->tm_mon + 1) & 1) && (s->wdays >> tm->tm_wday & 1);
}

static bool same_wall(const struct tm *a, const struct tm *b)
{
	return a->tm_year == b->tm_year && a->tm_mon == b->tm_mon && a->tm_mday == b->tm_mday &&
	       a->tm_hour == b->tm_hour && a->tm_min == b->tm_min && a->tm_sec == b->tm_sec;
}

/* An event at t: t fits and its wall-clock time did not show an hour
 * earlier (Berlin moves its clocks by an hour). */
static bool is_event(const struct repl_schedule *s, time_t t, bool utc)
{
	struct tm tm, before;
	time_t early = t - 3600;

	if (utc)
		return gmtime_r(&t, &tm) && fits(s, &tm);
	if (!localtime_r(&t, &tm) || !localtime_r(&early, &before))
		abort();
	return fits(s, &tm) && !same_wall(&tm, &before);
}

static void check_next(const struct repl_schedule *s, time_t after, bool utc)
{
	time_t next, t;

	utc = utc || s->utc;
	/* Every schedule that parses has an event within 400 years. */
	if (!repl_schedule_next(s, after, utc, &next) || next <= after || !is_event(s, next, utc))
		abort();
	t = after - (after % 60 + 60) % 60; /* down to the minute, also below 0 */
	for (t += 60; t < next && t <= after + 26 * 3600; t += 60)
		if (is_event(s, t, utc))
			abort(); /* an earlier event was missed */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
	tzset();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct repl_schedule s, back, orig;
	char buf[REPL_SCHEDULE_FMT_MAX], again[REPL_SCHEDULE_FMT_MAX];
	struct err *e = NULL;
	char *text = malloc(size + 1);

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	memset(&s, 0x5a, sizeof(s));
	orig = s;
	if (!repl_schedule_parse(text, &s, &e)) {
		if (!e || e->code != ERR_INVAL || strncmp(e->msg, "invalid schedule '", 18) ||
		    strchr(e->msg, '\n') || memcmp(&s, &orig, sizeof(s)))
			abort();
		err_free(e);
		free(text);
		return 0;
	}
	if (e)
		abort(); /* errp set on success */
	repl_schedule_format(&s, buf, sizeof(buf));
	if (strlen(buf) + 1 >= sizeof(buf) || !repl_schedule_parse(buf, &back, &e) ||
	    !repl_schedule_equal(&s, &back) ||
	    strcmp(repl_schedule_format(&back, again, sizeof(again)), buf))
		abort();
	for (size_t i = 0; i < sizeof(froms) / sizeof(froms[0]); i++) {
		check_next(&s, froms[i], true);
		check_next(&s, froms[i], false);
	}
	free(text);
	return 0;
}
