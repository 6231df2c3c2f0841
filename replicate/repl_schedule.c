/*
 * repl_schedule.c - replication schedules: pvesr's calendar events read
 * into bitmaps, and the next event found by walking civil days. Grammar,
 * meaning and contract in repl_schedule.h.
 *
 * Local time is handled without mktime's tm_isdst guesswork: a wall-clock
 * time W (seconds counted as if it were UTC) happens at W - off for each
 * UTC offset `off` in force around that day; a candidate counts if
 * localtime_r reads W back, and the earliest such instant is the event.
 * No candidate means W falls in a spring-forward gap; two mean the
 * fall-back overlap, where the earlier one fires and the later does not.
 */
#include "repl_schedule.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ALL_MINUTES ((UINT64_C(1) << 60) - 1)
#define ALL_HOURS ((UINT32_C(1) << 24) - 1)
#define ALL_MDAYS UINT32_C(0xfffffffe) /* 1..31 */
#define ALL_MONTHS 0x1ffe               /* 1..12 */
#define ALL_WDAYS 0x7f
#define BIT(n) (UINT64_C(1) << (n))

#define QUOTE_MAX 128           /* bytes of text quoted in an error */
#define SEARCH_DAYS (146097 + 1) /* 400 years (one Gregorian cycle) and a day */
#define MAX_TOKENS 5            /* weekdays, date, time, UTC and one too many */

struct field {
	const char *name;
	unsigned lo, hi;
};

static const struct field F_MINUTE = { "minute", 0, 59 }, F_HOUR = { "hour", 0, 23 },
			  F_DAY = { "day", 1, 31 }, F_MONTH = { "month", 1, 12 },
			  F_SECOND = { "second", 0, 59 };

static const char *const wday_names[7][2] = {
	{ "sun", "sunday" },   { "mon", "monday" }, { "tue", "tuesday" }, { "wed", "wednesday" },
	{ "thu", "thursday" }, { "fri", "friday" }, { "sat", "saturday" },
};

/* Aliases after the name repl_schedule_format prints. */
static const struct keyword {
	const char *name;
	struct repl_schedule s;
} keywords[] = {
	{ "minutely", { ALL_MINUTES, ALL_HOURS, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false } },
	{ "hourly", { 1, ALL_HOURS, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false } },
	{ "daily", { 1, 1, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false } },
	{ "weekly", { 1, 1, ALL_MDAYS, ALL_MONTHS, BIT(1), false } },
	{ "monthly", { 1, 1, BIT(1), ALL_MONTHS, ALL_WDAYS, false } },
	{ "yearly", { 1, 1, BIT(1), BIT(1), ALL_WDAYS, false } },
	{ "annually", { 1, 1, BIT(1), BIT(1), ALL_WDAYS, false } },
	{ "quarterly", { 1, 1, BIT(1), BIT(1) | BIT(4) | BIT(7) | BIT(10), ALL_WDAYS, false } },
	{ "semiannually", { 1, 1, BIT(1), BIT(1) | BIT(7), ALL_WDAYS, false } },
	{ "semi-annually", { 1, 1, BIT(1), BIT(1) | BIT(7), ALL_WDAYS, false } },
};

/* Longest month of each number (February in leap years). */
static const unsigned char month_days_max[13] = { 0,  31, 29, 31, 30, 31, 30,
						   31, 31, 30, 31, 30, 31 };

/* ---- civil calendar ---------------------------------------------------- */

static bool is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned month_days(int64_t y, unsigned m)
{
	return m == 2 && !is_leap(y) ? 28 : month_days_max[m];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* The wall-clock time in tm, in seconds counted as if it were UTC. */
static int64_t tm_wall(const struct tm *tm)
{
	return days_from_civil(tm->tm_year + 1900LL, (unsigned)tm->tm_mon + 1,
			       (unsigned)tm->tm_mday) * 86400 +
	       tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
}

/* ---- parsing --------------------------------------------------------- */

struct parser {
	const char *text;
	struct err **errp;
};

struct quoted {
	char text[QUOTE_MAX * 4 + 4];
};

/* s[0..len) for an error message: bytes other than printable ASCII, and
 * the quote, as \xNN; "..." after QUOTE_MAX bytes. */
static struct quoted quote(const char *s, size_t len)
{
	struct quoted q;
	size_t o = 0, i;

	for (i = 0; i < len && i < QUOTE_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\'')
			q.text[o++] = (char)c;
		else
			o += (size_t)snprintf(q.text + o, sizeof(q.text) - o, "\\x%02x", c);
	}
	if (i < len) {
		memcpy(q.text + o, "...", 3);
		o += 3;
	}
	q.text[o] = '\0';
	return q;
}

#define Q(s, len) (quote((s), (len)).text)

/* Sets the error, naming the column of `at` (a pointer into the text). */
__attribute__((format(printf, 3, 4)))
static bool fail(const struct parser *p, const char *at, const char *fmt, ...)
{
	char msg[QUOTE_MAX * 8];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at)
		return err_set(p->errp, ERR_INVAL, "invalid schedule '%s': %s (column %zu)",
			       Q(p->text, strlen(p->text)), msg, (size_t)(at - p->text) + 1);
	return err_set(p->errp, ERR_INVAL, "invalid schedule '%s': %s",
		       Q(p->text, strlen(p->text)), msg);
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool word_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && !strncasecmp(s, word, len);
}

/* Bits lo, lo+step ... up to hi. */
static uint64_t steps(unsigned lo, unsigned hi, unsigned step)
{
	uint64_t bits = 0;

	for (unsigned v = lo; v <= hi; v += step)
		bits |= BIT(v);
	return bits;
}

/* Reads digits at s[*i..len) into *v (saturating); false if there are none. */
static bool read_num(const char *s, size_t len, size_t *i, unsigned *v)
{
	size_t start = *i;

	*v = 0;
	for (; *i < len && is_digit(s[*i]); (*i)++)
		*v = *v > 100000 ? *v : *v * 10 + (unsigned)(s[*i] - '0');
	return *i > start;
}

static bool check_value(const struct parser *p, const struct field *f, const char *num,
			size_t len, unsigned v)
{
	if (v < f->lo || v > f->hi)
		return fail(p, num, "%s '%s' out of range %u..%u", f->name, Q(num, len), f->lo,
			    f->hi);
	return true;
}

static bool check_step(const struct parser *p, const struct field *f, const char *num,
		       size_t len, unsigned step)
{
	if (step < 1 || step > f->hi)
		return fail(p, num, "repetition '%s' out of range 1..%u", Q(num, len), f->hi);
	return true;
}

/* item = n | n..m | n/step | n..m/step */
static bool parse_item(const struct parser *p, const struct field *f, const char *s, size_t len,
		       uint64_t *bits)
{
	size_t i = 0, a_len, b_at = 0, b_len = 0, step_at = 0;
	unsigned a, b, step = 1;
	bool ranged = false, stepped = false;

	if (!len)
		return fail(p, s, "empty %s in a list", f->name);
	if (!read_num(s, len, &i, &a))
		return fail(p, s, "invalid %s '%s'", f->name, Q(s, len));
	a_len = i;
	b = a;
	if (i + 1 < len && s[i] == '.' && s[i + 1] == '.') {
		b_at = i += 2;
		if (!read_num(s, len, &i, &b))
			return fail(p, s, "invalid %s '%s'", f->name, Q(s, len));
		b_len = i - b_at;
		ranged = true;
	}
	if (i < len && s[i] == '/') {
		step_at = ++i;
		if (!read_num(s, len, &i, &step))
			return fail(p, s, "invalid %s '%s'", f->name, Q(s, len));
		stepped = true;
	}
	if (i != len)
		return fail(p, s, "invalid %s '%s'", f->name, Q(s, len));
	if (!check_value(p, f, s, a_len, a))
		return false;
	if (ranged && !check_value(p, f, s + b_at, b_len, b))
		return false;
	if (a > b)
		return fail(p, s, "range '%s' is backwards", Q(s, step_at ? step_at - 1 : len));
	if (stepped && !check_step(p, f, s + step_at, len - step_at, step))
		return false;
	if (stepped && !ranged)
		b = f->hi;
	*bits |= steps(a, b, step);
	return true;
}

/* field = "*" | "*" "/" step | item *("," item) */
static bool parse_field(const struct parser *p, const struct field *f, const char *s, size_t len,
			uint64_t *out)
{
	uint64_t bits = 0;

	if (!len)
		return fail(p, s, "missing %s", f->name);
	if (s[0] == '*') {
		size_t i = 2;
		unsigned step;

		if (len == 1) {
			*out = steps(f->lo, f->hi, 1);
			return true;
		}
		if (s[1] != '/' || !read_num(s, len, &i, &step) || i != len)
			return fail(p, s, "invalid %s '%s'", f->name, Q(s, len));
		if (!check_step(p, f, s + 2, len - 2, step))
			return false;
		*out = steps(f->lo, f->hi, step);
		return true;
	}
	for (size_t i = 0; i <= len;) {
		size_t e = i;

		while (e < len && s[e] != ',')
			e++;
		if (!parse_item(p, f, s + i, e - i, &bits))
			return false;
		i = e + 1;
	}
	*out = bits;
	return true;
}

static int wday_lookup(const char *s, size_t len)
{
	for (int d = 0; d < 7; d++)
		if (word_is(s, len, wday_names[d][0]) || word_is(s, len, wday_names[d][1]))
			return d;
	return -1;
}

static const struct keyword *keyword_lookup(const char *s, size_t len)
{
	for (size_t k = 0; k < sizeof(keywords) / sizeof(keywords[0]); k++)
		if (word_is(s, len, keywords[k].name))
			return &keywords[k];
	return NULL;
}

static bool bad_wday(const struct parser *p, const char *s, size_t len, bool alone)
{
	if (keyword_lookup(s, len))
		return fail(p, s, "keyword '%s' must stand alone", Q(s, len));
	if (alone)
		return fail(p, s, "unknown keyword or weekday '%s'", Q(s, len));
	return fail(p, s, "unknown weekday '%s'", Q(s, len));
}

/* weekdays = wday[..wday] *("," wday[..wday]); `alone`: the only token. */
static bool parse_wdays(const struct parser *p, const char *s, size_t len, bool alone,
			uint8_t *out)
{
	uint8_t bits = 0;

	for (size_t i = 0; i <= len;) {
		size_t e = i, dots;
		int a, b;

		while (e < len && s[e] != ',')
			e++;
		if (e == i)
			return fail(p, s + i, "empty weekday in a list");
		for (dots = i; dots + 1 < e && !(s[dots] == '.' && s[dots + 1] == '.'); dots++)
			;
		if (dots + 1 >= e)
			dots = e;
		a = wday_lookup(s + i, dots - i);
		if (a < 0)
			return bad_wday(p, s + i, dots - i, alone && i == 0 && dots == len);
		b = a;
		if (dots < e) {
			b = wday_lookup(s + dots + 2, e - dots - 2);
			if (b < 0)
				return bad_wday(p, s + dots + 2, e - dots - 2, false);
		}
		for (int d = a;; d = (d + 1) % 7) { /* fri..mon wraps */
			bits |= (uint8_t)BIT(d);
			if (d == b)
				break;
		}
		i = e + 1;
	}
	*out = bits;
	return true;
}

/* Splits s[0..len) at `sep` into at most `max` parts; returns the count,
 * or max + 1 if there are more. */
static size_t split(const char *s, size_t len, char sep, const char **part, size_t *plen,
		    size_t max)
{
	size_t n = 0, i = 0;

	for (;;) {
		size_t e = i;

		while (e < len && s[e] != sep)
			e++;
		if (n == max)
			return max + 1;
		part[n] = s + i;
		plen[n++] = e - i;
		if (e == len)
			return n;
		i = e + 1;
	}
}

/* time = [hours ":"] minutes [":" seconds] */
static bool parse_time(const struct parser *p, const char *s, size_t len,
		       struct repl_schedule *out)
{
	const char *part[3];
	size_t plen[3], n = split(s, len, ':', part, plen, 3);
	uint64_t hours = ALL_HOURS, minutes, seconds;

	if (n > 3)
		return fail(p, s, "too many ':' in time '%s'", Q(s, len));
	if (n >= 2 && !parse_field(p, &F_HOUR, part[0], plen[0], &hours))
		return false;
	if (!parse_field(p, &F_MINUTE, part[n >= 2], plen[n >= 2], &minutes))
		return false;
	if (n == 3) {
		if (!parse_field(p, &F_SECOND, part[2], plen[2], &seconds))
			return false;
		if (seconds != 1)
			return fail(p, part[2], "seconds must be 0, not '%s'", Q(part[2], plen[2]));
	}
	out->hours = (uint32_t)hours;
	out->minutes = minutes;
	return true;
}

/* date = ["*-"] months "-" days; refuses dates that never occur. */
static bool parse_date(const struct parser *p, const char *s, size_t len,
		       struct repl_schedule *out)
{
	const char *part[3];
	size_t plen[3], n = split(s, len, '-', part, plen, 3), k = 0;
	uint64_t months, mdays;
	bool exists = false;

	if (n > 3)
		return fail(p, s, "invalid date '%s'", Q(s, len));
	if (n == 3) {
		if (plen[0] != 1 || part[0][0] != '*')
			return fail(p, s, "unsupported year '%s' (only '*')", Q(part[0], plen[0]));
		k = 1;
	}
	if (!parse_field(p, &F_MONTH, part[k], plen[k], &months) ||
	    !parse_field(p, &F_DAY, part[k + 1], plen[k + 1], &mdays))
		return false;
	for (unsigned m = 1; m <= 12; m++)
		if ((months & BIT(m)) && (mdays & steps(1, month_days_max[m], 1)))
			exists = true;
	if (!exists)
		return fail(p, s, "date '%s' never occurs", Q(s, len));
	out->months = (uint16_t)months;
	out->mdays = (uint32_t)mdays;
	return true;
}

bool repl_schedule_parse(const char *text, struct repl_schedule *out, struct err **errp)
{
	struct parser p = { text, errp };
	/* What a part left out means: every day, at 0:00. */
	struct repl_schedule s = { 1, 1, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false };
	const char *tok[MAX_TOKENS];
	size_t tlen[MAX_TOKENS], n = 0, k = 0;
	const struct keyword *kw;

	for (const char *c = text; *c; c++)
		if (!is_alpha(*c) && !is_digit(*c) && !is_blank(*c) && !strchr("*/:.,-", *c))
			return fail(&p, c, "unexpected character '%s'", Q(c, 1));
	for (const char *c = text; *c;) {
		size_t l;

		while (is_blank(*c))
			c++;
		if (!*c)
			break;
		for (l = 0; c[l] && !is_blank(c[l]); l++)
			;
		if (n == MAX_TOKENS)
			break; /* the tokens kept already hold the error */
		tok[n] = c;
		tlen[n++] = l;
		c += l;
	}
	if (!n)
		return fail(&p, NULL, "empty schedule");
	if (n < MAX_TOKENS && word_is(tok[n - 1], tlen[n - 1], "UTC")) {
		s.utc = true;
		if (!--n)
			return fail(&p, tok[0], "no date or time before 'UTC'");
	}
	if (n == 1 && (kw = keyword_lookup(tok[0], tlen[0]))) {
		bool utc = s.utc;

		s = kw->s;
		s.utc = utc;
		*out = s;
		return true;
	}
	if (k < n && is_alpha(tok[k][0])) {
		if (!parse_wdays(&p, tok[k], tlen[k], n == 1, &s.wdays))
			return false;
		k++;
	}
	if (k < n && memchr(tok[k], '-', tlen[k])) {
		if (!parse_date(&p, tok[k], tlen[k], &s))
			return false;
		k++;
	}
	if (k < n && !is_alpha(tok[k][0]) && !memchr(tok[k], '-', tlen[k])) {
		if (!parse_time(&p, tok[k], tlen[k], &s))
			return false;
		k++;
	}
	if (k < n) {
		const char *why = is_alpha(tok[k][0]) ? "weekdays come first, as one list" :
				  memchr(tok[k], '-', tlen[k]) ? "the date comes before the time" :
								 "only one time (join lists with ',')";
		return fail(&p, tok[k], "unexpected '%s': %s", Q(tok[k], tlen[k]), why);
	}
	*out = s;
	return true;
}

/* ---- next event --------------------------------------------------------- */

/* The UTC offsets in force around one civil day, each once. */
struct offsets {
	int64_t off[5];
	int n;
};

static bool day_offsets(int64_t day, struct offsets *o)
{
	/* Before, in and after the day, wider than any offset (|off| < 26 h). */
	static const int64_t probe[] = { -86400, 0, 43200, 86400, 2 * 86400 };

	o->n = 0;
	for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
		int64_t t64 = day * 86400 + probe[i], off;
		time_t t = (time_t)t64;
		struct tm tm;
		int j;

		if (t != t64 || !localtime_r(&t, &tm))
			return false;
		off = tm_wall(&tm) - t64;
		for (j = 0; j < o->n && o->off[j] != off; j++)
			;
		if (j == o->n)
			o->off[o->n++] = off;
	}
	return true;
}

/* The earliest instant whose local wall-clock time is `wall`; false if
 * there is none (a spring-forward gap). */
static bool resolve_local(const struct offsets *o, int64_t wall, time_t *out)
{
	bool found = false;

	for (int i = 0; i < o->n; i++) {
		int64_t t64 = wall - o->off[i];
		time_t t = (time_t)t64;
		struct tm tm;

		if (t != t64 || !localtime_r(&t, &tm) || tm_wall(&tm) != wall)
			continue;
		if (!found || t < *out)
			*out = t;
		found = true;
	}
	return found;
}

static bool day_matches(const struct repl_schedule *s, unsigned mon, unsigned mday,
			unsigned wday)
{
	return (s->months & BIT(mon)) && (s->mdays & BIT(mday)) && (s->wdays & BIT(wday));
}

bool repl_schedule_next(const struct repl_schedule *s, time_t after, bool utc, time_t *next)
{
	struct tm tm;
	int64_t year, day;
	unsigned mon, mday, wday, h0, m0;

	utc = utc || s->utc;
	if (!(utc ? gmtime_r(&after, &tm) : localtime_r(&after, &tm)))
		return false;
	if (tm.tm_year > INT_MAX - 1900 - 402)
		return false; /* years past the search could not be represented */
	year = tm.tm_year + 1900LL;
	mon = (unsigned)tm.tm_mon + 1;
	mday = (unsigned)tm.tm_mday;
	wday = (unsigned)tm.tm_wday;
	day = days_from_civil(year, mon, mday);
	/* Wall times before after's own minute fire no later than `after`:
	 * the earliest instant of a wall time grows with it. */
	h0 = (unsigned)tm.tm_hour;
	m0 = (unsigned)tm.tm_min;
	for (int64_t i = 0; i < SEARCH_DAYS; i++) {
		struct offsets off = { { 0 }, 0 };

		if (day_matches(s, mon, mday, wday)) {
			if (!utc && !day_offsets(day, &off))
				return false;
			for (unsigned h = h0; h < 24; h++) {
				if (!(s->hours & BIT(h)))
					continue;
				for (unsigned m = h == h0 ? m0 : 0; m < 60; m++) {
					int64_t wall = day * 86400 + h * 3600 + m * 60;
					time_t t = (time_t)wall;

					if (!(s->minutes & BIT(m)))
						continue;
					if (utc ? (int64_t)t != wall : !resolve_local(&off, wall, &t))
						continue;
					if (t > after) {
						*next = t;
						return true;
					}
				}
			}
		}
		h0 = m0 = 0;
		day++;
		wday = (wday + 1) % 7;
		if (++mday > month_days(year, mon)) {
			mday = 1;
			if (++mon > 12) {
				mon = 1;
				year++;
			}
		}
	}
	return false;
}

bool repl_schedule_equal(const struct repl_schedule *a, const struct repl_schedule *b)
{
	return a->minutes == b->minutes && a->hours == b->hours && a->mdays == b->mdays &&
	       a->months == b->months && a->wdays == b->wdays && a->utc == b->utc;
}

/* ---- canonical text ---------------------------------------------------- */

struct out {
	char *buf;
	size_t size, len;
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->len + 1 >= o->size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len = o->len + (size_t)n < o->size ? o->len + (size_t)n : o->size - 1;
}

/* A field's values folded: "*", *\/step or "n/step" for a progression
 * to the end (three values at least, or two from the start), else items
 * "a..b" (three or more in a row) and single values. */
static void put_list(struct out *o, uint64_t bits, unsigned lo, unsigned hi, bool pad)
{
	const char *num = pad ? "%02u" : "%u";
	unsigned first = lo, second, count = 0;
	bool comma = false;

	bits &= steps(lo, hi, 1);
	if (!bits)
		return; /* not from repl_schedule_parse */
	if (bits == steps(lo, hi, 1)) {
		put(o, "*");
		return;
	}
	while (!(bits & BIT(first)))
		first++;
	for (unsigned v = lo; v <= hi; v++)
		count += !!(bits & BIT(v));
	for (second = first + 1; count >= 2 && !(bits & BIT(second)); second++)
		;
	if (count >= 2 && second - first >= 2 && (count >= 3 || first == lo) &&
	    bits == steps(first, hi, second - first)) {
		if (first == lo)
			put(o, "*");
		else
			put(o, num, first);
		put(o, "/%u", second - first);
		return;
	}
	for (unsigned v = lo; v <= hi; v++) {
		unsigned e = v;

		if (!(bits & BIT(v)))
			continue;
		while (e < hi && (bits & BIT(e + 1)))
			e++;
		if (e - v >= 2) {
			put(o, comma ? "," : "");
			put(o, num, v);
			put(o, "..");
			put(o, num, e);
			v = e;
		} else {
			put(o, comma ? "," : "");
			put(o, num, v);
		}
		comma = true;
	}
}

/* Weekdays Monday first, folded into runs; a run may wrap past Sunday
 * ("fri..mon"). Index k counts from Monday: its tm_wday is (k + 1) % 7. */
static void put_wdays(struct out *o, uint8_t bits)
{
#define WD(k) (((k) % 7 + 1) % 7)
	int start = 0;
	bool comma = false;

	for (int k = 0; k < 7; k++) /* start after the last day left out */
		if (!(bits & BIT(WD(k))))
			start = k + 1;
	for (int i = 0; i < 7;) {
		int len = 0;

		while (i + len < 7 && (bits & BIT(WD(start + i + len))))
			len++;
		if (!len) {
			i++;
			continue;
		}
		put(o, "%s%s", comma ? "," : "", wday_names[WD(start + i)][0]);
		if (len >= 2)
			put(o, "%s%s", len >= 3 ? ".." : ",", wday_names[WD(start + i + len - 1)][0]);
		comma = true;
		i += len;
	}
#undef WD
}

/* Minutes that print alone, every hour: "*" or *\/step. */
static bool minutes_alone(uint64_t m)
{
	return m == ALL_MINUTES || ((m & 1) && m != 1 &&
				    m == steps(0, 59, (unsigned)__builtin_ctzll(m & ~UINT64_C(1))));
}

const char *repl_schedule_format(const struct repl_schedule *s, char *buf, size_t size)
{
	struct out o = { buf, size, 0 };
	struct repl_schedule plain = *s;
	bool part = false;

	if (size)
		buf[0] = '\0';
	plain.utc = false;
	for (size_t k = 1; k < sizeof(keywords) / sizeof(keywords[0]); k++) /* not minutely: "*" */
		if (repl_schedule_equal(&plain, &keywords[k].s)) {
			put(&o, "%s%s", keywords[k].name, s->utc ? " UTC" : "");
			return buf;
		}
	if (s->wdays != ALL_WDAYS) {
		put_wdays(&o, s->wdays);
		part = true;
	}
	if (s->months != ALL_MONTHS || s->mdays != ALL_MDAYS) {
		put(&o, part ? " " : "");
		put_list(&o, s->months, 1, 12, false);
		put(&o, "-");
		put_list(&o, s->mdays, 1, 31, false);
		part = true;
	}
	put(&o, part ? " " : "");
	if (s->hours == ALL_HOURS && minutes_alone(s->minutes)) {
		put_list(&o, s->minutes, 0, 59, false);
	} else {
		put_list(&o, s->hours, 0, 23, false);
		put(&o, ":");
		put_list(&o, s->minutes, 0, 59, true);
	}
	put(&o, "%s", s->utc ? " UTC" : "");
	return buf;
}
