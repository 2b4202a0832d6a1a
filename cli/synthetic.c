/* SPDX-License-Identifier: MIT */
/* Synthetic attention inputs with block structure (see synthetic.h).
 *
 * Model: every key block j of every (batch, kv head) has a topic vector
 * t_j ~ N(0, I). A key of block j is c * t_j + N(0, I) with c = f / (1 + f)
 * for focus f, so block means point at their topic. Each segment of 64 query
 * positions picks a few blocks at or before its start, shared by the query
 * heads of a KV head; each of its queries is f * (mean of their topics) +
 * N(0, I): the larger f, the more its stage-1 scores stand out on those
 * blocks and the sparser alpha-entmax gets. Values are N(0, I). With f = 0
 * everything is plain Gaussian.
 *
 * That is the `segment` family: each query's N(0, I) is its own, strong
 * enough that neighbouring rows keep nearly disjoint blocks at 75% sparsity,
 * a worst case for kernels that tile rows. In the `coherent` family the
 * queries of a segment (per query head) share one latent direction
 * s ~ N(0, I) and each adds a small own part: sqrt(1 - e^2) s + e n with
 * n ~ N(0, I) and e = SYNTH_COHERENT_OWN, so the noise keeps its variance
 * and neighbouring rows keep mostly the same blocks, as block-sparse
 * prefill methods observe in trained models. */
#include "synthetic.h"

#include <math.h>
#include <stddef.h>

/* Topics a query leans towards. */
#define SYNTH_TOPICS_PER_QUERY 2
/* Consecutive query positions that lean towards the same topics: attention
 * in trained models changes slowly along the sequence, and tiled kernels
 * (GPU stage 2 reads the union of a 64-row tile's blocks) depend on it. */
#define SYNTH_SEGMENT 64
/* Longest head dimension a topic buffer holds (the library's limit). */
#define SYNTH_MAX_DIM 256
/* The own part's share e of a coherent query's noise. */
#define SYNTH_COHERENT_OWN 0.25

static uint64_t synth_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void da_synth_seed(da_synth_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    rng->state = synth_splitmix(&x);
}

double da_synth_uniform(da_synth_rng *rng)
{
    /* 53 random bits give every double of [0, 1) on a 2^-53 grid. */
    return (double)(synth_splitmix(&rng->state) >> 11) * 0x1.0p-53;
}

double da_synth_normal(da_synth_rng *rng)
{
    /* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1]. */
    const double u1 = 1.0 - da_synth_uniform(rng);
    const double u2 = da_synth_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* A seed from a base and three coordinates. */
static uint64_t synth_mix(uint64_t base, int64_t a, int64_t b, int64_t c)
{
    uint64_t x = base;
    x = synth_splitmix(&x) ^ (uint64_t)a;
    x = synth_splitmix(&x) ^ (uint64_t)b;
    x = synth_splitmix(&x) ^ (uint64_t)c;
    return x;
}

/* Topic vectors are regenerated from a hash of their coordinates instead of
 * being stored, so the generator needs no allocation. */
static void synth_topic(uint64_t seed, int64_t b, int64_t h, int64_t j, int64_t dim, double *t)
{
    da_synth_rng rng;
    da_synth_seed(&rng, synth_mix(seed ^ 0x5bd1e995ull, b, h, j));
    for (int64_t d = 0; d < dim; d++)
        t[d] = da_synth_normal(&rng);
}

/* The latent direction the coherent queries of segment seg of query head h
 * share, regenerated from a hash like the topics. */
static void synth_latent(uint64_t seed, int64_t b, int64_t h, int64_t seg, int64_t dim, double *s)
{
    da_synth_rng rng;
    da_synth_seed(&rng, synth_mix(seed ^ 0x9b05688c2b3e6c1full, b, h, seg));
    for (int64_t d = 0; d < dim; d++)
        s[d] = da_synth_normal(&rng);
}

void da_synth_qkv(uint64_t seed, int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t len_q,
                  int64_t len_k, int64_t head_dim, int64_t block_size, double focus, float *q,
                  float *k, float *v)
{
    da_synth_qkv_family(DA_SYNTH_SEGMENT, seed, batch, heads_q, heads_kv, len_q, len_k, head_dim,
                        block_size, focus, q, k, v);
}

void da_synth_qkv_family(da_synth_family family, uint64_t seed, int64_t batch, int64_t heads_q,
                         int64_t heads_kv, int64_t len_q, int64_t len_k, int64_t head_dim,
                         int64_t block_size, double focus, float *q, float *k, float *v)
{
    if (batch < 1 || heads_q < 1 || heads_kv < 1 || len_q < 1 || len_k < 1 || head_dim < 1 ||
        head_dim > SYNTH_MAX_DIM || block_size < 1)
        return;
    const double f = focus > 0.0 ? focus : 0.0;
    const double c = f / (1.0 + f);
    const int64_t group = heads_q >= heads_kv ? heads_q / heads_kv : 1;
    double topic[SYNTH_MAX_DIM];
    double mix[SYNTH_MAX_DIM];
    double latent[SYNTH_MAX_DIM];
    const int coherent = family == DA_SYNTH_COHERENT;
    const double shared = sqrt(1.0 - SYNTH_COHERENT_OWN * SYNTH_COHERENT_OWN);
    da_synth_rng rng;
    da_synth_seed(&rng, seed);

    for (int64_t b = 0; b < batch; b++) {
        for (int64_t h = 0; h < heads_kv; h++) {
            float *kh = k + (size_t)((b * heads_kv + h) * len_k * head_dim);
            float *vh = v + (size_t)((b * heads_kv + h) * len_k * head_dim);
            for (int64_t t = 0; t < len_k; t++) {
                if (t % block_size == 0 && c > 0.0)
                    synth_topic(seed, b, h, t / block_size, head_dim, topic);
                for (int64_t d = 0; d < head_dim; d++) {
                    const double centre = c > 0.0 ? c * topic[d] : 0.0;
                    kh[t * head_dim + d] = (float)(centre + da_synth_normal(&rng));
                    vh[t * head_dim + d] = (float)da_synth_normal(&rng);
                }
            }
        }
        for (int64_t h = 0; h < heads_q; h++) {
            const int64_t hkv = h / group < heads_kv ? h / group : heads_kv - 1;
            float *qh = q + (size_t)((b * heads_q + h) * len_q * head_dim);
            for (int64_t i = 0; i < len_q; i++) {
                /* The row's position as a bottom-right aligned causal query. */
                int64_t pos = i + (len_k - len_q);
                pos = pos < 0 ? 0 : (pos >= len_k ? len_k - 1 : pos);
                for (int64_t d = 0; d < head_dim; d++)
                    mix[d] = 0.0;
                if (f > 0.0) {
                    /* The segment's topics, drawn among the blocks its first
                     * query may see, are shared by its queries and by the
                     * query heads of one KV head. */
                    const int64_t seg = pos / SYNTH_SEGMENT;
                    const int64_t seen = (seg * SYNTH_SEGMENT) / block_size + 1;
                    da_synth_rng pick;
                    da_synth_seed(&pick, synth_mix(seed ^ 0x2545f4914f6cdd1dull, b, hkv, seg));
                    for (int n = 0; n < SYNTH_TOPICS_PER_QUERY; n++) {
                        const int64_t j = (int64_t)(da_synth_uniform(&pick) * (double)seen) % seen;
                        synth_topic(seed, b, hkv, j, head_dim, topic);
                        for (int64_t d = 0; d < head_dim; d++)
                            mix[d] += topic[d] * (f / SYNTH_TOPICS_PER_QUERY);
                    }
                }
                if (coherent)
                    synth_latent(seed, b, h, pos / SYNTH_SEGMENT, head_dim, latent);
                for (int64_t d = 0; d < head_dim; d++) {
                    const double own = da_synth_normal(&rng);
                    const double noise =
                        coherent ? shared * latent[d] + SYNTH_COHERENT_OWN * own : own;
                    qh[i * head_dim + d] = (float)(mix[d] + noise);
                }
            }
        }
    }
}
