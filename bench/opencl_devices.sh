#!/bin/sh
# SPDX-License-Identifier: MIT
# Prints "INDEX PLATFORM-NAME" for every OpenCL device `dashattn info` lists,
# one per line, INDEX being what DASHATTN_OPENCL_DEVICE takes.
# Usage: sh bench/opencl_devices.sh PATH/TO/dashattn   (plugins found as it finds them)
"$1" info 2>/dev/null | sed 's/^ *//' | awk '
    /^platform [0-9]+: / { sub(/^platform [0-9]+: /, ""); sub(/ \(.*$/, ""); platform = $0; next }
    /^[*]? *device [0-9]+ \(/ { sub(/^[*]? */, ""); print $2, platform }'
