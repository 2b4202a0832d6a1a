/* SPDX-License-Identifier: MIT */
/* Work-group sizes, tiles and the workspace layout of a plan on a device.
 * Everything here depends on the plan and the device only, so the
 * workspace size the core asks for at plan time is what the calls use. */
#include "ocl_internal.h"

#include <stdlib.h>

/* Rows per work-group of the row-parallel kernels: 64 fills a GPU's
 * scheduler well and keeps the union of the rows' blocks close to each
 * row's own (rows of a work-group are neighbouring positions). */
#define ROWS_PER_GROUP 64
/* Local memory a work-group may use for its key and value tiles. */
#define LOCAL_BUDGET (32 * 1024)
/* Scores and weights of one forward pass stay under this many bytes;
 * longer problems run in passes over chunks of query positions. */
#define PASS_BYTES ((size_t)256 << 20)
/* Decode: aim for this many work-groups per compute unit. */
#define DECODE_GROUPS_PER_UNIT 4

/* CPU devices read keys and values where they lie; others stage tiles
 * through local memory. DASHATTN_OPENCL_DIRECT=0 or 1 overrides (so that
 * both kernels can be tested on one device). */
int daocl_direct_loads(const daocl_state *st)
{
    const char *env = getenv("DASHATTN_OPENCL_DIRECT");
    if (env && (env[0] == '0' || env[0] == '1') && env[1] == '\0')
        return env[0] == '1';
    return (st->lim.type & CL_DEVICE_TYPE_CPU) != 0;
}

/* Decode's select (stage1.cl): a work-group per row on GPUs, where a
 * work-item per row left the device idle; a work-item per row on CPU
 * devices, where the work-group's barriers cost more than they spread
 * (PoCL, 2 cores: 0.43 against 0.09 ms). DASHATTN_OPENCL_WIDE_SELECT=0 or 1
 * overrides, so that both kernels can be tested on one device. */
int daocl_wide_select(const daocl_state *st)
{
    const char *env = getenv("DASHATTN_OPENCL_WIDE_SELECT");
    if (env && (env[0] == '0' || env[0] == '1') && env[1] == '\0')
        return env[0] == '1';
    return (st->lim.type & CL_DEVICE_TYPE_CPU) == 0;
}

/* Local memory of da_decode_attend (decode.cl): key tile (rows padded by
 * one), value tile, the pass's queries and scores, four floats per head. */
static size_t decode_local_bytes(const daocl_config *c)
{
    const size_t kt = (size_t)c->kt, dp = (size_t)c->dpad, h = (size_t)c->dec_heads;
    return (kt * (dp + 1) + kt * dp + h * dp + h * kt + 4 * h) * sizeof(float);
}

static int pow2_at_least(int64_t n, int floor)
{
    int p = floor;
    while (p < n)
        p *= 2;
    return p;
}

static size_t take(size_t *at, size_t floats)
{
    const size_t here = *at;
    *at += (floats + 31) / 32 * 32; /* each part starts on a 128-byte line */
    return here;
}

daocl_config daocl_plan_config(const daocl_state *st, const dashattn_plan_desc *plan,
                               dashattn_operation op)
{
    const dashattn_problem *p = &plan->problem;
    const daocl_limits *lim = &st->lim;
    daocl_config c = {0};
    c.dpad = pow2_at_least(p->head_dim, 16);
    c.direct = daocl_direct_loads(st);
    c.wg = ROWS_PER_GROUP;
    while ((size_t)c.wg > lim->max_work_group && c.wg > 1)
        c.wg /= 2;
    const size_t budget =
        lim->local_mem < LOCAL_BUDGET + 1024 ? (size_t)lim->local_mem - 1024 : LOCAL_BUDGET;
    c.dec_heads = c.dpad >= 256 ? 8 : 16;
    c.kt = 64;
    while (c.kt > 1 && (2u * (size_t)c.kt * (size_t)c.dpad * sizeof(float) > budget ||
                        decode_local_bytes(&c) + 1024 > (size_t)lim->local_mem))
        c.kt /= 2;
    while ((size_t)c.kt > lim->max_work_group && c.kt > 1)
        c.kt /= 2;

    const size_t m = (size_t)plan->num_blocks, d = (size_t)p->head_dim;
    const size_t heads = (size_t)(p->batch * p->heads_kv);
    const size_t per_position = (size_t)(p->batch * p->heads_q) * (m + 1) * sizeof(float);
    size_t cap = PASS_BYTES;
    if (lim->max_alloc > 0 && lim->max_alloc / 2 < cap)
        cap = (size_t)(lim->max_alloc / 2);
    c.chunk = p->len_q;
    if (op == DASHATTN_OP_FORWARD)
        while (c.chunk > 1 && (size_t)c.chunk * per_position > cap)
            c.chunk = (c.chunk + 1) / 2;
    c.rows = p->batch * p->heads_q * c.chunk;
    const size_t r = (size_t)c.rows;

    const size_t tokens = heads * (size_t)p->len_k;
    size_t at = 0;
    c.ph = c.wpre = -1;
    switch (op) {
    case DASHATTN_OP_FORWARD:
        c.kbar = take(&at, heads * m * d);
        c.pool = take(&at, tokens);
        c.w = take(&at, m * r);
        c.att = take(&at, r);
        break;
    case DASHATTN_OP_BACKWARD:
        c.kbar = take(&at, heads * m * d);
        c.pool = take(&at, tokens);
        c.w = take(&at, m * r);
        c.att = take(&at, r);
        c.gp = take(&at, m * r);
        c.dq = take(&at, r * d);
        c.dl = take(&at, r);
        c.ph = (int64_t)take(&at, m * r);
        c.wpre = (int64_t)take(&at, m * r);
        c.rt = take(&at, tokens);
        break;
    case DASHATTN_OP_DECODE: {
        const int64_t target = (int64_t)lim->compute_units * DECODE_GROUPS_PER_UNIT;
        int64_t splits = (target + (int64_t)heads - 1) / (int64_t)heads;
        splits = splits < 1 ? 1 : splits > plan->num_blocks ? plan->num_blocks : splits;
        c.blocks_per_split = (plan->num_blocks + splits - 1) / splits;
        c.splits = (plan->num_blocks + c.blocks_per_split - 1) / c.blocks_per_split;
        c.w = take(&at, m * r);
        c.att = take(&at, r);
        c.pacc = take(&at, (size_t)c.splits * r * d);
        c.pml = take(&at, (size_t)c.splits * r * 2);
        break;
    }
    }
    c.floats = at;
    return c;
}
