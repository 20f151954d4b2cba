/*
 * Channel names. The character set is small on purpose: names go into
 * Redis channel and key names, log lines and metric labels, so nothing in
 * them may need quoting anywhere ('*' in particular is kept out because
 * JWT allow-lists use it as the prefix marker).
 */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "hd_chname.h"

/* one byte per character: 1 if allowed in a channel name */
static const unsigned char allowed[256] = {
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1,
    ['x'] = 1, ['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['_'] = 1,
    ['.'] = 1, [':'] = 1, ['@'] = 1, ['-'] = 1,
};

/*
 * True if name[0..len) is 1..HD_CHNAME_MAX bytes of [A-Za-z0-9_.:@-].
 * name need not be NUL-terminated; an embedded NUL makes it invalid.
 */
bool
hd_chname_valid(const char *name, size_t len)
{
    size_t i;

    if (name == NULL || len == 0 || len > HD_CHNAME_MAX)
        return false;
    for (i = 0; i < len; i++) {
        if (!allowed[(unsigned char) name[i]])
            return false;
    }
    return true;
}

/*
 * Length of the part before the first ':' (which may be 0, as in ":x"),
 * or 0 when there is no ':' at all; *has_ns (may be NULL) tells the two
 * zero cases apart. Does not validate the name.
 */
size_t
hd_chname_namespace(const char *name, size_t len, bool *has_ns)
{
    const char *colon = name != NULL && len > 0 ? memchr(name, ':', len) : NULL;

    if (has_ns != NULL)
        *has_ns = colon != NULL;
    return colon != NULL ? (size_t) (colon - name) : 0;
}

bool
hd_tenant_valid(const char *s, size_t len)
{
    if (len == 0 || len > HD_TENANT_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char) s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')
              || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.'
              || ch == '-'))
            return false;
    }
    return true;
}
