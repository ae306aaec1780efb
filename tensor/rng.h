/* Seeded pseudo-random numbers (xoshiro128+ style, splitmix64 seeding).
 * One generator per purpose (init, augmentation, data order) keeps runs
 * reproducible for a given --seed. */
#ifndef GELAN_RNG_H
#define GELAN_RNG_H

#include <stdint.h>

typedef struct Rng {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
/* uniform in [0, 1) */
float rng_uniform(Rng *r);
/* uniform in [lo, hi) */
float rng_range(Rng *r, float lo, float hi);
/* standard normal */
float rng_normal(Rng *r);
/* uniform integer in [0, n) */
uint32_t rng_below(Rng *r, uint32_t n);

#endif
