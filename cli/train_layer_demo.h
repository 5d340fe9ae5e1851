/* `moevk train-demo --layer` (train_layer_demo.c): a whole MoE layer trained on the device. */
#ifndef MOEVK_CLI_TRAIN_LAYER_DEMO_H
#define MOEVK_CLI_TRAIN_LAYER_DEMO_H

#include <stdint.h>

/* An exit status: 0 trained and written, 1 a device failure. */
int train_layer_demo(const char *device_selector, uint32_t steps, uint32_t every,
                     const char *out);

#endif
