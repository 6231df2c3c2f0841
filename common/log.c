/* log.c - see log.h. */
#include "log.h"
#include "journal.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug",
	[LOG_INFO] = "info",
	[LOG_WARN] = "warn",
	[LOG_ERROR] = "error",
};
_Static_assert(ARRAY_SIZE(level_names) == LOG_LEVEL_MAX, "level_names");

/* syslog(3) priorities, as the journal's PRIORITY field wants them. */
static const char *const level_priority[] = {
	[LOG_DEBUG] = "7",
	[LOG_INFO] = "6",
	[LOG_WARN] = "4",
	[LOG_ERROR] = "3",
};
_Static_assert(ARRAY_SIZE(level_priority) == LOG_LEVEL_MAX, "level_priority");

#define FIELD_KEY_MAX 64
#define FIELD_VALUE_MAX 128

static enum log_level cur_level = LOG_INFO;
static const char *prog_name = "vmmigrate";

/* Everything below is guarded by `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int journal_fd = -1; /* >= 0: stderr is the journal */
static FILE *task_f;
static struct {
	char key[FIELD_KEY_MAX + 1];
	char value[FIELD_VALUE_MAX + 1];
} fields[LOG_FIELDS_MAX];

void log_init(const char *prog)
{
	const char *env = getenv("VMM_LOG");

	if (prog)
		prog_name = prog;
	pthread_mutex_lock(&lock);
	if (journal_fd >= 0)
		close(journal_fd);
	journal_fd = -1;
	if (journal_is_stderr())
		journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	pthread_mutex_unlock(&lock);
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

void log_field_set(const char *key, const char *value)
{
	size_t free_slot = LOG_FIELDS_MAX;

	if (!key || strlen(key) > FIELD_KEY_MAX)
		return;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < LOG_FIELDS_MAX; i++) {
		if (!strcmp(fields[i].key, key)) {
			free_slot = i;
			break;
		}
		if (!fields[i].key[0] && free_slot == LOG_FIELDS_MAX)
			free_slot = i;
	}
	if (free_slot < LOG_FIELDS_MAX) {
		if (value) {
			snprintf(fields[free_slot].key, sizeof(fields[free_slot].key), "%s", key);
			snprintf(fields[free_slot].value, sizeof(fields[free_slot].value), "%s",
				 value);
		} else {
			fields[free_slot].key[0] = '\0';
		}
	}
	pthread_mutex_unlock(&lock);
}

/* Called with `lock` held. False: the journal refused it (stderr then). */
static bool to_journal(enum log_level lvl, const char *line)
{
	struct journal_field f[3 + LOG_FIELDS_MAX] = {
		{ "PRIORITY", level_priority[lvl] },
		{ "SYSLOG_IDENTIFIER", prog_name },
		{ "MESSAGE", line },
	};
	size_t n = 3;

	for (size_t i = 0; i < LOG_FIELDS_MAX; i++)
		if (fields[i].key[0])
			f[n++] = (struct journal_field){ fields[i].key, fields[i].value };
	if (journal_send(journal_fd, journal_socket_path(), f, n, NULL))
		return true;
	/* A bad field name must not cost the line: without the fields. */
	return n > 3 && journal_send(journal_fd, journal_socket_path(), f, 3, NULL);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char stamp[32], line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int saved = errno; /* callers may log between a failure and errno's use */

	if (lvl < cur_level)
		return;
	/* First, while errno is still the caller's (%m). */
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	pthread_mutex_lock(&lock);
	if (journal_fd < 0 || !to_journal(lvl, line)) {
		strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
		/* One fprintf per line keeps lines whole. */
		fprintf(stderr, "%s.%03ld %s %s: %s\n", stamp, ts.tv_nsec / 1000000,
			prog_name, level_names[lvl], line);
	}
	if (task_f) {
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(task_f, "%s.%03ld %s: %s\n", stamp, ts.tv_nsec / 1000000,
			level_names[lvl], line);
		fflush(task_f);
	}
	pthread_mutex_unlock(&lock);
	errno = saved;
}

bool log_task_open(const char *path, struct err **errp)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f;

	if (fd < 0)
		return err_set_errno(errp, errno, "cannot open task log '%s'", path);
	f = fdopen(fd, "w");
	if (!f) {
		err_set_errno(errp, errno, "cannot open task log '%s'", path);
		close(fd);
		return false;
	}
	pthread_mutex_lock(&lock);
	if (task_f)
		fclose(task_f);
	task_f = f;
	pthread_mutex_unlock(&lock);
	return true;
}

void log_task_close(const char *error)
{
	pthread_mutex_lock(&lock);
	if (task_f) {
		if (error)
			fprintf(task_f, "TASK ERROR: %s\n", error);
		else
			fprintf(task_f, "TASK OK\n");
		fclose(task_f);
		task_f = NULL;
	}
	pthread_mutex_unlock(&lock);
}
