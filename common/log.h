/*
 * log.h - the one place that prints diagnostics.
 *
 * Library-like code (transport/, migrate/, cluster/ ...) logs progress at
 * debug/info level but never reports failures itself: it returns a struct
 * err and the CLI or daemon reports it once. The level is chosen with
 * VMM_LOG=debug|info|warn|error (default info) or log_set_level().
 *
 * Where lines go (chosen by log_init):
 *  - stderr is the journal (run by systemd: journal.h): one native journal
 *    entry per line with PRIORITY, SYSLOG_IDENTIFIER, MESSAGE and the
 *    fields set with log_field_set(); if the journal's socket fails, the
 *    line goes to stderr instead, so nothing is lost;
 *  - otherwise: "HH:MM:SS.mmm PROG LEVEL: message" lines on stderr.
 * In addition, while a task log is open (log_task_open), every line is
 * appended to it with the date. All of it is safe from several threads;
 * each line is written whole.
 */
#ifndef VMM_LOG_H
#define VMM_LOG_H

#include <stdbool.h>

#include "err.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_LEVEL_MAX };

#define LOG_FIELDS_MAX 4

void log_init(const char *prog);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* A structured field of this process's journal entries from now on, e.g.
 * log_field_set("VMMIGRATE_VMID", "106") by the code that knows the guest;
 * value NULL removes it. Keys follow journal.h; invalid keys, and keys
 * beyond LOG_FIELDS_MAX, are ignored (a bug of ours, not worth failing a
 * migration for). Stderr lines do not show fields: their text names the
 * guest or job already. */
void log_field_set(const char *key, const char *value);

/* A task's own log: lines logged from now on are appended to path (created
 * 0600 or truncated) as "YYYY-MM-DD HH:MM:SS.mmm LEVEL: message", until
 * log_task_close() ends it with "TASK OK" (error NULL) or "TASK ERROR:
 * error", as Proxmox's task logs do. One task log per process at a time:
 * opening another closes the first without a result line. */
bool log_task_open(const char *path, struct err **errp);
void log_task_close(const char *error);

#endif
