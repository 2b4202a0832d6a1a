/* SPDX-License-Identifier: MIT */
/* OpenCL platforms and devices: which one a context uses, what it can do,
 * and the listing `dashattn info` prints. */
#include "ocl_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLATFORMS 16
#define MAX_DEVICES 64

typedef struct device_list {
    cl_platform_id platform[MAX_DEVICES];
    cl_device_id device[MAX_DEVICES];
    int platform_index[MAX_DEVICES];
    int device_index[MAX_DEVICES]; /* within its platform */
    int count;
    int platforms;
    cl_int err; /* of clGetPlatformIDs, when no platform was found */
} device_list;

static void list_devices(device_list *l)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint np = 0;
    memset(l, 0, sizeof *l);
    l->err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &np);
    if (l->err != CL_SUCCESS)
        return;
    l->platforms = (int)(np < MAX_PLATFORMS ? np : MAX_PLATFORMS);
    for (int p = 0; p < l->platforms; p++) {
        cl_device_id devs[MAX_DEVICES];
        cl_uint nd = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devs, &nd) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd && l->count < MAX_DEVICES; d++) {
            l->platform[l->count] = platforms[p];
            l->device[l->count] = devs[d];
            l->platform_index[l->count] = p;
            l->device_index[l->count] = (int)d;
            l->count++;
        }
    }
}

static int parse_index(const char *s, const char **end)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *e;
    const long v = strtol(s, &e, 10);
    if (errno || v > 1000000)
        return -1;
    *end = e;
    return (int)v;
}

/* Index into l of the device a DASHATTN_OPENCL_DEVICE value names, or -1. */
static int resolve_env(const device_list *l, const char *value)
{
    const char *end;
    const int first = parse_index(value, &end);
    if (first < 0)
        return -1;
    if (*end == '\0')
        return first < l->count ? first : -1;
    if (*end != ':')
        return -1;
    const int second = parse_index(end + 1, &end);
    if (second < 0 || *end != '\0')
        return -1;
    for (int i = 0; i < l->count; i++)
        if (l->platform_index[i] == first && l->device_index[i] == second)
            return i;
    return -1;
}

/* Index into l of the device a context with this option index gets; -1 with
 * the reason in why. */
static int choose(const device_list *l, int index, char *why, size_t why_size,
                  dashattn_status *status)
{
    *status = DASHATTN_ERR_BACKEND_UNAVAILABLE;
    if (l->platforms == 0) {
        snprintf(why, why_size, "no OpenCL platform found (clGetPlatformIDs: %s)",
                 l->err == CL_SUCCESS ? "none" : daocl_error_name(l->err));
        return -1;
    }
    if (l->count == 0) {
        snprintf(why, why_size, "the %d OpenCL platform(s) have no device", l->platforms);
        return -1;
    }
    const char *env = getenv("DASHATTN_OPENCL_DEVICE");
    if (env && env[0]) {
        const int i = resolve_env(l, env);
        if (i < 0) {
            *status = DASHATTN_ERR_INVALID_ARGUMENT;
            snprintf(why, why_size,
                     "DASHATTN_OPENCL_DEVICE=\"%.40s\" names no device: use N (0 to %d, over all "
                     "platforms) or P:D (platform P, device D); `dashattn info` lists them",
                     env, l->count - 1);
        }
        return i;
    }
    if (index >= l->count) {
        *status = DASHATTN_ERR_INVALID_ARGUMENT;
        snprintf(why, why_size, "options->device is %d but there are only %d OpenCL device(s)",
                 index, l->count);
        return -1;
    }
    return index;
}

dashattn_status daocl_pick_device(int index, cl_platform_id *platform, cl_device_id *device,
                                  char *why, size_t why_size)
{
    device_list l;
    list_devices(&l);
    dashattn_status status;
    const int i = choose(&l, index, why, why_size, &status);
    if (i < 0)
        return status;
    *platform = l.platform[i];
    *device = l.device[i];
    return DASHATTN_OK;
}

cl_device_type daocl_best_device_type(char *why, size_t why_size)
{
    device_list l;
    list_devices(&l);
    cl_device_type all = 0;
    for (int i = 0; i < l.count; i++) {
        cl_device_type t = 0;
        clGetDeviceInfo(l.device[i], CL_DEVICE_TYPE, sizeof t, &t, NULL);
        all |= t ? t : CL_DEVICE_TYPE_DEFAULT;
    }
    if (l.platforms == 0)
        snprintf(why, why_size, "no OpenCL platform found (clGetPlatformIDs: %s)",
                 l.err == CL_SUCCESS ? "none" : daocl_error_name(l.err));
    else if (l.count == 0)
        snprintf(why, why_size, "the %d OpenCL platform(s) have no device", l.platforms);
    return all;
}

static int has_extension(cl_device_id device, const char *name)
{
    size_t size = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, 0, NULL, &size) != CL_SUCCESS || size == 0)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    int found = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, size, text, NULL) == CL_SUCCESS) {
        text[size] = '\0';
        const size_t n = strlen(name);
        for (const char *p = strstr(text, name); p && !found; p = strstr(p + 1, name))
            found = (p == text || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0');
    }
    free(text);
    return found;
}

daocl_limits daocl_device_limits(cl_device_id device)
{
    daocl_limits lim;
    memset(&lim, 0, sizeof lim);
    clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof lim.max_work_group,
                    &lim.max_work_group, NULL);
    clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lim.local_mem, &lim.local_mem, NULL);
    clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof lim.max_alloc, &lim.max_alloc,
                    NULL);
    clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof lim.compute_units,
                    &lim.compute_units, NULL);
    clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof lim.type, &lim.type, NULL);
    lim.fp64 = has_extension(device, "cl_khr_fp64");
    lim.fp16 = has_extension(device, "cl_khr_fp16");
    if (lim.compute_units == 0)
        lim.compute_units = 1;
    return lim;
}

typedef struct text {
    char *buf;
    size_t size, len;
} text;

static void add(text *t, const char *format, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void add(text *t, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    const size_t room = t->len < t->size ? t->size - t->len : 0;
    const int n = vsnprintf(room ? t->buf + t->len : NULL, room, format, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n;
}

static void info_string(cl_device_id d, cl_device_info what, char *buf, size_t size)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, size, buf, NULL) != CL_SUCCESS)
        snprintf(buf, size, "?");
    buf[size - 1] = '\0';
}

size_t daocl_describe(char *buffer, size_t size)
{
    text t = {buffer, size, 0};
    if (buffer && size)
        buffer[0] = '\0';
    device_list l;
    list_devices(&l);
    char why[300];
    dashattn_status status;
    const int chosen = choose(&l, 0, why, sizeof why, &status);
    int last_platform = -1;
    for (int i = 0; i < l.count; i++) {
        if (l.platform_index[i] != last_platform) {
            char pname[200] = "?", pver[200] = "?";
            clGetPlatformInfo(l.platform[i], CL_PLATFORM_NAME, sizeof pname, pname, NULL);
            clGetPlatformInfo(l.platform[i], CL_PLATFORM_VERSION, sizeof pver, pver, NULL);
            pname[sizeof pname - 1] = pver[sizeof pver - 1] = '\0';
            add(&t, "platform %d: %s (%s)\n", l.platform_index[i], pname, pver);
            last_platform = l.platform_index[i];
        }
        char dname[200], dver[200];
        info_string(l.device[i], CL_DEVICE_NAME, dname, sizeof dname);
        info_string(l.device[i], CL_DEVICE_VERSION, dver, sizeof dver);
        const daocl_limits lim = daocl_device_limits(l.device[i]);
        cl_ulong global = 0;
        clGetDeviceInfo(l.device[i], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
        add(&t,
            "  %s device %d (%d:%d): %s, %s, %u compute units, %.1f GiB global, %llu KiB "
            "local, fp16 %s, fp64 %s\n",
            i == chosen ? "*" : " ", i, l.platform_index[i], l.device_index[i], dname, dver,
            lim.compute_units, (double)global / (1024.0 * 1024.0 * 1024.0),
            (unsigned long long)(lim.local_mem / 1024), lim.fp16 ? "yes" : "no",
            lim.fp64 ? "yes" : "no");
    }
    if (chosen >= 0)
        add(&t, "  (* = the device a context gets by default; DASHATTN_OPENCL_DEVICE=N or P:D "
                "picks another)\n");
    else
        add(&t, "  no device chosen: %s\n", why);
    return t.len;
}
