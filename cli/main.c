/* The `moevk` command line: route .npy files, run the demo, list devices. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

int command_devices(void) {
    uint32_t count = 0;
    moevk_result r = moevk_devices_enumerate(&count, NULL);
    if (r != MOEVK_SUCCESS) {
        fprintf(stderr, "moevk devices: %s\n", moevk_result_string(r));
        return 1;
    }
    moevk_device_info infos[64] = {{0}};
    if (count > 64) count = 64;
    r = moevk_devices_enumerate(&count, infos);
    for (uint32_t i = 0; r == MOEVK_SUCCESS && i < count; ++i)
        printf("%u: %s (%s, vendor 0x%04x), subgroup size %u, f32 rounding %s\n", i, infos[i].name,
               infos[i].driver_info, infos[i].vendor_id, infos[i].subgroup_size,
               infos[i].rounding_mode_rte ? "RTE requested" : "default");
    return r == MOEVK_SUCCESS ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "route")) return command_route(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "demo")) return command_demo(argc - 2, argv + 2);
#ifdef MOEVK_CLI_LAYER
    if (argc >= 2 && !strcmp(argv[1], "layer")) return command_layer(argc - 2, argv + 2);
#endif
    if (argc >= 2 && !strcmp(argv[1], "train-demo")) return command_train_demo(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "devices")) {
        if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            printf("usage: moevk devices\n  Lists the Vulkan devices moevk can run on.\n");
            return 0;
        }
        if (argc > 2) {
            fprintf(stderr, "moevk devices: takes no options (--help)\n");
            return 2;
        }
        return command_devices();
    }
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("moevk %s\n", moevk_version_string());
        return 0;
    }
    int asked = argc >= 2 &&
                (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"));
    fprintf(asked ? stdout : stderr,
            "usage: moevk COMMAND [options]   (moevk COMMAND --help lists a command's options)\n"
            "  route        route .npy logits and write every output as .npy and JSON\n"
#ifdef MOEVK_CLI_LAYER
            "  layer        run one MoE layer of a safetensors checkpoint on .npy hidden states\n"
#endif
            "  demo         route a random batch on the default device and check it\n"
            "  train-demo   train a toy router out of collapse, with routing health\n"
            "  devices      list the Vulkan devices\n"
            "  --version    print moevk's version\n");
    return asked ? 0 : 2;
}
