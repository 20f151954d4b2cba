/*
 * SO_REUSEPORT steering with classic BPF; see hd_reuseport.h.
 *
 * Why classic BPF: an eBPF SK_REUSEPORT program with a sockarray map would
 * not need the array model, but loading one needs CAP_BPF; a classic
 * program attaches with a plain setsockopt() by the socket's owner.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/filter.h>

#include "hd_alloc.h"
#include "hd_reuseport.h"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif

#define NET(off) ((uint32_t) (SKF_NET_OFF + (off)))

/*
 * The program runs with skb->data past the TCP header (run_bpf_filter()
 * pulls it), so every load is relative to the network header through
 * SKF_NET_OFF. The hash mixes the client's source address and port
 * (multiplicative hashing); it only has to spread connections and be
 * stable for one connection, which it is (the final ACK finds the request
 * socket by 4-tuple, it does not run the program again).
 */
int
hd_reuseport_steer(int fd, const uint16_t *idx, unsigned n)
{
    struct sock_filter *code;
    struct sock_fprog   prog;
    unsigned            len = 0;
    bool                identity = true;
    int                 rc = 0;

    if (n == 0 || n > HD_REUSEPORT_MAX)
        return -EINVAL;
    for (unsigned i = 0; i < n; i++)
        if (idx[i] != i)
            identity = false;

    code = hd_calloc(20 + 2 * (size_t) n, sizeof(*code));
    /* A = IP version */
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
                                                NET(0));
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4);
    code[len++] = (struct sock_filter) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 6, 8,
                                                0);
    /* IPv4: X = IHL * 4, X = the TCP source port right after the header,
     * A = the source address */
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_B | BPF_ABS,
                                                NET(0));
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_AND | BPF_K,
                                                0x0f);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_LSH | BPF_K, 2);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_MISC | BPF_TAX, 0);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_H | BPF_IND,
                                                NET(0));
    code[len++] = (struct sock_filter) BPF_STMT(BPF_MISC | BPF_TAX, 0);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                NET(12));
    code[len++] = (struct sock_filter) BPF_JUMP(BPF_JMP | BPF_JA, 3, 0, 0);
    /* IPv6: the fixed header is 40 bytes (a SYN with extension headers
     * hashes on whatever is there: still a valid pick); A = the low 32
     * bits of the source address */
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_H | BPF_ABS,
                                                NET(40));
    code[len++] = (struct sock_filter) BPF_STMT(BPF_MISC | BPF_TAX, 0);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                                NET(20));
    /* mix: connect() hands out even ports first (odd ones are left for
     * bind()), so the raw port modulo an even n would pick one socket */
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_MUL | BPF_K,
                                                0x9e3779b1u);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16);
    code[len++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n);
    if (identity) {
        code[len++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_A, 0);
    } else {
        for (unsigned i = 0; i < n; i++) {
            code[len++] = (struct sock_filter) BPF_JUMP(
                BPF_JMP | BPF_JEQ | BPF_K, i, 0, 1);
            code[len++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_K,
                                                        idx[i]);
        }
        code[len++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_K, idx[0]);
    }

    prog.len = (unsigned short) len;
    prog.filter = code;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog,
                   sizeof(prog))
        < 0)
        rc = -errno;
    free(code);
    return rc;
}

int
hd_reuseport_unsteer(int fd)
{
    int one = 1;

    if (setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &one, sizeof(one))
        < 0)
        return -errno;
    return 0;
}

int
hd_reuseport_group_add(hd_reuseport_group_t *g, void *member)
{
    if (g->n == HD_REUSEPORT_MAX)
        return -ENOSPC;
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 8;
        g->sock = hd_realloc(g->sock, g->cap * sizeof(*g->sock));
    }
    g->sock[g->n++] = member;
    return 0;
}

void
hd_reuseport_group_remove(hd_reuseport_group_t *g, void *member)
{
    int i = hd_reuseport_group_index(g, member);

    if (i < 0)
        return;
    /* exactly what the kernel does on detach */
    g->sock[i] = g->sock[g->n - 1];
    g->n--;
}

int
hd_reuseport_group_index(const hd_reuseport_group_t *g, const void *member)
{
    for (unsigned i = 0; i < g->n; i++)
        if (g->sock[i] == member)
            return (int) i;
    return -1; /* "not a member": an index sentinel, not an error */
}

void
hd_reuseport_group_free(hd_reuseport_group_t *g)
{
    free(g->sock);
    g->sock = NULL;
    g->n = g->cap = 0;
}
