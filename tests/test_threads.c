/* SPDX-License-Identifier: MIT */
/*
 * One context and one plan shared by several threads (the API says both are
 * immutable and shareable): each thread runs forward repeatedly on its own
 * inputs, half of them with a NULL workspace and half with a private one, and
 * every result must equal, bit for bit, the single-threaded result for the
 * same inputs. Also checks that last-error messages are per thread.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dashattn.h>

#include "testutil.h"

enum { THREADS = 4, REPEATS = 10 };
enum { B = 1, HQ = 4, HKV = 2, N = 128, D = 32, S = 16 };

static const size_t q_elems = (size_t)B * HQ * N * D;
static const size_t kv_elems = (size_t)B * HKV * N * D;
static const size_t rows = (size_t)B * HQ * N;

typedef struct worker {
    int id;
    dashattn_context *ctx;
    const dashattn_plan *plan;
    float *q, *k, *v;
    float *ref_out, *ref_lse;
    /* Results, checked by the main thread (the check helpers are not thread-safe). */
    int calls_failed;
    int mismatches;
    char first_error[256];
} worker;

static dashattn_status forward_into(const worker *w, float *out, float *lse, void *ws,
                                    size_t ws_size)
{
    dashattn_tensor tq = dashattn_tensor_bhsd(w->q, DASHATTN_F32, B, HQ, N, D);
    dashattn_tensor tk = dashattn_tensor_bhsd(w->k, DASHATTN_F32, B, HKV, N, D);
    dashattn_tensor tv = dashattn_tensor_bhsd(w->v, DASHATTN_F32, B, HKV, N, D);
    dashattn_tensor to = dashattn_tensor_bhsd(out, DASHATTN_F32, B, HQ, N, D);
    return dashattn_forward(w->ctx, w->plan, &tq, &tk, &tv, NULL, &to, lse, NULL, NULL, ws, ws_size,
                            NULL);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    float *out = malloc(q_elems * sizeof(float));
    float *lse = malloc(rows * sizeof(float));
    size_t ws_size = w->id % 2 == 0 ? 0 : dashattn_plan_workspace_size(w->plan);
    void *ws = ws_size > 0 ? malloc(ws_size) : NULL;
    if (out == NULL || lse == NULL || (ws_size > 0 && ws == NULL)) {
        w->calls_failed = REPEATS;
        snprintf(w->first_error, sizeof(w->first_error), "out of memory in the test");
    } else {
        for (int r = 0; r < REPEATS; r++) {
            memset(out, 0xff, q_elems * sizeof(float));
            dashattn_status st = forward_into(w, out, lse, ws, ws_size);
            if (st != DASHATTN_OK) {
                if (w->calls_failed++ == 0)
                    snprintf(w->first_error, sizeof(w->first_error), "%s", dashattn_last_error());
                continue;
            }
            if (memcmp(out, w->ref_out, q_elems * sizeof(float)) != 0 ||
                memcmp(lse, w->ref_lse, rows * sizeof(float)) != 0)
                w->mismatches++;
        }
    }
    free(ws);
    free(lse);
    free(out);
    return NULL;
}

static void check_shared_forward(dashattn_context *ctx, const dashattn_plan *plan)
{
    worker w[THREADS];
    pthread_t tid[THREADS];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < THREADS; i++) {
        w[i].id = i;
        w[i].ctx = ctx;
        w[i].plan = plan;
        w[i].q = tu_random_floats(100 + 3 * (uint64_t)i, q_elems, 1.0);
        w[i].k = tu_random_floats(101 + 3 * (uint64_t)i, kv_elems, 1.0);
        w[i].v = tu_random_floats(102 + 3 * (uint64_t)i, kv_elems, 1.0);
        w[i].ref_out = tu_xcalloc(q_elems, sizeof(float));
        w[i].ref_lse = tu_xcalloc(rows, sizeof(float));
        dashattn_status st = forward_into(&w[i], w[i].ref_out, w[i].ref_lse, NULL, 0);
        TU_CHECK(st == DASHATTN_OK, "reference forward %d: %s", i, dashattn_last_error());
    }
    /* Distinct inputs must give distinct outputs, or the comparison below proves little. */
    TU_CHECK(memcmp(w[0].ref_out, w[1].ref_out, q_elems * sizeof(float)) != 0,
             "threads' inputs give different results");

    int started[THREADS];
    for (int i = 0; i < THREADS; i++) {
        started[i] = pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0;
        TU_CHECK(started[i], "pthread_create %d", i);
    }
    for (int i = 0; i < THREADS; i++)
        if (started[i])
            pthread_join(tid[i], NULL);

    for (int i = 0; i < THREADS; i++) {
        TU_CHECK(w[i].calls_failed == 0, "thread %d: %d of %d calls failed (first: %s)", i,
                 w[i].calls_failed, REPEATS, w[i].first_error);
        TU_CHECK(w[i].mismatches == 0, "thread %d: %d of %d results differ from the serial run", i,
                 w[i].mismatches, REPEATS);
        free(w[i].q);
        free(w[i].k);
        free(w[i].v);
        free(w[i].ref_out);
        free(w[i].ref_lse);
    }
}

/* Thread A fails, then B checks that it does not see A's message, fails
 * differently, and A checks that its own message survived B's failure. */
typedef struct error_pair {
    dashattn_context *ctx;
    pthread_barrier_t a_failed, b_failed;
    char a_before[256], a_after[256];
    char b_clean[256], b_own[256];
    dashattn_status a_status, b_ok_status, b_status;
} error_pair;

static dashattn_status bad_plan(dashattn_context *ctx, int which)
{
    dashattn_problem p;
    dashattn_plan *plan = NULL;
    dashattn_problem_init(&p, 1, 1, 1, 8, 8, 4);
    if (which == 0)
        p.alpha = 7.0;
    else
        p.block_size = 0;
    dashattn_status st = dashattn_plan_create(ctx, &p, &plan);
    if (st == DASHATTN_OK)
        dashattn_plan_destroy(plan);
    return st;
}

static dashattn_status good_plan(dashattn_context *ctx)
{
    dashattn_problem p;
    dashattn_plan *plan = NULL;
    dashattn_problem_init(&p, 1, 1, 1, 8, 8, 4);
    dashattn_status st = dashattn_plan_create(ctx, &p, &plan);
    if (st == DASHATTN_OK)
        dashattn_plan_destroy(plan);
    return st;
}

static void *thread_a(void *arg)
{
    error_pair *e = arg;
    e->a_status = bad_plan(e->ctx, 0);
    snprintf(e->a_before, sizeof(e->a_before), "%s", dashattn_last_error());
    pthread_barrier_wait(&e->a_failed);
    pthread_barrier_wait(&e->b_failed);
    snprintf(e->a_after, sizeof(e->a_after), "%s", dashattn_last_error());
    return NULL;
}

static void *thread_b(void *arg)
{
    error_pair *e = arg;
    e->b_ok_status = good_plan(e->ctx);
    pthread_barrier_wait(&e->a_failed);
    snprintf(e->b_clean, sizeof(e->b_clean), "%s", dashattn_last_error());
    e->b_status = bad_plan(e->ctx, 1);
    snprintf(e->b_own, sizeof(e->b_own), "%s", dashattn_last_error());
    pthread_barrier_wait(&e->b_failed);
    return NULL;
}

static void check_error_isolation(dashattn_context *ctx)
{
    static error_pair e;
    pthread_t a, b;
    e.ctx = ctx;
    pthread_barrier_init(&e.a_failed, NULL, 2);
    pthread_barrier_init(&e.b_failed, NULL, 2);
    int ok_a = pthread_create(&a, NULL, thread_a, &e) == 0;
    int ok_b = ok_a && pthread_create(&b, NULL, thread_b, &e) == 0;
    TU_CHECK(ok_a && ok_b, "pthread_create for the error threads");
    if (!ok_a || !ok_b) {
        /* A waits on a barrier nobody else will reach; the test is failed already. */
        return;
    }
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&e.a_failed);
    pthread_barrier_destroy(&e.b_failed);

    TU_CHECK(e.a_status == DASHATTN_ERR_INVALID_ARGUMENT, "thread A's bad alpha fails (%d)",
             (int)e.a_status);
    TU_CHECK(strstr(e.a_before, "alpha") != NULL, "thread A's message names alpha: '%s'",
             e.a_before);
    TU_CHECK(e.b_ok_status == DASHATTN_OK, "thread B's valid plan succeeds (%d)",
             (int)e.b_ok_status);
    TU_CHECK(e.b_clean[0] == '\0', "thread B does not see thread A's message: '%s'", e.b_clean);
    TU_CHECK(e.b_status == DASHATTN_ERR_INVALID_ARGUMENT, "thread B's bad block_size fails (%d)",
             (int)e.b_status);
    TU_CHECK(strstr(e.b_own, "block_size") != NULL && strstr(e.b_own, "alpha") == NULL,
             "thread B's message is its own: '%s'", e.b_own);
    TU_CHECK(strcmp(e.a_after, e.a_before) == 0,
             "thread A's message survives thread B's failure: '%s' then '%s'", e.a_before,
             e.a_after);
}

int main(void)
{
    dashattn_context_options opt;
    dashattn_context *ctx = NULL;
    dashattn_plan *plan = NULL;
    dashattn_problem p;
    dashattn_context_options_init(&opt);
    opt.backend = "cpu";
    opt.num_threads = 2;
    dashattn_status st = dashattn_context_create(&opt, &ctx);
    TU_CHECK(st == DASHATTN_OK, "context: %s", dashattn_last_error());
    if (st != DASHATTN_OK)
        return tu_finish("test_threads");
    dashattn_problem_init(&p, B, HQ, HKV, N, N, D);
    p.block_size = S;
    st = dashattn_plan_create(ctx, &p, &plan);
    TU_CHECK(st == DASHATTN_OK, "plan: %s", dashattn_last_error());
    if (st == DASHATTN_OK) {
        check_shared_forward(ctx, plan);
        dashattn_plan_destroy(plan);
    }
    check_error_isolation(ctx);
    dashattn_context_destroy(ctx);
    return tu_finish("test_threads");
}
