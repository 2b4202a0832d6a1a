/* SPDX-License-Identifier: MIT */
/* dtype facts and constructors for the common contiguous layouts. */
#include <config.h>

#include "internal.h"

DASHATTN_API size_t dashattn_dtype_size(dashattn_dtype dtype)
{
    switch (dtype) {
    case DASHATTN_F32:
        return 4;
    case DASHATTN_F16:
    case DASHATTN_BF16:
        return 2;
    }
    return 0;
}

DASHATTN_API const char *dashattn_dtype_name(dashattn_dtype dtype)
{
    switch (dtype) {
    case DASHATTN_F32:
        return "f32";
    case DASHATTN_F16:
        return "f16";
    case DASHATTN_BF16:
        return "bf16";
    }
    return NULL;
}

static dashattn_tensor make_view(void *data, dashattn_dtype dtype, const int64_t shape[4],
                                 int64_t stride_b, int64_t stride_h, int64_t stride_n)
{
    dashattn_tensor t = {
        data, dtype, {shape[0], shape[1], shape[2], shape[3]}, {stride_b, stride_h, stride_n, 1}};
    return t;
}

DASHATTN_API dashattn_tensor dashattn_tensor_bhsd(void *data, dashattn_dtype dtype, int64_t batch,
                                                  int64_t heads, int64_t seq, int64_t head_dim)
{
    const int64_t shape[4] = {batch, heads, seq, head_dim};
    return make_view(data, dtype, shape, heads * seq * head_dim, seq * head_dim, head_dim);
}

DASHATTN_API dashattn_tensor dashattn_tensor_bshd(void *data, dashattn_dtype dtype, int64_t batch,
                                                  int64_t heads, int64_t seq, int64_t head_dim)
{
    const int64_t shape[4] = {batch, heads, seq, head_dim};
    return make_view(data, dtype, shape, seq * heads * head_dim, head_dim, heads * head_dim);
}
