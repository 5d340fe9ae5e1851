/* The subcommands of the `moevk` command line. Each returns the process exit status. */
#ifndef MOEVK_CLI_COMMANDS_H
#define MOEVK_CLI_COMMANDS_H

#include "moevk.h"

int command_route(int argc, char **argv);
int command_layer(int argc, char **argv);
int command_demo(int argc, char **argv);
int command_train_demo(int argc, char **argv);
int command_devices(void);

#endif
