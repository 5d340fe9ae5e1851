/* Fresh random weights of any moevk_dtype, as a model file holds them: normal values times
 * scale in F32, F16, BF16; random blocks in ggml's formats, every quant byte random and the
 * scales sized so that the weights come out around scale. */
#ifndef MOEVK_TEST_RANDOM_WEIGHTS_H
#define MOEVK_TEST_RANDOM_WEIGHTS_H

#include <stdint.h>

#include "moevk.h"

/* count weights (whole blocks); malloc'd, NULL when out of memory. */
void *random_weights(uint64_t count, moevk_dtype type, float scale);
/* The bytes of count weights of a type. */
uint64_t weights_bytes(moevk_dtype type, uint64_t count);

#endif
