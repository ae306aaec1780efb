#include "tensor/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

#define ARENA_ALIGN 64
#define ARENA_DEFAULT_BLOCK ((size_t)64 << 20)

struct ArenaBlock {
    ArenaBlock *next;
    size_t size; /* usable bytes after the header */
    size_t off;
    unsigned char *mem;
};

static ArenaBlock *block_new(size_t size) {
    ArenaBlock *b = malloc(sizeof *b);
    if (!b) return NULL;
    if (posix_memalign((void **)&b->mem, ARENA_ALIGN, size) != 0) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->off = 0;
    return b;
}

void arena_init(Arena *a, size_t block_bytes) {
    memset(a, 0, sizeof *a);
    a->block_bytes = block_bytes ? block_bytes : ARENA_DEFAULT_BLOCK;
}

void arena_destroy(Arena *a) {
    ArenaBlock *b = a->first;
    while (b) {
        ArenaBlock *next = b->next;
        free(b->mem);
        free(b);
        b = next;
    }
    memset(a, 0, sizeof *a);
}

void *arena_alloc(Arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    /* Walk forward through blocks kept from before a reset. */
    while (a->head && a->head->off + need > a->head->size && a->head->next) {
        a->head = a->head->next;
        a->head->off = 0;
    }
    if (!a->head || a->head->off + need > a->head->size) {
        size_t size = need > a->block_bytes ? need : a->block_bytes;
        ArenaBlock *b = block_new(size);
        if (!b) {
            gelan_error("arena: out of memory allocating %zu bytes (in use %zu)", bytes, a->used);
            return NULL;
        }
        if (a->head) {
            /* insert after head so that kept blocks after it stay in the chain */
            b->next = a->head->next;
            a->head->next = b;
        } else {
            a->first = b;
        }
        a->head = b;
    }
    void *p = a->head->mem + a->head->off;
    a->head->off += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void *arena_calloc(Arena *a, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void arena_reset(Arena *a) {
    a->head = a->first;
    if (a->head) a->head->off = 0;
    a->used = 0;
}
