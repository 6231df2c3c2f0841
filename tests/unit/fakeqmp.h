/*
 * fakeqmp.h - a scripted QMP peer for unit tests: one end of a socketpair,
 * driven from a thread, so the client under test sees real socket
 * behaviour (partial reads, closes, SCM_RIGHTS) without QEMU.
 */
#ifndef VMM_TEST_FAKEQMP_H
#define VMM_TEST_FAKEQMP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fakeqmp;
typedef void (*fakeqmp_script)(struct fakeqmp *f);

struct fakeqmp {
	int fd;               /* the peer's end */
	int client_fd;        /* the end handed to the client under test */
	pthread_t thread;
	fakeqmp_script script;
	void *opaque;
	int received_fd;      /* an fd passed with SCM_RIGHTS, or -1 */
	char last_cmd[64];
	char last_args[1024]; /* its "arguments" as JSON text, "" if none */
	bool failed;          /* the script saw something unexpected */
};

/* Starts the script on a new socketpair. */
void fakeqmp_start(struct fakeqmp *f, fakeqmp_script script, void *opaque);
/* Joins the thread and closes the peer's end. */
void fakeqmp_finish(struct fakeqmp *f);

/* Script helpers. */
void fakeqmp_send(struct fakeqmp *f, const char *text);
void fakeqmp_sendf(struct fakeqmp *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void fakeqmp_greet(struct fakeqmp *f);          /* greeting + answers qmp_capabilities */
/* Reads one command; returns its id (or -1) and stores its name. */
int64_t fakeqmp_read_cmd(struct fakeqmp *f);
void fakeqmp_close(struct fakeqmp *f);

#endif
