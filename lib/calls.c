/* SPDX-License-Identifier: MIT */
/* The compute entry points: validate, provide workspace, hand to the backend. */
#include <config.h>

#include "validate.h"

/* Workspace for one call: the caller's, or one allocated for this call. */
typedef struct workspace {
    void *ptr;
    size_t size;
    int owned;
} workspace;

static dashattn_status workspace_acquire(const char *fn, dashattn_context *ctx,
                                         const dashattn_plan *plan, dashattn_operation op,
                                         void *given, size_t given_size, workspace *ws)
{
    const size_t needed = plan->workspace_size[op];
    ws->ptr = given;
    ws->size = given_size;
    ws->owned = 0;
    if (given) {
        if (given_size < needed)
            return da_fail(DASHATTN_ERR_WORKSPACE_TOO_SMALL,
                           "%s: workspace_size is %zu bytes, the plan needs %zu", fn, given_size,
                           needed);
        return DASHATTN_OK;
    }
    ws->size = needed;
    if (ws->size == 0)
        return DASHATTN_OK;
    dashattn_status st = ctx->iface.alloc(ctx->state, ws->size, &ws->ptr);
    if (st != DASHATTN_OK || !ws->ptr)
        return da_fail(st == DASHATTN_OK ? DASHATTN_ERR_OUT_OF_MEMORY : st,
                       "%s: cannot allocate %zu bytes of workspace", fn, ws->size);
    ws->owned = 1;
    return DASHATTN_OK;
}

static void workspace_release(dashattn_context *ctx, workspace *ws)
{
    if (ws->owned)
        ctx->iface.free(ctx->state, ws->ptr);
}

/* A backend that fails must say why; make sure the message is never empty. */
static dashattn_status backend_result(const char *fn, const dashattn_context *ctx,
                                      dashattn_status st)
{
    if (st != DASHATTN_OK && !dashattn_last_error()[0])
        da_set_error("%s: backend %s failed: %s", fn, ctx->name, dashattn_status_string(st));
    return st;
}

static dashattn_status unsupported(const char *fn, const dashattn_context *ctx)
{
    return da_fail(DASHATTN_ERR_UNSUPPORTED, "%s: backend %s does not implement this operation", fn,
                   ctx->name);
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        dashattn_status check_status_ = (expr);                                                    \
        if (check_status_ != DASHATTN_OK)                                                          \
            return check_status_;                                                                  \
    } while (0)

static da_shape q_shape(const dashattn_problem *p)
{
    return (da_shape){{p->batch, p->heads_q, p->len_q, p->head_dim}};
}

static da_shape kv_shape(const dashattn_problem *p)
{
    return (da_shape){{p->batch, p->heads_kv, p->len_k, p->head_dim}};
}

/* q, k and v as the plan describes them; shared by forward and backward. */
static dashattn_status check_qkv(const char *fn, const dashattn_problem *p,
                                 const dashattn_tensor *q, const dashattn_tensor *k,
                                 const dashattn_tensor *v)
{
    CHECK(da_check_tensor(fn, "q", q, p->dtype, q_shape(p), DA_INPUT));
    CHECK(da_check_tensor(fn, "k", k, p->dtype, kv_shape(p), DA_INPUT));
    return da_check_tensor(fn, "v", v, p->dtype, kv_shape(p), DA_INPUT);
}

/* The learned summary vectors h, or their gradient: f32 [1, Hkv, 1, D]. */
static dashattn_status check_summary(const char *fn, const char *name, const dashattn_problem *p,
                                     const dashattn_tensor *h, da_access access)
{
    if (!h)
        return DASHATTN_OK;
    const da_shape shape = {{1, p->heads_kv, 1, p->head_dim}};
    return da_check_tensor(fn, name, h, DASHATTN_F32, shape, access);
}

DASHATTN_API dashattn_status dashattn_forward(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_tensor *q,
    const dashattn_tensor *k, const dashattn_tensor *v, const dashattn_tensor *block_summary,
    const dashattn_tensor *out, float *lse, const dashattn_selection *selection,
    dashattn_forward_stats *stats, void *workspace_ptr, size_t workspace_size, void *stream)
{
    static const char fn[] = "dashattn_forward";
    da_clear_error();
    CHECK(da_check_call(fn, context, plan));
    const dashattn_problem *p = &plan->desc.problem;
    CHECK(check_qkv(fn, p, q, k, v));
    CHECK(check_summary(fn, "block_summary", p, block_summary, DA_INPUT));
    CHECK(da_check_tensor(fn, "out", out, p->dtype, q_shape(p), DA_OUTPUT));
    CHECK(da_check_selection(fn, plan, selection));
    workspace ws;
    CHECK(workspace_acquire(fn, context, plan, DASHATTN_OP_FORWARD, workspace_ptr, workspace_size,
                            &ws));
    const dashattn_forward_args args = {q,     k,      v,       out,    lse,          selection,
                                        stats, ws.ptr, ws.size, stream, block_summary};
    dashattn_status st = context->iface.forward(context->state, &plan->desc, &args);
    workspace_release(context, &ws);
    return backend_result(fn, context, st);
}

DASHATTN_API dashattn_status dashattn_backward(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_tensor *q,
    const dashattn_tensor *k, const dashattn_tensor *v, const dashattn_tensor *block_summary,
    const dashattn_tensor *out, const float *lse, const dashattn_tensor *dout,
    const dashattn_tensor *dq, const dashattn_tensor *dk, const dashattn_tensor *dv,
    const dashattn_tensor *dh, void *workspace_ptr, size_t workspace_size, void *stream)
{
    static const char fn[] = "dashattn_backward";
    da_clear_error();
    CHECK(da_check_call(fn, context, plan));
    const dashattn_problem *p = &plan->desc.problem;
    CHECK(check_qkv(fn, p, q, k, v));
    CHECK(check_summary(fn, "block_summary", p, block_summary, DA_INPUT));
    if (dh && !block_summary)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: dh is given without a block_summary (mean pooling has no h)", fn);
    CHECK(check_summary(fn, "dh", p, dh, DA_OUTPUT));
    CHECK(da_check_tensor(fn, "out", out, p->dtype, q_shape(p), DA_INPUT));
    if (!lse)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT,
                       "%s: lse is NULL (pass the forward's logsumexp)", fn);
    CHECK(da_check_tensor(fn, "dout", dout, p->dtype, q_shape(p), DA_INPUT));
    CHECK(da_check_tensor(fn, "dq", dq, p->dtype, q_shape(p), DA_OUTPUT));
    CHECK(da_check_tensor(fn, "dk", dk, p->dtype, kv_shape(p), DA_OUTPUT));
    CHECK(da_check_tensor(fn, "dv", dv, p->dtype, kv_shape(p), DA_OUTPUT));
    if (!context->iface.backward)
        return unsupported(fn, context);
    workspace ws;
    CHECK(workspace_acquire(fn, context, plan, DASHATTN_OP_BACKWARD, workspace_ptr, workspace_size,
                            &ws));
    const dashattn_backward_args args = {q,  k,  v,      out,     lse,    dout,          dq,
                                         dk, dv, ws.ptr, ws.size, stream, block_summary, dh};
    dashattn_status st = context->iface.backward(context->state, &plan->desc, &args);
    workspace_release(context, &ws);
    return backend_result(fn, context, st);
}

DASHATTN_API dashattn_status dashattn_cache_append(
    dashattn_context *context, const dashattn_plan *plan, const dashattn_kv_cache *cache,
    const dashattn_tensor *k_new, const dashattn_tensor *v_new,
    const dashattn_tensor *block_summary, void *stream)
{
    static const char fn[] = "dashattn_cache_append";
    da_clear_error();
    CHECK(da_check_call(fn, context, plan));
    CHECK(da_check_cache(fn, plan, cache));
    const dashattn_problem *p = &plan->desc.problem;
    if (!k_new)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: k_new is NULL", fn);
    const int64_t tokens = k_new->shape[2];
    if (tokens < 1)
        return da_fail(DASHATTN_ERR_INVALID_ARGUMENT, "%s: k_new holds %lld tokens, must be >= 1",
                       fn, (long long)tokens);
    const da_shape shape = {{p->batch, p->heads_kv, tokens, p->head_dim}};
    CHECK(da_check_tensor(fn, "k_new", k_new, p->dtype, shape, DA_INPUT));
    CHECK(da_check_tensor(fn, "v_new", v_new, p->dtype, shape, DA_INPUT));
    CHECK(check_summary(fn, "block_summary", p, block_summary, DA_INPUT));
    if (!context->iface.cache_append)
        return unsupported(fn, context);
    const dashattn_append_args args = {cache, k_new, v_new, stream, block_summary};
    return backend_result(fn, context,
                          context->iface.cache_append(context->state, &plan->desc, &args));
}

DASHATTN_API dashattn_status dashattn_decode(dashattn_context *context, const dashattn_plan *plan,
                                             const dashattn_tensor *q,
                                             const dashattn_kv_cache *cache,
                                             const dashattn_tensor *out, float *lse,
                                             void *workspace_ptr, size_t workspace_size,
                                             void *stream)
{
    static const char fn[] = "dashattn_decode";
    da_clear_error();
    CHECK(da_check_call(fn, context, plan));
    CHECK(da_check_cache(fn, plan, cache));
    const dashattn_problem *p = &plan->desc.problem;
    CHECK(da_check_tensor(fn, "q", q, p->dtype, q_shape(p), DA_INPUT));
    CHECK(da_check_tensor(fn, "out", out, p->dtype, q_shape(p), DA_OUTPUT));
    if (!context->iface.decode)
        return unsupported(fn, context);
    workspace ws;
    CHECK(workspace_acquire(fn, context, plan, DASHATTN_OP_DECODE, workspace_ptr, workspace_size,
                            &ws));
    const dashattn_decode_args args = {q, cache, out, lse, ws.ptr, ws.size, stream};
    dashattn_status st = context->iface.decode(context->state, &plan->desc, &args);
    workspace_release(context, &ws);
    return backend_result(fn, context, st);
}
