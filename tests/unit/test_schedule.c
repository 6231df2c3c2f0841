/* test_schedule.c - replication schedules (pvesr calendar events): the next
 * event for tables of cases in UTC and in Berlin and New York local time
 * across DST changes, canonical text, and one-line errors that name the bad
 * piece. Expected times were worked out by hand from the calendar and
 * written as literal epoch seconds, the UTC time in the comment.
 * Local zones are POSIX TZ rules (glibc needs no tzdata for them); the
 * tzdata names are tried as well where /usr/share/zoneinfo has them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "replicate/repl.h"
#include "replicate/repl_schedule.h"

#define BERLIN "CET-1CEST,M3.5.0,M10.5.0/3"
#define NEW_YORK "EST5EDT,M3.2.0,M11.1.0"

struct next_case {
	const char *text;
	time_t after, want;
};

/* Times are UTC. */
static const struct next_case utc_cases[] = {
	/* Tue 2024-03-05 10:07:00 -> 2024-03-05 10:15:00: next quarter hour */
	{ "*/15", 1709633220, 1709633700 },
	/* Tue 2024-03-05 10:15:00 -> 2024-03-05 10:30:00: strictly after: an event time itself moves on */
	{ "*/15", 1709633700, 1709634600 },
	/* Tue 2024-03-05 10:14:59 -> 2024-03-05 10:15:00: one second before */
	{ "*/15", 1709633699, 1709633700 },
	/* Tue 2024-03-05 10:45:00 -> 2024-03-05 11:00:00: minute wrap into the next hour */
	{ "*/15", 1709635500, 1709636400 },
	/* Tue 2024-03-05 23:50:00 -> 2024-03-06 00:00:00: hour wrap into the next day */
	{ "*/15", 1709682600, 1709683200 },
	/* Tue 2024-12-31 23:58:30 -> 2025-01-01 00:00:00: year wrap */
	{ "*/5", 1735689510, 1735689600 },
	/* Tue 2024-03-05 10:07:00 -> 2024-03-05 10:10:00: 0/5 is every 5 minutes too */
	{ "0/5", 1709633220, 1709633400 },
	/* Tue 2024-03-05 10:07:30 -> 2024-03-05 10:08:00: every minute, second 0 */
	{ "*", 1709633250, 1709633280 },
	/* Tue 2024-03-05 10:07:59 -> 2024-03-05 10:08:00: keyword */
	{ "minutely", 1709633279, 1709633280 },
	/* Tue 2024-03-05 10:51:00 -> 2024-03-05 11:30:00: minutes 30,40,50 only */
	{ "30/10", 1709635860, 1709638200 },
	/* Mon 2024-03-11 00:00:00 -> 2024-03-11 00:22:00: Mon: a bare number is minutes, not 22:00 */
	{ "mon 22", 1710115200, 1710116520 },
	/* Wed 2024-03-06 07:59:59 -> 2024-03-06 08:00:00: Wed, window opens */
	{ "mon..fri 8..17,22:0/15", 1709711999, 1709712000 },
	/* Fri 2024-03-08 17:45:00 -> 2024-03-08 22:00:00: Fri, last of 8..17 -> 22:00 */
	{ "mon..fri 8..17,22:0/15", 1709919900, 1709935200 },
	/* Fri 2024-03-08 22:45:00 -> 2024-03-11 08:00:00: Fri night -> Mon morning */
	{ "mon..fri 8..17,22:0/15", 1709937900, 1710144000 },
	/* Wed 2024-03-06 23:50:00 -> 2024-03-11 00:30:00: Wed 23:50 -> Mon 00:30 */
	{ "mon..wed 30/10", 1709769000, 1710117000 },
	/* Fri 2024-03-08 12:45:00 -> 2024-03-08 13:05:00: Fri 12:45 -> 13:05 */
	{ "fri 12..13:5/20", 1709901900, 1709903100 },
	/* Tue 2024-03-05 22:05:00 -> 2024-03-06 12:05:00: hours 12,14..22 at :05 */
	{ "12/2:5", 1709676300, 1709726700 },
	/* Tue 2024-03-05 12:29:00 -> 2024-03-05 12:30:00: bare time: every day */
	{ "12:30", 1709641740, 1709641800 },
	/* Tue 2024-03-05 12:30:00 -> 2024-03-06 12:30:00: next day */
	{ "12:30", 1709641800, 1709728200 },
	/* Tue 2024-03-05 11:59:59 -> 2024-03-05 12:00:00: seconds written as 0 */
	{ "12:00:00", 1709639999, 1709640000 },
	/* Sat 2024-03-09 00:00:00 -> 2024-03-11 12:00:00: Sat -> Mon */
	{ "mon,tue,wed,thu,fri 12:00", 1709942400, 1710158400 },
	/* Tue 2024-03-05 00:00:00 -> 2024-03-08 03:00:00: wrapping range: Tue -> Fri */
	{ "fri..mon 3:00", 1709596800, 1709866800 },
	/* Sat 2024-03-09 03:00:00 -> 2024-03-10 03:00:00: Sat -> Sun */
	{ "fri..mon 3:00", 1709953200, 1710039600 },
	/* Mon 2024-03-11 03:00:00 -> 2024-03-15 03:00:00: Mon -> Fri */
	{ "fri..mon 3:00", 1710126000, 1710471600 },
	/* Sat 2024-03-02 15:00:00 -> 2024-04-06 15:00:00: first Saturday: 2 Mar -> 6 Apr */
	{ "sat *-1..7 15:00", 1709391600, 1712415600 },
	/* Sat 2024-08-31 12:00:00 -> 2024-09-07 15:00:00: Sat 31 Aug is not in 1..7 */
	{ "sat *-1..7 15:00", 1725105600, 1725721200 },
	/* Tue 2024-03-05 00:00:00 -> 2024-04-05 00:00:00: 5th of every month at 0:00 */
	{ "*-05", 1709596800, 1712275200 },
	/* Sun 2024-12-15 00:00:00 -> 2025-01-01 00:00:00: year given as * */
	{ "*-*-1 0:00", 1734220800, 1735689600 },
	/* Mon 2024-04-01 00:00:00 -> 2024-05-31 00:00:00: April has 30 days */
	{ "*-*-31", 1711929600, 1717113600 },
	/* Wed 2024-01-31 23:59:00 -> 2024-03-31 23:59:00: February has no 31st */
	{ "*-31 23:59", 1706745540, 1711929540 },
	/* Wed 2023-03-01 00:00:00 -> 2024-02-29 12:00:00: 2024 is leap */
	{ "*-02-29 12:00", 1677628800, 1709208000 },
	/* Wed 2096-02-29 12:00:00 -> 2104-02-29 12:00:00: 2100 is not leap: 8 years */
	{ "*-02-29 12:00", 3981355200, 4233729600 },
	/* Mon 1999-03-01 00:00:00 -> 2000-02-29 00:00:00: 2000 is leap */
	{ "*-02-29", 920246400, 951782400 },
	/* Sun 2100-02-28 00:00:00 -> 2101-02-28 00:00:00: no 29 Feb 2100 */
	{ "*-02-28,29", 4107456000, 4138992000 },
	/* Wed 2024-02-28 00:00:00 -> 2024-02-29 00:00:00: 29 Feb 2024 */
	{ "*-02-28,29", 1709078400, 1709164800 },
	/* Wed 2024-02-28 00:00:00 -> 2024-02-29 00:00:00: leap day */
	{ "daily", 1709078400, 1709164800 },
	/* Tue 2023-02-28 00:00:00 -> 2023-03-01 00:00:00: no leap day */
	{ "daily", 1677542400, 1677628800 },
	/* Tue 2024-12-31 00:00:00 -> 2025-01-01 00:00:00: new year */
	{ "daily", 1735603200, 1735689600 },
	/* Tue 2024-03-05 10:00:00 -> 2024-03-05 11:00:00: keyword */
	{ "hourly", 1709632800, 1709636400 },
	/* Mon 2024-03-11 00:00:00 -> 2024-03-18 00:00:00: Mon -> Mon */
	{ "weekly", 1710115200, 1710720000 },
	/* Wed 2024-03-13 09:00:00 -> 2024-03-18 00:00:00: Wed -> Mon */
	{ "weekly", 1710320400, 1710720000 },
	/* Wed 2024-01-31 00:00:00 -> 2024-02-01 00:00:00: keyword */
	{ "monthly", 1706659200, 1706745600 },
	/* Sat 2024-06-01 00:00:00 -> 2025-01-01 00:00:00: keyword */
	{ "yearly", 1717200000, 1735689600 },
	/* Mon 2024-01-01 00:00:00 -> 2025-01-01 00:00:00: alias */
	{ "annually", 1704067200, 1735689600 },
	/* Mon 2024-04-01 00:00:00 -> 2024-07-01 00:00:00: keyword */
	{ "quarterly", 1711929600, 1719792000 },
	/* Mon 2024-07-01 00:00:01 -> 2025-01-01 00:00:00: keyword */
	{ "semiannually", 1719792001, 1735689600 },
	/* Mon 2024-01-01 00:00:00 -> 2024-07-01 00:00:00: alias */
	{ "semi-annually", 1704067200, 1719792000 },
	/* Mon 2024-01-01 00:00:00 -> 2033-12-25 00:00:00: Christmas on a Sunday: 9 years */
	{ "sun *-12-25", 1704067200, 2019081600 },
	/* Tue 2016-03-01 00:00:00 -> 2044-02-29 00:00:00: 29 Feb on a Monday: 28 years */
	{ "mon *-02-29", 1456790400, 2340316800 },
	/* Thu 1970-01-01 00:00:00 -> 1970-01-01 00:15:00: the epoch */
	{ "*/15", 0, 900 },
	/* Wed 1969-12-31 23:59:59 -> 1970-01-01 00:00:00: before the epoch */
	{ "*/15", -1, 0 },
};

/* Europe/Berlin: CET, CEST from 31 Mar 2024 02:00 CET (01:00 UTC) to
 * 27 Oct 2024 03:00 CEST (01:00 UTC). Times are UTC. */
static const struct next_case berlin_cases[] = {
	/* Mon 2024-01-15 10:07:00 -> 2024-01-15 10:15:00: 11:07 CET -> 11:15 CET */
	{ "*/15", 1705313220, 1705313700 },
	/* Mon 2024-07-01 00:00:00 -> 2024-07-01 10:00:00: 02:00 CEST -> 12:00 CEST */
	{ "12:00", 1719792000, 1719828000 },
	/* Mon 2024-07-01 00:00:00 -> 2024-07-01 12:00:00: UTC in the text wins over local */
	{ "12:00 UTC", 1719792000, 1719835200 },
	/* Sat 2024-03-30 01:30:00 -> 2024-04-01 00:30:00: no 02:30 on 31 Mar -> 1 Apr 02:30 CEST */
	{ "2:30", 1711762200, 1711931400 },
	/* Sat 2024-03-30 01:00:00 -> 2024-04-01 00:00:00: 02:00 on 31 Mar does not exist either */
	{ "2:00", 1711760400, 1711929600 },
	/* Sun 2024-03-31 00:45:00 -> 2024-03-31 01:00:00: 01:45 CET -> 03:00 CEST, 15 min later */
	{ "*/15", 1711845900, 1711846800 },
	/* Sat 2024-03-30 23:00:00 -> 2024-03-31 22:00:00: 31 Mar 00:00 CET -> 1 Apr 00:00 CEST (23 h) */
	{ "daily", 1711839600, 1711922400 },
	/* Sun 2024-10-27 00:00:00 -> 2024-10-27 00:30:00: 02:00 CEST -> 02:30 CEST, the first 02:30 */
	{ "2:30", 1729987200, 1729989000 },
	/* Sun 2024-10-27 00:30:00 -> 2024-10-28 01:30:00: 02:30 CEST fired; not again at 02:30 CET */
	{ "2:30", 1729989000, 1730079000 },
	/* Sun 2024-10-27 01:10:00 -> 2024-10-28 01:30:00: 02:10 CET (second pass) -> 28 Oct 02:30 CET */
	{ "2:30", 1729991400, 1730079000 },
	/* Sun 2024-10-27 00:45:00 -> 2024-10-27 02:00:00: 02:45 CEST -> 03:00 CET (75 min later) */
	{ "*/15", 1729989900, 1729994400 },
	/* Sun 2024-10-27 01:10:00 -> 2024-10-27 02:00:00: 02:10 CET (second pass) -> 03:00 CET */
	{ "*/15", 1729991400, 1729994400 },
	/* Sun 2024-10-27 00:30:00 -> 2024-10-27 02:00:00: 03:00 exists once, as CET */
	{ "3:00", 1729989000, 1729994400 },
	/* Tue 2044-03-01 00:00:00 -> 2072-02-28 23:00:00: 29 Feb on a Monday, 00:00 CET */
	{ "mon *-02-29", 2340403200, 3223926000 },
};

/* America/New_York: EST, EDT from 10 Mar 2024 02:00 EST (07:00 UTC) to
 * 3 Nov 2024 02:00 EDT (06:00 UTC). Times are UTC. */
static const struct next_case ny_cases[] = {
	/* Mon 2024-01-15 12:00:00 -> 2024-01-16 05:00:00: 07:00 EST -> 00:00 EST */
	{ "0:00", 1705320000, 1705381200 },
	/* Sat 2024-03-09 12:00:00 -> 2024-03-11 06:30:00: no 02:30 on 10 Mar -> 11 Mar 02:30 EDT */
	{ "2:30", 1709985600, 1710138600 },
	/* Sun 2024-11-03 04:00:00 -> 2024-11-03 05:30:00: 00:00 EDT -> 01:30 EDT, the first 01:30 */
	{ "1:30", 1730606400, 1730611800 },
	/* Sun 2024-11-03 05:30:00 -> 2024-11-04 06:30:00: 01:30 EDT -> not 01:30 EST -> 4 Nov 01:30 EST */
	{ "1:30", 1730611800, 1730701800 },
	/* Sun 2024-11-03 05:45:00 -> 2024-11-03 07:00:00: 01:45 EDT -> 02:00 EST, not 01:00 EST */
	{ "*/30", 1730612700, 1730617200 },
	/* Sat 2024-03-02 20:00:00 -> 2024-04-06 19:00:00: Sat 2 Mar 15:00 EST -> Sat 6 Apr 15:00 EDT */
	{ "sat *-1..7 15:00", 1709409600, 1712430000 },
};

static void set_tz(const char *tz)
{
	assert_int_equal(setenv("TZ", tz, 1), 0);
	tzset();
}

static void check_next(const char *zone, const struct next_case *c, size_t n, bool utc)
{
	for (size_t i = 0; i < n; i++) {
		struct repl_schedule s;
		struct err *e = NULL;
		time_t got = 0;

		if (!repl_schedule_parse(c[i].text, &s, &e))
			fail_msg("'%s': %s", c[i].text, e->msg);
		if (!repl_schedule_next(&s, c[i].after, utc, &got) || got != c[i].want)
			fail_msg("%s: '%s' after %lld: got %lld, want %lld", zone, c[i].text,
				 (long long)c[i].after, (long long)got, (long long)c[i].want);
		/* The event is also the next one from just before it. */
		if (!repl_schedule_next(&s, c[i].want - 1, utc, &got) || got != c[i].want)
			fail_msg("%s: '%s' after %lld: got %lld", zone, c[i].text,
				 (long long)c[i].want - 1, (long long)got);
	}
}

#define CHECK_NEXT(zone, cases, utc) check_next(zone, cases, sizeof(cases) / sizeof(cases[0]), utc)

static void test_next_utc(void **state)
{
	(void)state;
	set_tz(BERLIN); /* utc = true ignores the local zone */
	CHECK_NEXT("utc", utc_cases, true);
	set_tz("UTC0"); /* local time that is UTC */
	CHECK_NEXT("UTC0", utc_cases, false);
}

static void test_next_local(void **state)
{
	(void)state;
	set_tz(BERLIN);
	CHECK_NEXT(BERLIN, berlin_cases, false);
	set_tz(NEW_YORK);
	CHECK_NEXT(NEW_YORK, ny_cases, false);
}

/* The same rules from tzdata, when it is installed. */
static void test_next_tzdata(void **state)
{
	(void)state;
	if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) ||
	    access("/usr/share/zoneinfo/America/New_York", R_OK))
		skip();
	set_tz("Europe/Berlin");
	CHECK_NEXT("Europe/Berlin", berlin_cases, false);
	set_tz("America/New_York");
	CHECK_NEXT("America/New_York", ny_cases, false);
}

/* Every event of a night, one after another: the skipped and the doubled
 * hour in Berlin. */
static void check_chain(const char *text, time_t after, const time_t *want, size_t n)
{
	struct repl_schedule s;
	struct err *e = NULL;

	assert_true(repl_schedule_parse(text, &s, &e));
	for (size_t i = 0; i < n; i++) {
		time_t got = 0;

		assert_true(repl_schedule_next(&s, after, false, &got));
		if (got != want[i])
			fail_msg("'%s' event %zu: got %lld, want %lld", text, i, (long long)got,
				 (long long)want[i]);
		after = got;
	}
}

static void test_dst_nights(void **state)
{
	static const time_t fall[] = {
		1729980000, /* 2024-10-26 22:00 UTC = 27 Oct 00:00 CEST */
		1729983600, /* 23:00 UTC = 01:00 CEST */
		1729987200, /* 27 Oct 00:00 UTC = 02:00 CEST */
		/* 01:00 UTC = 02:00 CET again: already fired */
		1729994400, /* 02:00 UTC = 03:00 CET */
		1729998000, /* 03:00 UTC = 04:00 CET */
	};
	static const time_t spring[] = {
		1711841400, /* 2024-03-30 23:30 UTC = 31 Mar 00:30 CET */
		1711845000, /* 31 Mar 00:30 UTC = 01:30 CET */
		/* 02:30 does not exist */
		1711848600, /* 01:30 UTC = 03:30 CEST */
		1711852200, /* 02:30 UTC = 04:30 CEST */
	};

	(void)state;
	set_tz(BERLIN);
	check_chain("hourly", 1729978200 /* 2024-10-26 21:30 UTC */, fall,
		    sizeof(fall) / sizeof(fall[0]));
	check_chain("*:30", 1711839600 /* 2024-03-30 23:00 UTC */, spring,
		    sizeof(spring) / sizeof(spring[0]));
}

/* Times that cannot be turned into a date end the search at once. */
static void test_next_out_of_range(void **state)
{
	struct repl_schedule s;
	struct err *e = NULL;
	struct tm far = { 0 };
	time_t got = 42;

	(void)state;
	set_tz(BERLIN);
	assert_true(repl_schedule_parse("*/15", &s, &e));
	assert_false(repl_schedule_next(&s, (time_t)INT64_MAX, true, &got));
	assert_false(repl_schedule_next(&s, (time_t)INT64_MAX, false, &got));
	assert_false(repl_schedule_next(&s, (time_t)INT64_MIN, true, &got));
	/* A year whose next 400 years do not all fit in struct tm. */
	far.tm_year = INT_MAX - 1900 - 100;
	far.tm_mday = 1;
	assert_false(repl_schedule_next(&s, timegm(&far), true, &got));
	assert_int_equal(got, 42); /* untouched */
}

struct fmt_case {
	const char *text, *canonical;
};

static const struct fmt_case fmt_cases[] = {
	{ "*/15", "*/15" },
	{ "0/15", "*/15" },
	{ "*:0/15", "*/15" },
	{ "0,15,30,45", "*/15" },
	{ "*/30", "*/30" },
	{ "*", "*" },
	{ "minutely", "*" },
	{ "*-*-* *:*:00", "*" },
	{ "*:00", "hourly" },
	{ "0", "hourly" },
	{ "0:00", "daily" },
	{ "sun..sat 0:00", "daily" },
	{ "mon", "weekly" },
	{ "*-*-1 0:00", "monthly" },
	{ "1-1", "yearly" },
	{ "annually", "yearly" },
	{ "1,4,7,10-1", "quarterly" },
	{ "semi-annually", "semiannually" },
	{ "Daily utc", "daily UTC" },
	{ "12:00 UTC", "12:00 UTC" },
	{ "mon,tue,wed,thu,fri 12:00", "mon..fri 12:00" },
	{ "  MONDAY..Friday\t 8:0  ", "mon..fri 8:00" },
	{ "mon..fri 8..17,22:0/15", "mon..fri 8..17,22:*/15" },
	{ "sat *-1..7 15:00", "sat *-1..7 15:00" },
	{ "fri..mon 3:00", "fri..mon 3:00" },
	{ "sat,sun", "sat,sun 0:00" },
	{ "mon,wed,fri", "mon,wed,fri 0:00" },
	{ "mon,sun 1:00", "sun,mon 1:00" },
	{ "12/2:5", "12/2:05" },
	{ "fri 12..13:5/20", "fri 12,13:05/20" },
	{ "30/10", "*:30/10" },
	{ "30", "*:30" },
	{ "mon 22", "mon *:22" },
	{ "7,8:0,1,2,30", "7,8:00..02,30" },
	{ "5,35", "*:05,35" },
	{ "12,13:5,25,45", "12,13:05/20" },
	{ "5,10,15", "*:05,10,15" },
	{ "*-02-29 12:00", "2-29 12:00" },
	{ "*-05", "*-5 0:00" },
	{ "*-1,15 6:30", "*-1,15 6:30" },
	{ "*/2-*/2 0:00", "*/2-*/2 0:00" },
	{ "12:00:00", "12:00" },
};

/* When a job runs next, from its state (repl_next_run). */
static void test_next_run(void **state)
{
	struct repl_schedule sch;
	struct repl_job_state st = { .state = REPL_STATE_NEW };
	time_t now = 1790000000, next; /* 2026-09-21 14:13:20 UTC */

	(void)state;
	assert_true(repl_schedule_parse("yearly UTC", &sch, NULL));
	/* No state record yet: from now, not from 1970 (due at once). */
	assert_true(repl_next_run(&sch, &st, now, &next));
	assert_int_equal(next, 1798761600); /* 2027-01-01 00:00 UTC */
	st.created = 1700000000;            /* 2023-11-14 */
	assert_true(repl_next_run(&sch, &st, now, &next));
	assert_int_equal(next, 1704067200); /* 2024-01-01: overdue, runs now */
	st.last_try = now - 60;
	assert_true(repl_next_run(&sch, &st, now, &next));
	assert_int_equal(next, 1798761600);
	st.fail_count = 2;
	assert_true(repl_next_run(&sch, &st, now, &next));
	assert_int_equal(next, now - 60 + 600);
	st.run_now = true;
	assert_true(repl_next_run(&sch, &st, now, &next));
	assert_int_equal(next, now);
}

static void test_format(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(fmt_cases) / sizeof(fmt_cases[0]); i++) {
		const struct fmt_case *c = &fmt_cases[i];
		struct repl_schedule s, back;
		struct err *e = NULL;
		char buf[REPL_SCHEDULE_FMT_MAX], again[REPL_SCHEDULE_FMT_MAX];

		if (!repl_schedule_parse(c->text, &s, &e))
			fail_msg("'%s': %s", c->text, e->msg);
		repl_schedule_format(&s, buf, sizeof(buf));
		if (strcmp(buf, c->canonical))
			fail_msg("'%s': got '%s', want '%s'", c->text, buf, c->canonical);
		assert_true(repl_schedule_parse(buf, &back, &e));
		assert_true(repl_schedule_equal(&s, &back));
		assert_string_equal(repl_schedule_format(&back, again, sizeof(again)), buf);
	}
}

/* What the bitmaps hold, for a few schedules. */
static void test_bits(void **state)
{
	struct repl_schedule s;
	struct err *e = NULL;

	(void)state;
	assert_true(repl_schedule_parse("mon..fri 8..17,22:0/15", &s, &e));
	assert_int_equal(s.minutes, 1 | 1 << 15 | 1ULL << 30 | 1ULL << 45);
	assert_int_equal(s.hours, 0x3ff00 | 1 << 22);
	assert_int_equal(s.wdays, 0x3e); /* mon..fri; bit 0 is Sunday */
	assert_int_equal(s.mdays, 0xfffffffe);
	assert_int_equal(s.months, 0x1ffe);
	assert_false(s.utc);
	assert_true(repl_schedule_parse("sat *-1..7 15:00 UTC", &s, &e));
	assert_int_equal(s.minutes, 1);
	assert_int_equal(s.hours, 1 << 15);
	assert_int_equal(s.wdays, 1 << 6);
	assert_int_equal(s.mdays, 0xfe);
	assert_true(s.utc);
	assert_true(repl_schedule_parse("fri..mon", &s, &e));
	assert_int_equal(s.wdays, 1 << 5 | 1 << 6 | 1 << 0 | 1 << 1);
	assert_int_equal(s.hours, 1);
	assert_int_equal(s.minutes, 1);
}

struct bad_case {
	const char *text, *msg;
};

static const struct bad_case bad_cases[] = {
	{ "", "invalid schedule '': empty schedule" },
	{ " \t ", "invalid schedule ' \\x09 ': empty schedule" },
	{ "mon..fry 8:00", "invalid schedule 'mon..fry 8:00': unknown weekday 'fry' (column 6)" },
	{ "mo 8:00", "invalid schedule 'mo 8:00': unknown weekday 'mo' (column 1)" },
	{ "hourlyy", "invalid schedule 'hourlyy': unknown keyword or weekday 'hourlyy' (column 1)" },
	{ "daily 12:00",
	  "invalid schedule 'daily 12:00': keyword 'daily' must stand alone (column 1)" },
	{ "mon,,tue", "invalid schedule 'mon,,tue': empty weekday in a list (column 5)" },
	{ "$(reboot)", "invalid schedule '$(reboot)': unexpected character '$' (column 1)" },
	{ "8:00\n", "invalid schedule '8:00\\x0a': unexpected character '\\x0a' (column 5)" },
	{ "8:00'", "invalid schedule '8:00\\x27': unexpected character '\\x27' (column 5)" },
	{ "24:00", "invalid schedule '24:00': hour '24' out of range 0..23 (column 1)" },
	{ "8:60", "invalid schedule '8:60': minute '60' out of range 0..59 (column 3)" },
	{ "mon..fri 8..25:00",
	  "invalid schedule 'mon..fri 8..25:00': hour '25' out of range 0..23 (column 13)" },
	{ "*-13-1", "invalid schedule '*-13-1': month '13' out of range 1..12 (column 3)" },
	{ "*-0-1", "invalid schedule '*-0-1': month '0' out of range 1..12 (column 3)" },
	{ "*-1-32", "invalid schedule '*-1-32': day '32' out of range 1..31 (column 5)" },
	{ "*-00", "invalid schedule '*-00': day '00' out of range 1..31 (column 3)" },
	{ "17..8:00", "invalid schedule '17..8:00': range '17..8' is backwards (column 1)" },
	{ "9..3/2", "invalid schedule '9..3/2': range '9..3' is backwards (column 1)" },
	{ "*/0", "invalid schedule '*/0': repetition '0' out of range 1..59 (column 3)" },
	{ "5/60", "invalid schedule '5/60': repetition '60' out of range 1..59 (column 3)" },
	{ "*/24:00", "invalid schedule '*/24:00': repetition '24' out of range 1..23 (column 3)" },
	{ "8:0a", "invalid schedule '8:0a': invalid minute '0a' (column 3)" },
	{ "*/x", "invalid schedule '*/x': invalid minute '*/x' (column 1)" },
	{ "**", "invalid schedule '**': invalid minute '**' (column 1)" },
	{ "1..2..3", "invalid schedule '1..2..3': invalid minute '1..2..3' (column 1)" },
	{ "1,,2", "invalid schedule '1,,2': empty minute in a list (column 3)" },
	{ "1,", "invalid schedule '1,': empty minute in a list (column 3)" },
	{ ":", "invalid schedule ':': missing hour (column 1)" },
	{ "8:", "invalid schedule '8:': missing minute (column 3)" },
	{ "1:2:3:4", "invalid schedule '1:2:3:4': too many ':' in time '1:2:3:4' (column 1)" },
	{ "12:00:30", "invalid schedule '12:00:30': seconds must be 0, not '30' (column 7)" },
	{ "*:*:*", "invalid schedule '*:*:*': seconds must be 0, not '*' (column 5)" },
	{ "2015-10-21",
	  "invalid schedule '2015-10-21': unsupported year '2015' (only '*') (column 1)" },
	{ "*-1-2-3", "invalid schedule '*-1-2-3': invalid date '*-1-2-3' (column 1)" },
	{ "-5", "invalid schedule '-5': missing month (column 1)" },
	{ "*-02-30", "invalid schedule '*-02-30': date '*-02-30' never occurs (column 1)" },
	{ "mon *-4,6,9,11-31",
	  "invalid schedule 'mon *-4,6,9,11-31': date '*-4,6,9,11-31' never occurs (column 5)" },
	{ "8:00 mon",
	  "invalid schedule '8:00 mon': unexpected 'mon': weekdays come first, as one list "
	  "(column 6)" },
	{ "8:00 *-1",
	  "invalid schedule '8:00 *-1': unexpected '*-1': the date comes before the time "
	  "(column 6)" },
	{ "8:00 9:00",
	  "invalid schedule '8:00 9:00': unexpected '9:00': only one time (join lists with ',') "
	  "(column 6)" },
	{ "UTC", "invalid schedule 'UTC': no date or time before 'UTC' (column 1)" },
	{ "8:00 UTC UTC",
	  "invalid schedule '8:00 UTC UTC': unexpected 'UTC': weekdays come first, as one list "
	  "(column 6)" },
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct repl_schedule s, orig;
		struct err *e = NULL;

		memset(&s, 0xab, sizeof(s));
		orig = s;
		if (repl_schedule_parse(bad_cases[i].text, &s, &e))
			fail_msg("'%s' was accepted", bad_cases[i].text);
		assert_non_null(e);
		assert_int_equal(e->code, ERR_INVAL);
		if (strcmp(e->msg, bad_cases[i].msg))
			fail_msg("got '%s', want '%s'", e->msg, bad_cases[i].msg);
		assert_memory_equal(&s, &orig, sizeof(s)); /* out untouched */
		err_free(e);
	}
}

/* Long text is cut in the message, which stays one line. */
static void test_bad_long(void **state)
{
	char text[400], want[400];
	struct repl_schedule s;
	struct err *e = NULL;

	(void)state;
	memset(text, 'x', 300);
	text[300] = '\0';
	assert_false(repl_schedule_parse(text, &s, &e));
	snprintf(want, sizeof(want),
		 "invalid schedule '%.128s...': unknown keyword or weekday '%.128s...' (column 1)",
		 text, text);
	assert_string_equal(e->msg, want);
	err_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_next_utc),
		cmocka_unit_test(test_next_local),
		cmocka_unit_test(test_next_tzdata),
		cmocka_unit_test(test_dst_nights),
		cmocka_unit_test(test_next_out_of_range),
		cmocka_unit_test(test_next_run),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_bits),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_bad_long),
	};
	return cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
}
