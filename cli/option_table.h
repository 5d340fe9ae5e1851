/* A command's options as a table: each option's name, value, one line of help and where its
 * value goes, so that parsing, checking and `--help` come from one place. */
#ifndef MOEVK_CLI_OPTION_TABLE_H
#define MOEVK_CLI_OPTION_TABLE_H

#include <stddef.h>
#include <stdio.h>

typedef enum option_type {
    OPTION_FLAG,   /* no value: sets the int at offset to 1 */
    OPTION_TEXT,   /* a const char * at offset */
    OPTION_UINT,   /* a uint32_t at offset, within [low, high] */
    OPTION_INT,    /* an int32_t at offset, within [low, high] */
    OPTION_FLOAT,  /* a float at offset; low 0: any number, 1: >= 0, 2: > 0 */
    OPTION_CHOICE, /* one of choices (NULL-terminated): its index, as an int at offset */
    OPTION_CALL,   /* call(args, value): NULL when it took the value, else what is wrong */
} option_type;

typedef struct option {
    const char *name;       /* "--k" */
    const char *value_name; /* "K" in the usage; NULL for a flag */
    const char *help;
    option_type type;
    size_t offset; /* into the command's argument struct */
    long long low, high;
    const char *const *choices;
    const char *(*call)(void *args, const char *value);
    void (*then)(void *args); /* after the value is stored: what the option also implies */
} option;

/* Table entries; a file defines OPTION_ARGS (its argument struct) before using them. */
#define OPTION_AT(field) offsetof(OPTION_ARGS, field)
#define OPT_TEXT(name, value, help, field)                                                         \
    { name, value, help, OPTION_TEXT, OPTION_AT(field), 0, 0, NULL, NULL, NULL }
#define OPT_FLAG(name, help, field, then)                                                          \
    { name, NULL, help, OPTION_FLAG, OPTION_AT(field), 0, 0, NULL, NULL, then }
#define OPT_UINT(name, value, help, field, low, high, then)                                        \
    { name, value, help, OPTION_UINT, OPTION_AT(field), low, high, NULL, NULL, then }
#define OPT_INT(name, value, help, field, low, high, then)                                         \
    { name, value, help, OPTION_INT, OPTION_AT(field), low, high, NULL, NULL, then }
#define OPT_FLOAT(name, value, help, field, low, then)                                             \
    { name, value, help, OPTION_FLOAT, OPTION_AT(field), low, 0, NULL, NULL, then }
#define OPT_CHOICE(name, value, help, field, choices)                                              \
    { name, value, help, OPTION_CHOICE, OPTION_AT(field), 0, 0, choices, NULL, NULL }
#define OPT_CALL(name, value, help, call)                                                          \
    { name, value, help, OPTION_CALL, 0, 0, 0, NULL, call, NULL }
#define OPTION_COUNT(table) (sizeof table / sizeof table[0])

/* In a command's checks: "moevk COMMAND: what is wrong" as one line on stderr, then return 0. */
#define COMMAND_FAIL(command, ...)                                                                 \
    do {                                                                                           \
        fprintf(stderr, "moevk " command ": ");                                                    \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        return 0;                                                                                  \
    } while (0)

/* "NAME=NUMBER,NAME=NUMBER" (an option's value): each NAME one of names[count], its number into
 * values[i] and given[i] = 1 (others left). 1 when every pair parsed. */
int options_parse_pairs(const char *text, const char *const *names, size_t count, float *values,
                        int *given);

/* Parses argv into args by the table. Returns 1 when parsed; 0 after printing
 * "moevk COMMAND: what is wrong" on stderr; -1 after printing the usage on stdout for --help
 * or -h (the command then exits 0). */
int options_parse(const char *command, const char *synopsis, const option *table, size_t count,
                  int argc, char **argv, void *args);
/* "usage: moevk COMMAND SYNOPSIS" and a line per option. */
void options_usage(FILE *to, const char *command, const char *synopsis, const option *table,
                   size_t count);

#endif
