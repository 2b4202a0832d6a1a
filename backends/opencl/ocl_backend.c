/* SPDX-License-Identifier: MIT */
/* The OpenCL backend plugin (dashattn-opencl.so): its table, contexts,
 * memory and errors. */
#include "ocl_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const dashattn_host *daocl_host;

const char *daocl_error_name(cl_int err)
{
    switch (err) {
#define NAME(x)                                                                                    \
    case x:                                                                                        \
        return #x
        NAME(CL_SUCCESS);
        NAME(CL_DEVICE_NOT_FOUND);
        NAME(CL_DEVICE_NOT_AVAILABLE);
        NAME(CL_COMPILER_NOT_AVAILABLE);
        NAME(CL_MEM_OBJECT_ALLOCATION_FAILURE);
        NAME(CL_OUT_OF_RESOURCES);
        NAME(CL_OUT_OF_HOST_MEMORY);
        NAME(CL_BUILD_PROGRAM_FAILURE);
        NAME(CL_INVALID_VALUE);
        NAME(CL_INVALID_PLATFORM);
        NAME(CL_INVALID_DEVICE);
        NAME(CL_INVALID_CONTEXT);
        NAME(CL_INVALID_COMMAND_QUEUE);
        NAME(CL_INVALID_MEM_OBJECT);
        NAME(CL_INVALID_BINARY);
        NAME(CL_INVALID_BUILD_OPTIONS);
        NAME(CL_INVALID_PROGRAM);
        NAME(CL_INVALID_PROGRAM_EXECUTABLE);
        NAME(CL_INVALID_KERNEL_NAME);
        NAME(CL_INVALID_KERNEL);
        NAME(CL_INVALID_ARG_INDEX);
        NAME(CL_INVALID_ARG_VALUE);
        NAME(CL_INVALID_ARG_SIZE);
        NAME(CL_INVALID_KERNEL_ARGS);
        NAME(CL_INVALID_WORK_DIMENSION);
        NAME(CL_INVALID_WORK_GROUP_SIZE);
        NAME(CL_INVALID_WORK_ITEM_SIZE);
        NAME(CL_INVALID_GLOBAL_OFFSET);
        NAME(CL_INVALID_EVENT_WAIT_LIST);
        NAME(CL_INVALID_OPERATION);
        NAME(CL_INVALID_BUFFER_SIZE);
        NAME(CL_INVALID_GLOBAL_WORK_SIZE);
        NAME(CL_MISALIGNED_SUB_BUFFER_OFFSET);
        NAME(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST);
#undef NAME
    case -1001:
        return "CL_PLATFORM_NOT_FOUND_KHR";
    }
    return "unknown OpenCL error";
}

dashattn_status daocl_fail(dashattn_status status, const char *format, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(msg, sizeof msg, format, ap);
    va_end(ap);
    if (daocl_host)
        daocl_host->set_error("%s", msg);
    return status;
}

dashattn_status daocl_fail_cl(cl_int err, const char *what)
{
    const int memory = err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_HOST_MEMORY ||
                       err == CL_OUT_OF_RESOURCES || err == CL_INVALID_BUFFER_SIZE;
    return daocl_fail(memory ? DASHATTN_ERR_OUT_OF_MEMORY : DASHATTN_ERR_DEVICE,
                      "opencl: %s: %s (%d)", what, daocl_error_name(err), (int)err);
}

cl_command_queue daocl_queue(const daocl_state *st, void *stream)
{
    return stream ? (cl_command_queue)stream : st->queue;
}

/* Usable if any device exists (which one is init's business, so that a bad
 * DASHATTN_OPENCL_DEVICE gets its own message). GPUs and accelerators score
 * high; a CPU device (PoCL) is usable but the built-in CPU backend is faster
 * there, so it scores lowest. */
static int ocl_probe(const dashattn_host *host, char *reason, size_t reason_size)
{
    daocl_host = host;
    const cl_device_type best = daocl_best_device_type(reason, reason_size);
    if (best & CL_DEVICE_TYPE_GPU)
        return 50;
    if (best & CL_DEVICE_TYPE_ACCELERATOR)
        return 20;
    return best ? 1 : 0;
}

static void info(cl_device_id d, cl_device_info what, char *buf, size_t size)
{
    buf[0] = '\0';
    clGetDeviceInfo(d, what, size, buf, NULL);
    buf[size - 1] = '\0';
}

static dashattn_status ocl_init(const dashattn_host *host, const dashattn_context_options *options,
                                void **state)
{
    daocl_host = host;
    char why[400];
    cl_platform_id platform;
    cl_device_id device;
    dashattn_status status =
        daocl_pick_device(options->device, &platform, &device, why, sizeof why);
    if (status != DASHATTN_OK)
        return daocl_fail(status, "opencl: %s", why);
    daocl_state *st = calloc(1, sizeof *st);
    if (!st)
        return daocl_fail(DASHATTN_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    st->platform = platform;
    st->device = device;
    st->lim = daocl_device_limits(device);
    cl_int err;
    const cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform, 0};
    st->context = clCreateContext(props, 1, &device, NULL, NULL, &err);
    if (!st->context) {
        free(st);
        return daocl_fail_cl(err, "clCreateContext");
    }
    st->queue = clCreateCommandQueue(st->context, device, 0, &err);
    if (!st->queue) {
        clReleaseContext(st->context);
        free(st);
        return daocl_fail_cl(err, "clCreateCommandQueue");
    }
    pthread_mutex_init(&st->lock, NULL);
    char dname[200], dver[200], drv[100], pname[200], pver[200];
    info(device, CL_DEVICE_NAME, dname, sizeof dname);
    info(device, CL_DEVICE_VERSION, dver, sizeof dver);
    info(device, CL_DRIVER_VERSION, drv, sizeof drv);
    pname[0] = pver[0] = '\0';
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof pname, pname, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof pver, pver, NULL);
    pname[sizeof pname - 1] = pver[sizeof pver - 1] = '\0';
    snprintf(st->name, sizeof st->name, "%s (%s, %s, driver %s)", dname, pname, dver, drv);
    snprintf(st->identity, sizeof st->identity, "%s|%s|%s|%s|%s", pname, pver, dname, dver, drv);
    *state = st;
    return DASHATTN_OK;
}

static void ocl_release(void *state)
{
    daocl_state *st = state;
    if (!st)
        return;
    clFinish(st->queue);
    daocl_programs_release(st);
    clReleaseCommandQueue(st->queue);
    clReleaseContext(st->context);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static const char *ocl_device_name(void *state)
{
    return ((const daocl_state *)state)->name;
}

/* daocl_plan_config sums sizes in size_t. The same sums in double (each
 * part padded to a 128-byte line) tell whether they wrapped: the core
 * refuses a plan whose workspace size is SIZE_MAX. */
static int layout_wraps(const dashattn_plan_desc *plan, dashattn_operation op,
                        const daocl_config *c)
{
    const dashattn_problem *p = &plan->problem;
    const double kbar =
        (double)p->batch * (double)p->heads_kv * (double)plan->num_blocks * (double)p->head_dim;
    const double m = (double)plan->num_blocks, d = (double)p->head_dim, r = (double)c->rows;
    double floats = 0.0;
    switch (op) {
    case DASHATTN_OP_FORWARD:
        floats = kbar + m * r + r;
        break;
    case DASHATTN_OP_BACKWARD:
        floats = kbar + 2.0 * m * r + r * d + 2.0 * r;
        break;
    case DASHATTN_OP_DECODE:
        floats = m * r + r + (double)c->splits * r * (d + 2.0);
        break;
    }
    return (floats + 6.0 * 32.0) * sizeof(float) > 0x1p62;
}

static size_t ocl_workspace_size(void *state, const dashattn_plan_desc *plan, dashattn_operation op)
{
    const daocl_config cfg = daocl_plan_config(state, plan, op);
    if (layout_wraps(plan, op, &cfg))
        return SIZE_MAX;
    return cfg.floats * sizeof(float);
}

static dashattn_status ocl_alloc(void *state, size_t bytes, void **ptr)
{
    const daocl_state *st = state;
    cl_int err;
    /* A zero-sized buffer is not allowed; hand out one word instead. */
    cl_mem mem = clCreateBuffer(st->context, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &err);
    if (!mem) {
        *ptr = NULL;
        return daocl_fail_cl(err, "clCreateBuffer");
    }
    *ptr = mem;
    return DASHATTN_OK;
}

static void ocl_free(void *state, void *ptr)
{
    (void)state;
    if (ptr)
        clReleaseMemObject((cl_mem)ptr);
}

static dashattn_status ocl_upload(void *state, void *dst, const void *src, size_t bytes)
{
    const daocl_state *st = state;
    if (bytes == 0)
        return DASHATTN_OK;
    const cl_int err =
        clEnqueueWriteBuffer(st->queue, (cl_mem)dst, CL_TRUE, 0, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? DASHATTN_OK : daocl_fail_cl(err, "upload (clEnqueueWriteBuffer)");
}

static dashattn_status ocl_download(void *state, void *dst, const void *src, size_t bytes)
{
    const daocl_state *st = state;
    if (bytes == 0)
        return DASHATTN_OK;
    const cl_int err =
        clEnqueueReadBuffer(st->queue, (cl_mem)src, CL_TRUE, 0, bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? DASHATTN_OK : daocl_fail_cl(err, "download (clEnqueueReadBuffer)");
}

static dashattn_status ocl_synchronize(void *state, void *stream)
{
    const cl_int err = clFinish(daocl_queue(state, stream));
    return err == CL_SUCCESS ? DASHATTN_OK : daocl_fail_cl(err, "clFinish");
}

static const dashattn_backend_iface ocl_iface = {
    .abi_version = DASHATTN_BACKEND_ABI_VERSION,
    .struct_size = sizeof(dashattn_backend_iface),
    .name = "opencl",
    .probe = ocl_probe,
    .describe = daocl_describe,
    .init = ocl_init,
    .release = ocl_release,
    .device_name = ocl_device_name,
    .workspace_size = ocl_workspace_size,
    .alloc = ocl_alloc,
    .free = ocl_free,
    .forward = daocl_forward,
    .backward = daocl_backward,
    .cache_append = daocl_cache_append,
    .decode = daocl_decode,
    .upload = ocl_upload,
    .download = ocl_download,
    .synchronize = ocl_synchronize,
};

/* The one symbol the plugin exports. */
const dashattn_backend_iface *dashattn_backend_entry(void);

const dashattn_backend_iface *dashattn_backend_entry(void)
{
    return &ocl_iface;
}
