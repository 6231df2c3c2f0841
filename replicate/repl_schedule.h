/*
 * repl_schedule.h - when replication jobs run: the calendar-event subset
 * that Proxmox VE's pvesr accepts (its "Schedule Format", itself a subset
 * of systemd.time calendar events), parsed into bitmaps.
 *
 * Accepted text, parts separated by blanks and in this order:
 *
 *   schedule = keyword [UTC] | [weekdays] [date] [time] [UTC]   (one part at least)
 *   weekdays = wdrange *("," wdrange)      mon..fri   sat,sun   fri..mon
 *   wdrange  = wday [".." wday]            a range may wrap: fri..mon = fri,sat,sun,mon
 *   wday     = mon tue wed thu fri sat sun, or monday ... sunday, in any case
 *   date     = ["*-"] months "-" days       *-1..7   1,4,7,10-1   *-*-1
 *   time     = [hours ":"] minutes [":" seconds]
 *   field    = "*" | "*\/" step | item *("," item)
 *   item     = n | n ".." m | n "/" step | n ".." m "/" step
 *   UTC      = the word "UTC" (any case) at the end
 *
 * Fields take minutes 0..59, hours 0..23, days of the month 1..31 and
 * months 1..12 (decimal, leading zeros allowed); a step is 1 up to the
 * field's largest value.
 *   n/step      is n, n+step, n+2*step ... up to the field's largest value;
 *   n..m/step   the same, up to m;  *\/step starts at the smallest
 *               value: *\/15 = 0/15 = minutes 0,15,30,45.
 *   n..m        needs n <= m (only weekday ranges wrap).
 *
 * Meaning:
 *  - Every part left out matches everything, except the time, which is
 *    0:00: "mon..fri" is 0:00 on working days, "*-1" 0:00 on the 1st.
 *  - A time without ':' is minutes of every hour: *\/15 runs at :00, :15,
 *    :30 and :45 of every hour; "*" every minute; "30" at hh:30. So
 *    "mon..fri 22" is minute 22 of every hour on working days, not 22:00
 *    (Proxmox's prose says 22:00; its parser, which this follows, does not).
 *  - "mon..fri 8..17,22:0/15": working days, every 15 minutes from 8:00 to
 *    17:45 and from 22:00 to 22:45. "12:30" is 12:30 every day.
 *  - Weekdays and date must both match: "sat *-1..7 15:00" is the first
 *    Saturday of each month at 15:00 (systemd's rule).
 *  - Seconds may be written, but only as 0 ("12:00:00"): events fire at
 *    second 0 of a minute, at most once a minute.
 *  - Years: only "*" ("*-*-1"); "2025-10-21" is refused.
 *  - A date that never occurs is refused ("*-02-30", "*-4,6,9,11-31");
 *    "*-02-29" is kept and fires in leap years only (2024, 2000; not 2100).
 *  - Keywords, alone (with an optional UTC):
 *      minutely = "*"                 hourly    = "*:00"
 *      daily    = "0:00"              weekly    = "mon 0:00"
 *      monthly  = "*-1 0:00"          yearly, annually = "1-1 0:00"
 *      quarterly = "1,4,7,10-1 0:00"  semiannually, semi-annually = "1,7-1 0:00"
 *  - A trailing "UTC" computes the schedule in UTC whatever the caller asks.
 */
#ifndef VMM_REPL_SCHEDULE_H
#define VMM_REPL_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../common/err.h"

/* Bit n set = value n matches. Compare with repl_schedule_equal(), not
 * memcmp (padding). */
struct repl_schedule {
	uint64_t minutes; /* bits 0..59 */
	uint32_t hours;   /* bits 0..23 */
	uint32_t mdays;   /* bits 1..31, day of the month */
	uint16_t months;  /* bits 1..12 */
	uint8_t wdays;    /* bits 0..6, 0 = Sunday (struct tm's tm_wday) */
	bool utc;         /* the text ended in "UTC" */
};

/* Parses `text`. On failure sets *errp (ERR_INVAL) to one line naming the
 * bad piece and its 1-based column, e.g.
 *   invalid schedule 'mon..fry 8:00': unknown weekday 'fry' (column 6)
 * and leaves *out untouched. */
bool repl_schedule_parse(const char *text, struct repl_schedule *out, struct err **errp);

/* The first event strictly after `after`, in the local time zone (TZ, as
 * localtime_r sees it) or in UTC if `utc` or s->utc is true.
 * Local time: a wall-clock time that does not exist (spring forward) is
 * skipped; one that happens twice (fall back) fires once, at its first
 * occurrence; e.g. *\/15 in Europe/Berlin on the night of 27 Oct 2024
 * fires at 02:45 CEST and next at 03:00 CET, an hour and a quarter later.
 * The search covers 400 years and a day (one Gregorian cycle), so it finds
 * every event of a schedule that parsed, with a handful of localtime_r
 * calls per matching day. Returns false only if there is none in that
 * span (the year of `after` is out of range, or local time fails). */
bool repl_schedule_next(const struct repl_schedule *s, time_t after, bool utc, time_t *next);

/* True if both describe the same events (and the same UTC flag). */
bool repl_schedule_equal(const struct repl_schedule *a, const struct repl_schedule *b);

/* Canonical text, for listings: parses back to an equal schedule.
 * A keyword when one fits ("daily"), else the parts with lists folded into
 * ranges and steps: "mon,tue,wed,thu,fri 12:0" -> "mon..fri 12:00",
 * "0,15,30,45" -> *\/15, "sat *-1..7 15:00" unchanged. A buffer of
 * REPL_SCHEDULE_FMT_MAX bytes always suffices (else the text is cut).
 * Returns buf. */
#define REPL_SCHEDULE_FMT_MAX 384
const char *repl_schedule_format(const struct repl_schedule *s, char *buf, size_t size);

#endif
