/*
 * progress.h - how a long operation shows its progress: a line that
 * redraws on a terminal, timestamped plain lines otherwise, one JSON object
 * per line with --output json. Writes to stdout; errors still go to stderr.
 */
#ifndef VMM_CLI_PROGRESS_H
#define VMM_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "../migrate/mig.h"

enum cli_out { CLI_OUT_TEXT, CLI_OUT_JSON };

struct cli_progress {
	enum cli_out out;
	bool tty;
	int64_t last_plain_ms;
	bool line_open;     /* a redrawn line is on screen */
};

void cli_progress_init(struct cli_progress *p, enum cli_out out);

/* One RAM progress sample. `phase` is the state machine's state name.
 * Shows the vCPU throttle (auto-converge) and a raised downtime limit when
 * the engine had to use them. */
void cli_progress_ram(struct cli_progress *p, const char *phase,
		      const struct mig_raw_progress *rp);

/* One disk-copy sample: bytes of the volumes covered (zeros included) of
 * total, bytes on the wire (0: not known). disks[0..ndisks-1], when given,
 * are the single disks (JSON lists them; a terminal shows how many are in
 * sync). */
void cli_progress_disk(struct cli_progress *p, const char *phase, uint64_t total,
		       uint64_t covered, uint64_t wire, uint64_t rate_bps, int64_t elapsed_ms,
		       const struct mig_disk_progress *disks, unsigned ndisks);

/* A phase change: a JSON event, a plain line, nothing on a TTY. */
void cli_progress_phase(struct cli_progress *p, const char *phase);

/* Ends a redrawn line before other output. */
void cli_progress_break(struct cli_progress *p);

#endif
