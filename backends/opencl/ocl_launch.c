/* SPDX-License-Identifier: MIT */
/* Setting a kernel's arguments in order and enqueueing it. Kernels are
 * created per call: a cl_kernel holds its arguments, so one shared between
 * threads would race. */
#include "ocl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

dashattn_status daocl_call_begin(daocl_call *call, const daocl_state *st, cl_program program,
                                 const char *name)
{
    cl_int err;
    memset(call, 0, sizeof *call);
    call->name = name;
    call->fp64 = st->lim.fp64;
    call->kernel = clCreateKernel(program, name, &err);
    if (!call->kernel) {
        char what[120];
        snprintf(what, sizeof what, "clCreateKernel(%s)", name);
        return daocl_fail_cl(err, what);
    }
    return DASHATTN_OK;
}

static void set(daocl_call *call, size_t size, const void *value)
{
    if (call->err == CL_SUCCESS)
        call->err = clSetKernelArg(call->kernel, call->next, size, value);
    call->next++;
}

void daocl_arg_mem(daocl_call *call, const void *mem)
{
    const cl_mem m = (cl_mem)(void *)(uintptr_t)mem;
    set(call, sizeof m, &m);
}

void daocl_arg_int(daocl_call *call, int64_t value)
{
    const cl_int v = (cl_int)value;
    set(call, sizeof v, &v);
}

void daocl_arg_long(daocl_call *call, int64_t value)
{
    const cl_long v = (cl_long)value;
    set(call, sizeof v, &v);
}

void daocl_arg_float(daocl_call *call, double value)
{
    const cl_float v = (cl_float)value;
    set(call, sizeof v, &v);
}

void daocl_arg_real(daocl_call *call, double value)
{
    if (call->fp64) {
        const cl_double v = value;
        set(call, sizeof v, &v);
    } else {
        daocl_arg_float(call, value);
    }
}

void daocl_arg_strides(daocl_call *call, const dashattn_tensor *t)
{
    cl_long4 v;
    for (int i = 0; i < 4; i++)
        v.s[i] = (cl_long)t->strides[i];
    set(call, sizeof v, &v);
}

void daocl_arg_layout(daocl_call *call, const dashattn_plan_desc *plan)
{
    const dashattn_problem *p = &plan->problem;
    cl_int8 v;
    memset(&v, 0, sizeof v);
    v.s[0] = p->causal;
    v.s[1] = (cl_int)p->block_size;
    v.s[2] = (cl_int)p->n_sink;
    v.s[3] = (cl_int)p->n_local;
    set(call, sizeof v, &v);
}

dashattn_status daocl_launch(daocl_call *call, cl_command_queue queue, cl_uint dims,
                             const size_t *global, const size_t *local)
{
    /* Never let the driver pick: PoCL 3.1 crashes on some of the large
     * work-groups it picks itself. 64 along the first dimension otherwise. */
    static const size_t flat[3] = {64, 1, 1};
    if (!local)
        local = flat;
    char what[160];
    dashattn_status status = DASHATTN_OK;
    size_t g[3];
    int empty = 0;
    for (cl_uint i = 0; i < dims; i++) {
        g[i] = global[i];
        if (local && local[i] > 0)
            g[i] = (g[i] + local[i] - 1) / local[i] * local[i];
        empty |= g[i] == 0;
    }
    if (call->err != CL_SUCCESS) {
        snprintf(what, sizeof what, "setting argument %u of %s", call->next, call->name);
        status = daocl_fail_cl(call->err, what);
    } else if (!empty) {
        /* DASHATTN_OPENCL_PROFILE=1: wait for each kernel and print its time. */
        const char *profile = getenv("DASHATTN_OPENCL_PROFILE");
        struct timespec t0, t1;
        if (profile && profile[0] == '1') {
            clFinish(queue);
            clock_gettime(CLOCK_MONOTONIC, &t0);
        }
        cl_int err =
            clEnqueueNDRangeKernel(queue, call->kernel, dims, NULL, g, local, 0, NULL, NULL);
        if (profile && profile[0] == '1' && err == CL_SUCCESS) {
            err = clFinish(queue);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            fprintf(stderr, "dashattn-opencl: %-18s %10.3f ms\n", call->name,
                    (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
                        (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
        }
        if (err != CL_SUCCESS) {
            snprintf(what, sizeof what, "launching %s", call->name);
            status = daocl_fail_cl(err, what);
        }
    }
    clReleaseKernel(call->kernel);
    call->kernel = NULL;
    return status;
}
