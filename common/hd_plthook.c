#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hd_plthook.h"

#if defined(__x86_64__)
#define SLOT_JUMP R_X86_64_JUMP_SLOT
#define SLOT_GLOB R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define SLOT_JUMP R_AARCH64_JUMP_SLOT
#define SLOT_GLOB R_AARCH64_GLOB_DAT
#else
#error "hd_plthook: add this architecture's JUMP_SLOT/GLOB_DAT types"
#endif

/* dl_iterate_phdr cannot give the link_map; walk r_debug's list instead */
static struct link_map *
find_map(const char *lib)
{
    struct link_map *lm = _r_debug.r_map;

    for (; lm != NULL; lm = lm->l_next)
        if (lm->l_name != NULL && strstr(lm->l_name, lib) != NULL)
            return lm;
    return NULL;
}

/* The protection of the mapping holding addr, from /proc/self/maps;
 * -errno when the file cannot be read, -ENOENT when no mapping holds addr. */
static int
page_prot(uintptr_t addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char  line[512], perms[8];
    int   prot = -ENOENT;

    if (f == NULL)
        return -errno;
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && addr >= lo
            && addr < hi) {
            prot = (perms[0] == 'r' ? PROT_READ : 0)
                | (perms[1] == 'w' ? PROT_WRITE : 0)
                | (perms[2] == 'x' ? PROT_EXEC : 0);
            break;
        }
    }
    fclose(f);
    return prot;
}

static int
patch(uintptr_t slot, void *fn)
{
    long      pg = sysconf(_SC_PAGESIZE);
    uintptr_t page = slot & ~((uintptr_t) pg - 1);
    int       prot = page_prot(slot);

    if (prot < 0)
        return -EFAULT;
    /* the slot may sit in a RELRO page made read-only after relocation:
     * open it for the one write, then put back exactly what it was (a
     * lazily bound .got.plt must stay writable for the resolver) */
    if (!(prot & PROT_WRITE)
        && mprotect((void *) page, (size_t) pg, prot | PROT_WRITE) < 0)
        return -errno;
    *(void **) slot = fn;
    if (!(prot & PROT_WRITE))
        (void) mprotect((void *) page, (size_t) pg, prot);
    return 0;
}

int
hd_plthook(const char *lib_substr, const char *symbol, void *fn)
{
    struct link_map *lm = find_map(lib_substr);
    const ElfW(Dyn) * d;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    const ElfW(Rela) *jmprel = NULL, *rela = NULL;
    size_t jmpsz = 0, relasz = 0;
    int    n = 0, rc;

    if (lm == NULL)
        return -ENOENT;
    for (d = (const ElfW(Dyn) *) lm->l_ld; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB:
            symtab = (const ElfW(Sym) *) d->d_un.d_ptr;
            break;
        case DT_STRTAB:
            strtab = (const char *) d->d_un.d_ptr;
            break;
        case DT_JMPREL:
            jmprel = (const ElfW(Rela) *) d->d_un.d_ptr;
            break;
        case DT_PLTRELSZ:
            jmpsz = d->d_un.d_val;
            break;
        case DT_RELA:
            rela = (const ElfW(Rela) *) d->d_un.d_ptr;
            break;
        case DT_RELASZ:
            relasz = d->d_un.d_val;
            break;
        default:
            break;
        }
    }
    if (symtab == NULL || strtab == NULL)
        return -ENOENT;

    /* PLT slots (JUMP_SLOT) and, for -fno-plt builds, GLOB_DAT slots */
    const ElfW(Rela) * tabs[2] = { jmprel, rela };
    size_t szs[2] = { jmpsz, relasz };
    for (int t = 0; t < 2; t++) {
        if (tabs[t] == NULL)
            continue;
        for (size_t i = 0; i < szs[t] / sizeof(ElfW(Rela)); i++) {
            const ElfW(Rela) *r = &tabs[t][i];
            unsigned type = (unsigned) ELF64_R_TYPE(r->r_info);
            if (type != SLOT_JUMP && type != SLOT_GLOB)
                continue;
            const ElfW(Sym) *s = &symtab[ELF64_R_SYM(r->r_info)];
            if (strcmp(strtab + s->st_name, symbol) != 0)
                continue;
            rc = patch(lm->l_addr + r->r_offset, fn);
            if (rc < 0)
                return rc;
            n++;
        }
    }
    return n > 0 ? n : -ENOENT;
}
