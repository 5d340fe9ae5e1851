/* Parsing a command's arguments by its option table (option_table.h). */
#include "option_table.h"

#include <stdint.h>
#include <string.h>

#include "options.h"

void options_usage(FILE *to, const char *command, const char *synopsis, const option *table,
                   size_t count) {
    fprintf(to, "usage: moevk %s %s\n", command, synopsis);
    for (size_t i = 0; i < count; ++i) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", table[i].name, table[i].value_name ? " " : "",
                 table[i].value_name ? table[i].value_name : "");
        fprintf(to, "  %-30s %s\n", left, table[i].help);
    }
    fprintf(to, "  %-30s %s\n", "--help, -h", "this text");
}

/* "a, b or c" for a choice's message. */
static void list_choices(const char *const *choices, char *text, size_t size) {
    text[0] = 0;
    for (size_t i = 0; choices[i]; ++i) {
        const char *joint = i == 0 ? "" : choices[i + 1] ? ", " : " or ";
        size_t used = strlen(text);
        snprintf(text + used, size - used, "%s%s", joint, choices[i]);
    }
}

/* Stores one option's value; returns NULL or what is wrong with it. */
static const char *apply(const option *o, const char *value, void *args, char *why, size_t size) {
    char *field = (char *)args + o->offset;
    long long n;
    float f;
    switch (o->type) {
    case OPTION_FLAG: *(int *)(void *)field = 1; return NULL;
    case OPTION_TEXT: *(const char **)(void *)field = value; return NULL;
    case OPTION_UINT:
    case OPTION_INT:
        if (!parse_int(value, o->low, o->high, &n)) {
            snprintf(why, size, "%s must be an integer from %lld to %lld", o->name, o->low,
                     o->high);
            return why;
        }
        if (o->type == OPTION_UINT)
            *(uint32_t *)(void *)field = (uint32_t)n;
        else
            *(int32_t *)(void *)field = (int32_t)n;
        return NULL;
    case OPTION_FLOAT:
        if (!parse_float(value, &f) || (o->low == 1 && !(f >= 0)) || (o->low == 2 && !(f > 0)) ||
            f != f) {
            snprintf(why, size, "%s must be a number%s", o->name,
                     o->low == 1   ? " >= 0"
                     : o->low == 2 ? " > 0"
                                   : "");
            return why;
        }
        *(float *)(void *)field = f;
        return NULL;
    case OPTION_CHOICE:
        for (int i = 0; o->choices[i]; ++i)
            if (!strcmp(value, o->choices[i])) {
                *(int *)(void *)field = i;
                return NULL;
            }
        char names[256];
        list_choices(o->choices, names, sizeof names);
        snprintf(why, size, "%s must be %s", o->name, names);
        return why;
    case OPTION_CALL: return o->call(args, value);
    }
    return "unknown option type";
}

int options_parse(const char *command, const char *synopsis, const option *table, size_t count,
                  int argc, char **argv, void *args) {
    for (int i = 0; i < argc; ++i) {
        const char *flag = argv[i];
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            options_usage(stdout, command, synopsis, table, count);
            return -1;
        }
        size_t j = 0;
        while (j < count && strcmp(flag, table[j].name) != 0) ++j;
        if (j == count) {
            fprintf(stderr, "moevk %s: unknown option %s (--help lists them)\n", command, flag);
            return 0;
        }
        const option *o = &table[j];
        const char *value = NULL;
        if (o->type != OPTION_FLAG) {
            if (i + 1 >= argc) {
                fprintf(stderr, "moevk %s: %s needs a value (%s)\n", command, flag,
                        o->value_name ? o->value_name : "");
                return 0;
            }
            value = argv[++i];
        }
        char why[512];
        const char *wrong = apply(o, value, args, why, sizeof why);
        if (wrong) {
            fprintf(stderr, "moevk %s: %s\n", command, wrong);
            return 0;
        }
        if (o->then) o->then(args);
    }
    return 1;
}

int options_parse_pairs(const char *text, const char *const *names, size_t count, float *values,
                        int *given) {
    char buffer[512];
    if (strlen(text) >= sizeof buffer) return 0;
    strcpy(buffer, text);
    for (char *save = NULL, *term = strtok_r(buffer, ",", &save); term;
         term = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(term, '=');
        if (!equals) return 0;
        *equals = '\0';
        size_t i = 0;
        while (i < count && strcmp(term, names[i]) != 0) ++i;
        if (i == count || !parse_float(equals + 1, &values[i])) return 0;
        given[i] = 1;
    }
    return 1;
}
