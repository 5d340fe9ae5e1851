/* routing_options.h: the shared options' callbacks (args begins with its moevk_router_info). */
#include "routing_options.h"

#include <string.h>

#include "options.h"

const char *const ROUTING_SCORES[] = {"softmax", "sigmoid", NULL};
const char *const ROUTING_POLICIES[] = {"position", "score", NULL};
/* In moevk_routing_mode's order. */
const char *const ROUTING_MODES[] = {"token",    "sequence",      "batch",
                                     "sinkhorn", "expert-choice", NULL};

/* "kind:amount" for --noise. */
const char *routing_take_noise(void *args, const char *text) {
    static const struct {
        const char *name;
        moevk_noise_kind kind;
    } KINDS[] = {{"jitter:", MOEVK_NOISE_JITTER},
                 {"gaussian:", MOEVK_NOISE_GAUSSIAN},
                 {"gumbel:", MOEVK_NOISE_GUMBEL}};
    moevk_router_info *info = args;
    for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; ++i) {
        size_t n = strlen(KINDS[i].name);
        if (strncmp(text, KINDS[i].name, n) == 0 && parse_float(text + n, &info->noise_amount)) {
            info->noise = KINDS[i].kind;
            return NULL;
        }
    }
    return "--noise must be jitter:EPS, gaussian:STD or gumbel:SCALE";
}

const char *routing_take_seed(void *args, const char *text) {
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(text, &end, 0);
    if (!*text || *end || errno || text[0] == '-')
        return "--seed must be an unsigned 64-bit integer";
    ((moevk_router_info *)args)->noise_seed = seed;
    return NULL;
}

void routing_dropless(void *args) {
    ((moevk_router_info *)args)->capacity_mode = MOEVK_CAPACITY_DROPLESS;
}
void routing_by_factor(void *args) {
    ((moevk_router_info *)args)->capacity_mode = MOEVK_CAPACITY_FACTOR;
}
void routing_fixed_capacity(void *args) {
    ((moevk_router_info *)args)->capacity_mode = MOEVK_CAPACITY_FIXED;
}

const char *routing_parse_losses(const char *text, moevk_loss_info *loss) {
    static const char *const NAMES[] = {"aux", "z", "importance", "load", "entropy", "sequence"};
    float *coefs[] = {&loss->aux_coef,  &loss->z_coef,       &loss->importance_coef,
                      &loss->load_coef, &loss->entropy_coef, &loss->sequence_coef};
    float values[6] = {0};
    int given[6] = {0};
    if (!options_parse_pairs(text, NAMES, 6, values, given))
        return "--loss takes NAME=COEF pairs separated by commas, NAME one of aux, z, "
               "importance, load, entropy, sequence";
    for (int i = 0; i < 6; ++i)
        if (given[i]) *coefs[i] = values[i];
    return NULL;
}
