/* The demo's GGUF model (cli/demo_gguf.c). */
#ifndef MOEVK_CLI_DEMO_GGUF_H
#define MOEVK_CLI_DEMO_GGUF_H

/* Writes a toy GGUF MoE model and runs its layer 1 through `moevk layer` on the device (NULL:
 * the default one); prints what happened. 0 when the output matches the CPU reference. */
int demo_gguf(const char *device);

#endif
