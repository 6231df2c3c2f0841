/*
 * log.h - the one place that prints diagnostics.
 *
 * Library-like code (transport/, migrate/, cluster/ ...) logs progress at
 * debug/info level but never reports failures itself: it returns a struct
 * err and the CLI or daemon reports it once. Lines go to stderr with a
 * timestamp; the level is chosen with VMM_LOG=debug|info|warn|error
 * (default info) or log_set_level().
 */
#ifndef VMM_LOG_H
#define VMM_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_LEVEL_MAX };

void log_init(const char *prog);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_msg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
