/*
 * Redirect one shared library's calls to an imported function: rewrite the
 * library's GOT slot for that symbol (the technique of plthook/Android's
 * xHook). Only calls made FROM that library are affected; the rest of the
 * process, including sanitizer interceptors, is untouched.
 *
 * herald uses it for exactly one thing: to see the bytes libwebsockets
 * reads from client sockets, so unmasked client frames can be refused
 * (lws 4.1 accepts them and has no option to refuse them). See
 * worker/hd_wsguard.c.
 */
#ifndef HD_PLTHOOK_H
#define HD_PLTHOOK_H

/*
 * In the loaded object whose file name contains lib_substr, point every
 * GOT slot for symbol at fn. Returns the number of slots rewritten (>= 1)
 * or -errno (-ENOENT: library or symbol not found).
 */
int hd_plthook(const char *lib_substr, const char *symbol, void *fn);

#endif
