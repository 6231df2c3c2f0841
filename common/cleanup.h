/*
 * cleanup.h - scope-bound ownership for locals (after systemd's macros).
 *
 *   _cleanup_free_ char *s = strdup(...);     freed when s leaves scope
 *   _cleanup_close_ int fd = open(...);       closed when fd leaves scope
 *   return TAKE_PTR(s);                       hands ownership out
 *
 * DEFINE_CLEANUP_FUNC(type, fn) makes `_cleanup_(fn##p) type *x` call
 * fn(x) when x is non-NULL.
 */
#ifndef VMM_CLEANUP_H
#define VMM_CLEANUP_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* close() that keeps errno: cleanup runs on error paths where errno matters. */
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

#define DEFINE_CLEANUP_FUNC(type, fn)                 \
	static inline void fn##p(type **p)            \
	{                                             \
		if (*p)                               \
			fn(*p);                       \
	}

#define TAKE_PTR(p)                              \
	({                                       \
		__typeof__(p) _tp = (p);         \
		(p) = NULL;                      \
		_tp;                             \
	})

#define TAKE_FD(fd)                              \
	({                                       \
		int _tf = (fd);                  \
		(fd) = -1;                       \
		_tf;                             \
	})

#endif
