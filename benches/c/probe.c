/*
 * probe: not a workload. The harness runs it under each allocator's
 * LD_PRELOAD to check that the library really replaces malloc (ld.so only
 * warns about a library it cannot load, and the run would silently be
 * glibc's) and to read the versions:
 *
 *   malloc=/path/of/the/library/that/defines/malloc
 *   glibc=2.36
 *   mimalloc=2.0.9 | jemalloc=5.3.0-... | tcmalloc=gperftools 2.10
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void *p = malloc(64);
    Dl_info info;
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    printf("malloc=%s\n", m && dladdr(m, &info) && info.dli_fname ? info.dli_fname : "?");
    printf("glibc=%s\n", gnu_get_libc_version());
    int (*mi_version)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "mi_version");
    if (!mi_version) /* benches/mimalloc-secure exports it under this name */
        mi_version = (int (*)(void))dlsym(RTLD_DEFAULT, "mimalloc_secure_version");
    if (mi_version) {
        int v = mi_version();
        printf("mimalloc=%d.%d.%d\n", v / 100 >= 100 ? v / 10000 : v / 100,
               v / 100 >= 100 ? v / 100 % 100 : v % 100 / 10, v % 10);
    }
    const char *(*tc_version)(int *, int *, const char **) =
        (const char *(*)(int *, int *, const char **))dlsym(RTLD_DEFAULT, "tc_version");
    if (tc_version) printf("tcmalloc=%s\n", tc_version(NULL, NULL, NULL));
    int (*mallctl)(const char *, void *, size_t *, void *, size_t) =
        (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mallctl");
    const char *je = NULL;
    size_t len = sizeof je;
    if (mallctl && mallctl("version", &je, &len, NULL, 0) == 0 && je) printf("jemalloc=%s\n", je);
    free(p);
    return 0;
}
