/* A bump allocator for per-step memory (activations, gradients of
 * activations, tape nodes). Allocation is a pointer bump inside a chain of
 * large blocks; arena_reset() makes all of it reusable at once without
 * returning memory to the system, so a training loop reaches a steady state
 * with no malloc per step. Parameters and optimizer state never live here. */
#ifndef GELAN_ARENA_H
#define GELAN_ARENA_H

#include <stddef.h>

typedef struct ArenaBlock ArenaBlock;

typedef struct Arena {
    ArenaBlock *head;    /* block being filled */
    ArenaBlock *first;   /* first block of the chain (kept across resets) */
    size_t block_bytes;  /* size of a new block (grows for big requests) */
    size_t used;         /* bytes handed out since the last reset */
    size_t peak;         /* largest `used` ever seen */
} Arena;

/* block_bytes = 0 picks a default (64 MiB). */
void arena_init(Arena *a, size_t block_bytes);
void arena_destroy(Arena *a);

/* 64-byte aligned, uninitialised; NULL (with gelan_error) when out of memory. */
void *arena_alloc(Arena *a, size_t bytes);
void *arena_calloc(Arena *a, size_t bytes);

/* Forgets every allocation; keeps the blocks for reuse. */
void arena_reset(Arena *a);

#endif
