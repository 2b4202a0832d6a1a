/* SPDX-License-Identifier: MIT */
/* Argument checks shared by the entry points. Each returns DASHATTN_OK or a
 * status with the last-error message naming the function and argument. */
#ifndef DASHATTN_VALIDATE_H
#define DASHATTN_VALIDATE_H

#include "internal.h"

typedef enum da_access { DA_INPUT, DA_OUTPUT } da_access;

/* Expected logical shape of a tensor argument. */
typedef struct da_shape {
    int64_t dim[4];
} da_shape;

dashattn_status da_check_tensor(const char *fn, const char *name, const dashattn_tensor *t,
                                dashattn_dtype dtype, da_shape expected, da_access access);

/* Context, plan and their pairing. */
dashattn_status da_check_call(const char *fn, const dashattn_context *context,
                              const dashattn_plan *plan);

dashattn_status da_check_selection(const char *fn, const dashattn_plan *plan,
                                   const dashattn_selection *selection);

dashattn_status da_check_cache(const char *fn, const dashattn_plan *plan,
                               const dashattn_kv_cache *cache);

#endif
