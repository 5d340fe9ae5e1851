/* One tensor of a model file, whichever format held it (safetensors, GGUF): its name, element
 * type, shape in row-major order (the last extent contiguous, as numpy and PyTorch write it),
 * and its bytes inside the file's mapping. */
#ifndef MOEVK_MODEL_TENSOR_H
#define MOEVK_MODEL_TENSOR_H

#include <stdint.h>

#define MODEL_MAX_DIMS 8

typedef enum model_dtype {
    MODEL_F32,
    MODEL_F16,
    MODEL_BF16,
    MODEL_Q8_0, /* ggml's block formats moevk computes with (GGUF) */
    MODEL_Q4_0,
    MODEL_Q4_K,
    MODEL_Q6_K,
    MODEL_Q5_0,
    MODEL_Q5_K,
    MODEL_OTHER, /* a type moevk does not compute with (type_name says which) */
} model_dtype;

typedef struct model_tensor {
    char *name;
    model_dtype dtype;
    const char *type_name; /* static text: "F32", "Q4_K", ... */
    uint32_t ndim;
    uint64_t shape[MODEL_MAX_DIMS];
    uint64_t count;   /* elements */
    const void *data; /* inside the mapping */
    uint64_t bytes;
} model_tensor;

#endif
