/* progress.c - see progress.h. */
#include "progress.h"
#include "../common/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void cli_progress_init(struct cli_progress *p, enum cli_out out)
{
	p->out = out;
	p->tty = out == CLI_OUT_TEXT && isatty(STDOUT_FILENO);
	p->last_plain_ms = 0;
	p->line_open = false;
}

void cli_progress_break(struct cli_progress *p)
{
	if (p->line_open) {
		fputc('\n', stdout);
		p->line_open = false;
	}
	fflush(stdout);
}

void cli_progress_ram(struct cli_progress *p, const char *phase,
		      const struct mig_raw_progress *rp)
{
	char done_s[32], total_s[32], rate_s[32], dirty_s[32], eta[32], stamp[16], extra[64];
	uint64_t total = rp->total, remaining = rp->remaining;
	uint64_t rate_bps = rp->mbps_x100 * 1000000 / 800; /* Mbit/s * 100 -> bytes/s */
	uint64_t done = total > remaining ? total - remaining : 0;
	unsigned pct = total ? (unsigned)(done * 100 / total) : 0;
	time_t now;

	if (p->out == CLI_OUT_JSON) {
		printf("{\"event\":\"progress\",\"phase\":\"%s\",\"total\":%" PRIu64
		       ",\"remaining\":%" PRIu64 ",\"transferred\":%" PRIu64 ",\"rate_bps\":%" PRIu64
		       ",\"dirty_rate_bps\":%" PRIu64 ",\"passes\":%" PRIu64
		       ",\"throttle_pct\":%" PRIu64 ",\"downtime_limit_ms\":%" PRIu64
		       ",\"elapsed_ms\":%" PRId64 "}\n",
		       phase, total, remaining, rp->transferred, rate_bps, rp->dirty_rate, rp->passes,
		       rp->throttle_pct, rp->downtime_limit_ms, rp->elapsed_ms);
		fflush(stdout);
		return;
	}
	util_fmt_bytes(done, done_s, sizeof(done_s));
	util_fmt_bytes(total, total_s, sizeof(total_s));
	util_fmt_bytes(rate_bps, rate_s, sizeof(rate_s));
	util_fmt_bytes(rp->dirty_rate, dirty_s, sizeof(dirty_s));
	if (rate_bps && remaining)
		snprintf(eta, sizeof(eta), "%.1fs", (double)remaining / (double)rate_bps);
	else
		snprintf(eta, sizeof(eta), "-");
	extra[0] = '\0';
	if (rp->throttle_pct)
		snprintf(extra, sizeof(extra), "  throttle %" PRIu64 "%%", rp->throttle_pct);
	if (p->tty) {
		printf("\r\033[K%-10s %3u%%  %s / %s  %s/s  dirty %s/s  pass %" PRIu64
		       "  ETA %s%s", phase, pct, done_s, total_s, rate_s, dirty_s, rp->passes, eta,
		       extra);
		p->line_open = true;
		fflush(stdout);
		return;
	}
	/* Plain output (logs, pipes): at most one line a second. */
	if (util_now_ms() - p->last_plain_ms < 1000 && p->last_plain_ms)
		return;
	p->last_plain_ms = util_now_ms();
	now = time(NULL);
	strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
	printf("%s %s %u%% %s/%s rate %s/s dirty %s/s pass %" PRIu64 " ETA %s%s\n", stamp,
	       phase, pct, done_s, total_s, rate_s, dirty_s, rp->passes, eta, extra);
	fflush(stdout);
}

void cli_progress_disk(struct cli_progress *p, const char *phase, uint64_t total,
		       uint64_t covered, uint64_t wire, uint64_t rate_bps, int64_t elapsed_ms,
		       const struct mig_disk_progress *disks, unsigned ndisks)
{
	char done_s[32], total_s[32], wire_s[32], rate_s[32], eta[32], stamp[16], extra[64];
	unsigned pct = total ? (unsigned)(covered * 100 / total) : 0, ready = 0;
	time_t now;

	for (unsigned i = 0; i < ndisks; i++)
		ready += disks[i].ready;
	if (p->out == CLI_OUT_JSON) {
		printf("{\"event\":\"progress\",\"phase\":\"%s\",\"disk_total\":%" PRIu64
		       ",\"disk_done\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 ",\"rate_bps\":%" PRIu64
		       ",\"elapsed_ms\":%" PRId64, phase, total, covered, wire, rate_bps, elapsed_ms);
		if (ndisks) {
			printf(",\"disks\":[");
			for (unsigned i = 0; i < ndisks; i++)
				printf("%s{\"done\":%" PRIu64 ",\"total\":%" PRIu64 ",\"ready\":%s}",
				       i ? "," : "", disks[i].done, disks[i].total,
				       disks[i].ready ? "true" : "false");
			printf("]");
		}
		printf("}\n");
		fflush(stdout);
		return;
	}
	util_fmt_bytes(covered, done_s, sizeof(done_s));
	util_fmt_bytes(total, total_s, sizeof(total_s));
	util_fmt_bytes(wire, wire_s, sizeof(wire_s));
	util_fmt_bytes(rate_bps, rate_s, sizeof(rate_s));
	if (rate_bps && total > covered)
		snprintf(eta, sizeof(eta), "%.1fs", (double)(total - covered) / (double)rate_bps);
	else
		snprintf(eta, sizeof(eta), "-");
	if (ndisks)
		snprintf(extra, sizeof(extra), "  %u/%u disk(s) in sync", ready, ndisks);
	else
		snprintf(extra, sizeof(extra), "  wire %s", wire_s);
	if (p->tty) {
		printf("\r\033[K%-10s %3u%%  disks %s / %s  %s/s  ETA %s%s", phase, pct, done_s,
		       total_s, rate_s, eta, extra);
		p->line_open = true;
		fflush(stdout);
		return;
	}
	if (util_now_ms() - p->last_plain_ms < 1000 && p->last_plain_ms)
		return;
	p->last_plain_ms = util_now_ms();
	now = time(NULL);
	strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
	printf("%s %s %u%% disks %s/%s rate %s/s ETA %s%s\n", stamp, phase, pct, done_s, total_s,
	       rate_s, eta, extra);
	fflush(stdout);
}

void cli_progress_phase(struct cli_progress *p, const char *phase)
{
	char stamp[16];
	time_t now;

	if (p->out == CLI_OUT_JSON) {
		printf("{\"event\":\"phase\",\"phase\":\"%s\"}\n", phase);
		fflush(stdout);
		return;
	}
	if (p->tty)
		return; /* the redrawn line shows the phase */
	now = time(NULL);
	strftime(stamp, sizeof(stamp), "%H:%M:%S", localtime(&now));
	printf("%s phase %s\n", stamp, phase);
	fflush(stdout);
}
