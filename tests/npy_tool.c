/* SPDX-License-Identifier: MIT */
/* Helper of tests/test_cli.sh, so the shell test needs no Python:
 *   npy_tool random OUT SEED SCALE D0 [D1 ...]   N(0, SCALE^2) float32 array
 *   npy_tool raw OUT DESCR FORTRAN SHAPE NBYTES  a header with any field text
 *                                                 and NBYTES zero bytes of data
 *   npy_tool dense Q K V CAUSAL SCALE OUT LSE      dense attention in double
 *   npy_tool densegrad Q K V DO CAUSAL SCALE DQ DK DV   its gradients
 *   npy_tool compare A B TOL                      ||A - B|| <= TOL ||B||, same shape
 *   npy_tool json-get KEY.PATH < JSON             validate JSON, print a value
 * SCALE 0 means 1/sqrt(D). Exit status 0 ok, 1 check failed, 2 bad usage. */
#include "npy.h"
#include "outputs.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *msg, const char *arg)
{
    fprintf(stderr, "npy_tool: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int load(const char *path, da_npy_array *a)
{
    char err[256];
    if (da_npy_read(path, a, err, sizeof err) != 0) {
        fprintf(stderr, "npy_tool: %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static int save(const char *path, const float *data, int ndim, const int64_t *shape)
{
    char err[256];
    if (da_npy_write(path, data, ndim, shape, err, sizeof err) != 0) {
        fprintf(stderr, "npy_tool: %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static int cmd_random(int argc, char **argv)
{
    if (argc < 5 || argc - 4 > DA_NPY_MAX_DIMS)
        return fail("usage: random OUT SEED SCALE D0 [D1 ...]", NULL);
    int64_t shape[DA_NPY_MAX_DIMS];
    size_t count = 1;
    for (int i = 4; i < argc; i++) {
        shape[i - 4] = atoll(argv[i]);
        count *= (size_t)shape[i - 4];
    }
    float *x = tu_random_floats(strtoull(argv[2], NULL, 10), count, atof(argv[3]));
    const int rc = save(argv[1], x, argc - 4, shape);
    free(x);
    return rc ? 2 : 0;
}

static int cmd_raw(int argc, char **argv)
{
    if (argc != 6)
        return fail("usage: raw OUT DESCR FORTRAN SHAPE NBYTES", NULL);
    char header[1024];
    int n = snprintf(header, sizeof header, "{'descr': %s, 'fortran_order': %s, 'shape': %s, }",
                     argv[2], argv[3], argv[4]);
    if (n < 0 || n > 900)
        return fail("header too long", NULL);
    while ((10 + n + 1) % 64 != 0)
        header[n++] = ' ';
    header[n++] = '\n';
    FILE *f = fopen(argv[1], "wb");
    if (f == NULL)
        return fail("cannot create", argv[1]);
    const unsigned char prefix[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(n & 0xff), (unsigned char)(n >> 8)};
    fwrite(prefix, 1, 10, f);
    fwrite(header, 1, (size_t)n, f);
    for (long i = atol(argv[5]); i > 0; i--)
        fputc(0, f);
    return fclose(f) == 0 ? 0 : 2;
}

/* Dense reference: shapes [B, H, N, D]; query row i at position i + Nk - Nq. */
typedef struct dense_problem {
    da_npy_array q, k, v;
    int64_t b, hq, hkv, nq, nk, d;
    int causal;
    double scale;
} dense_problem;

static int load_problem(char **argv, dense_problem *p)
{
    if (load(argv[0], &p->q) || load(argv[1], &p->k) || load(argv[2], &p->v))
        return -1;
    if (p->q.ndim != 4 || p->k.ndim != 4 || p->v.ndim != 4) {
        fail("arrays must be 4-D", NULL);
        return -1;
    }
    p->b = p->q.shape[0];
    p->hq = p->q.shape[1];
    p->nq = p->q.shape[2];
    p->d = p->q.shape[3];
    p->hkv = p->k.shape[1];
    p->nk = p->k.shape[2];
    p->causal = atoi(argv[3]);
    p->scale = atof(argv[4]);
    if (p->scale == 0.0)
        p->scale = 1.0 / sqrt((double)p->d);
    return 0;
}

static void free_problem(dense_problem *p)
{
    da_npy_free(&p->q);
    da_npy_free(&p->k);
    da_npy_free(&p->v);
}

static const float *row(const da_npy_array *a, int64_t b, int64_t h, int64_t i)
{
    return a->data + ((b * a->shape[1] + h) * a->shape[2] + i) * a->shape[3];
}

/* Softmax weights of one query row over its visible keys; returns the lse
 * and the number of visible keys. */
static double row_softmax(const dense_problem *p, int64_t b, int64_t h, int64_t i, double *a,
                          int64_t *visible)
{
    const int64_t g = h / (p->hq / p->hkv);
    const int64_t end = p->causal ? i + (p->nk - p->nq) + 1 : p->nk;
    const float *q = row(&p->q, b, h, i);
    double mx = -INFINITY;
    for (int64_t t = 0; t < end; t++) {
        const float *k = row(&p->k, b, g, t);
        double s = 0.0;
        for (int64_t d = 0; d < p->d; d++)
            s += (double)q[d] * k[d];
        a[t] = s * p->scale;
        mx = fmax(mx, a[t]);
    }
    double sum = 0.0;
    for (int64_t t = 0; t < end; t++)
        sum += (a[t] = exp(a[t] - mx));
    for (int64_t t = 0; t < end; t++)
        a[t] /= sum;
    *visible = end;
    return mx + log(sum);
}

static int cmd_dense(int argc, char **argv)
{
    if (argc != 8)
        return fail("usage: dense Q K V CAUSAL SCALE OUT LSE", NULL);
    dense_problem p;
    memset(&p, 0, sizeof p);
    if (load_problem(argv + 1, &p)) {
        free_problem(&p);
        return 2;
    }
    float *out = tu_xcalloc(p.q.count, sizeof(float));
    float *lse = tu_xcalloc((size_t)(p.b * p.hq * p.nq), sizeof(float));
    double *a = tu_xcalloc((size_t)p.nk, sizeof(double));
    for (int64_t b = 0; b < p.b; b++)
        for (int64_t h = 0; h < p.hq; h++)
            for (int64_t i = 0; i < p.nq; i++) {
                int64_t end;
                lse[(b * p.hq + h) * p.nq + i] = (float)row_softmax(&p, b, h, i, a, &end);
                float *o = out + (row(&p.q, b, h, i) - p.q.data);
                for (int64_t d = 0; d < p.d; d++) {
                    double acc = 0.0;
                    for (int64_t t = 0; t < end; t++)
                        acc += a[t] * row(&p.v, b, h / (p.hq / p.hkv), t)[d];
                    o[d] = (float)acc;
                }
            }
    const int rc = save(argv[6], out, 4, p.q.shape) || save(argv[7], lse, 3, p.q.shape);
    free(out);
    free(lse);
    free(a);
    free_problem(&p);
    return rc ? 2 : 0;
}

static int cmd_densegrad(int argc, char **argv)
{
    if (argc != 10)
        return fail("usage: densegrad Q K V DO CAUSAL SCALE DQ DK DV", NULL);
    dense_problem p;
    memset(&p, 0, sizeof p);
    char *pargv[5] = {argv[1], argv[2], argv[3], argv[5], argv[6]};
    da_npy_array dout;
    memset(&dout, 0, sizeof dout);
    if (load_problem(pargv, &p) || load(argv[4], &dout)) {
        free_problem(&p);
        da_npy_free(&dout);
        return 2;
    }
    double *dq = tu_xcalloc(p.q.count, sizeof(double));
    double *dk = tu_xcalloc(p.k.count, sizeof(double));
    double *dv = tu_xcalloc(p.v.count, sizeof(double));
    double *a = tu_xcalloc((size_t)p.nk, sizeof(double));
    double *o = tu_xcalloc((size_t)p.d, sizeof(double));
    const int64_t group = p.hq / p.hkv;
    for (int64_t b = 0; b < p.b; b++)
        for (int64_t h = 0; h < p.hq; h++)
            for (int64_t i = 0; i < p.nq; i++) {
                int64_t end;
                row_softmax(&p, b, h, i, a, &end);
                const int64_t g = h / group;
                const float *q = row(&p.q, b, h, i), *dO = row(&dout, b, h, i);
                const size_t qoff = (size_t)(q - p.q.data);
                for (int64_t d = 0; d < p.d; d++) {
                    o[d] = 0.0;
                    for (int64_t t = 0; t < end; t++)
                        o[d] += a[t] * row(&p.v, b, g, t)[d];
                }
                double delta = 0.0;
                for (int64_t d = 0; d < p.d; d++)
                    delta += (double)dO[d] * o[d];
                for (int64_t t = 0; t < end; t++) {
                    const float *k = row(&p.k, b, g, t), *v = row(&p.v, b, g, t);
                    const size_t koff = (size_t)(k - p.k.data);
                    double dp = 0.0;
                    for (int64_t d = 0; d < p.d; d++)
                        dp += (double)dO[d] * v[d];
                    const double dl = a[t] * (dp - delta) * p.scale;
                    for (int64_t d = 0; d < p.d; d++) {
                        dq[qoff + (size_t)d] += dl * k[d];
                        dk[koff + (size_t)d] += dl * q[d];
                        dv[koff + (size_t)d] += a[t] * dO[d];
                    }
                }
            }
    float *f = tu_xcalloc(p.q.count > p.k.count ? p.q.count : p.k.count, sizeof(float));
    int rc = 0;
    for (size_t i = 0; i < p.q.count; i++)
        f[i] = (float)dq[i];
    rc |= save(argv[7], f, 4, p.q.shape);
    for (size_t i = 0; i < p.k.count; i++)
        f[i] = (float)dk[i];
    rc |= save(argv[8], f, 4, p.k.shape);
    for (size_t i = 0; i < p.v.count; i++)
        f[i] = (float)dv[i];
    rc |= save(argv[9], f, 4, p.v.shape);
    free(f);
    free(dq);
    free(dk);
    free(dv);
    free(a);
    free(o);
    free_problem(&p);
    da_npy_free(&dout);
    return rc ? 2 : 0;
}

static int compare_arrays(const char *name_a, const da_npy_array *a, const char *name_b,
                          const da_npy_array *b, double tol)
{
    if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) != 0) {
        fprintf(stderr, "npy_tool: %s and %s differ in shape\n", name_a, name_b);
        return 1;
    }
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < a->count; i++) {
        const double d = (double)a->data[i] - b->data[i];
        num += d * d;
        den += (double)b->data[i] * b->data[i];
    }
    const double err = sqrt(num) / fmax(sqrt(den), 1e-30);
    printf("relative error %.3g (tolerance %.3g)\n", err, tol);
    /* NaN anywhere makes err NaN, and NaN <= tol is false. */
    return err <= tol ? 0 : 1;
}

static int cmd_compare(int argc, char **argv)
{
    if (argc != 4)
        return fail("usage: compare A B TOL", NULL);
    da_npy_array a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int rc = 2;
    if (load(argv[1], &a) == 0 && load(argv[2], &b) == 0)
        rc = compare_arrays(argv[1], &a, argv[2], &b, atof(argv[3]));
    da_npy_free(&a);
    da_npy_free(&b);
    return rc;
}

/* ---- json-get: a strict JSON parser that remembers one value's text ---- */

typedef struct json {
    const char *p, *end;
    const char *want;  /* dotted path of the value to print */
    const char *found; /* its text, once seen */
    size_t found_len;
    char path[256];
} json;

static void json_ws(json *j)
{
    while (j->p < j->end && strchr(" \t\r\n", *j->p) && *j->p)
        j->p++;
}

static int json_value(json *j);

static int json_string(json *j, const char **s, size_t *n)
{
    if (j->p >= j->end || *j->p != '"')
        return -1;
    const char *start = ++j->p;
    while (j->p < j->end && *j->p != '"') {
        if ((unsigned char)*j->p < 0x20)
            return -1;
        if (*j->p == '\\') {
            j->p++;
            if (j->p >= j->end || !strchr("\"\\/bfnrtu", *j->p))
                return -1;
        }
        j->p++;
    }
    if (j->p >= j->end)
        return -1;
    *s = start;
    *n = (size_t)(j->p - start);
    j->p++;
    return 0;
}

static int json_number(json *j)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    const char *digits = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    if (j->p == digits || (*digits == '0' && j->p - digits > 1))
        return -1;
    if (j->p < j->end && *j->p == '.') {
        digits = ++j->p;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
        if (j->p == digits)
            return -1;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        digits = j->p;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
        if (j->p == digits)
            return -1;
    }
    return j->p > s ? 0 : -1;
}

/* An object (close '}') or array (close ']'): values separated by commas,
 * each one's path the container's extended by its key or index. */
static int json_container(json *j, char close)
{
    j->p++;
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    const size_t base = strlen(j->path);
    const char *sep = base ? "." : "";
    for (int index = 0;; index++) {
        if (close == '}') {
            const char *key;
            size_t n;
            json_ws(j);
            if (json_string(j, &key, &n) != 0)
                return -1;
            json_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return -1;
            snprintf(j->path + base, sizeof j->path - base, "%s%.*s", sep, (int)n, key);
        } else {
            snprintf(j->path + base, sizeof j->path - base, "%s%d", sep, index);
        }
        if (json_value(j) != 0)
            return -1;
        j->path[base] = '\0';
        json_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        return -1;
    }
}

static int json_value(json *j)
{
    json_ws(j);
    if (j->p >= j->end)
        return -1;
    const char *start = j->p;
    int rc;
    const char *s;
    size_t n;
    if (*j->p == '{')
        rc = json_container(j, '}');
    else if (*j->p == '[')
        rc = json_container(j, ']');
    else if (*j->p == '"')
        rc = json_string(j, &s, &n);
    else if (j->end - j->p >= 4 && (!strncmp(j->p, "true", 4) || !strncmp(j->p, "null", 4)))
        rc = (j->p += 4, 0);
    else if (j->end - j->p >= 5 && !strncmp(j->p, "false", 5))
        rc = (j->p += 5, 0);
    else
        rc = json_number(j);
    if (rc == 0 && strcmp(j->path, j->want) == 0) {
        j->found = start;
        j->found_len = (size_t)(j->p - start);
        if (*start == '"') {
            j->found++;
            j->found_len -= 2;
        }
    }
    return rc;
}

static int cmd_json_get(int argc, char **argv)
{
    if (argc != 2)
        return fail("usage: json-get KEY.PATH < JSON", NULL);
    static char text[1 << 20];
    const size_t n = fread(text, 1, sizeof text - 1, stdin);
    json j = {text, text + n, argv[1], NULL, 0, ""};
    json_ws(&j);
    if (j.p >= j.end || *j.p != '{' || json_value(&j) != 0) {
        fprintf(stderr, "npy_tool: invalid JSON near offset %ld\n", (long)(j.p - text));
        return 1;
    }
    json_ws(&j);
    if (j.p != j.end) {
        fprintf(stderr, "npy_tool: text after the JSON value\n");
        return 1;
    }
    if (j.found == NULL) {
        fprintf(stderr, "npy_tool: no key '%s' in the JSON\n", argv[1]);
        return 1;
    }
    printf("%.*s\n", (int)j.found_len, j.found);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {{"random", cmd_random},       {"raw", cmd_raw},         {"dense", cmd_dense},
                {"densegrad", cmd_densegrad}, {"compare", cmd_compare}, {"json-get", cmd_json_get}};
    for (size_t i = 0; argc > 1 && i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].run(argc - 1, argv + 1);
    return fail("usage: npy_tool random|raw|dense|densegrad|compare|json-get ...", NULL);
}
