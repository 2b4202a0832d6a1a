# The OpenCL backend plugin (being written).
