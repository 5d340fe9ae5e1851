/* A routing profile as JSON (moevk_profile_save, _load, _parse) through Debian's cJSON: every
 * count a whole number (exact up to 2^53), every bound a float that cJSON prints to the digits
 * that read back the same. Loading checks everything a route would trust: sizes, options,
 * bounds, and that the counts agree with each other. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "profile_object.h"

#ifdef MOEVK_HAVE_CJSON
#include <cjson/cJSON.h>

/* By moevk_routing_mode and moevk_score_func (NULL: not a profile's mode). */
#define MODE_NAME_COUNT 5
static const char *const MODE_NAMES[MODE_NAME_COUNT] = {[MOEVK_MODE_TOKEN] = "token",
                                                        [MOEVK_MODE_SINKHORN] = "sinkhorn",
                                                        [MOEVK_MODE_EXPERT_CHOICE] =
                                                            "expert_choice"};
static const char *const SCORE_NAMES[2] = {
    [MOEVK_SCORE_SOFTMAX] = "softmax", [MOEVK_SCORE_SIGMOID] = "sigmoid"};
static const char *const MEASURE_NAMES[MOEVK_MEASURES] = {"entropy", "top1", "margin", "logsumexp",
                                                          "energy"};
#define FORMAT_NAME "moevk-routing-profile"
#define LARGEST_EXACT 9007199254740992.0 /* 2^53: every whole number up to it reads exactly */

/* Numbers as this file writes them (cJSON's own printing keeps 15 digits where they read back
 * within its tolerance, which can lose a double's last bit): counts in full, doubles in the
 * fewest digits that read back as the same double, floats in the fewest that read back (through
 * a double, as the loader reads them) as the same float. */
static cJSON *raw_number(const char *format, ...) {
    char text[64];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    return cJSON_CreateRaw(text);
}

static cJSON *shortest_number(double value, int is_float) {
    char text[64];
    for (int digits = is_float ? 6 : 15; digits <= 17; ++digits) {
        snprintf(text, sizeof text, "%.*g", digits, value);
        double back = strtod(text, NULL);
        if (is_float ? (float)back == (float)value : back == value) break;
    }
    return cJSON_CreateRaw(text);
}

static int add_shortest(cJSON *object, const char *name, double value, int is_float) {
    cJSON *item = shortest_number(value, is_float);
    if (item && cJSON_AddItemToObject(object, name, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

static int add_number(cJSON *object, const char *name, double value) {
    return add_shortest(object, name, value, 0);
}

static int add_float(cJSON *object, const char *name, float value) {
    return add_shortest(object, name, value, 1);
}

static int add_count(cJSON *object, const char *name, uint64_t value) {
    cJSON *item = raw_number("%llu", (unsigned long long)value);
    if (item && cJSON_AddItemToObject(object, name, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

static cJSON *counts_array(const uint64_t *counts, uint64_t n) {
    cJSON *array = cJSON_CreateArray();
    for (uint64_t i = 0; array && i < n; ++i) {
        cJSON *item = raw_number("%llu", (unsigned long long)counts[i]);
        if (!item || !cJSON_AddItemToArray(array, item)) {
            cJSON_Delete(item);
            cJSON_Delete(array);
            return NULL;
        }
    }
    return array;
}

static cJSON *profile_json(const moevk_profile *profile) {
    const moevk_profile_info *info = &profile->info;
    moevk_drift_thresholds t = profile_thresholds(profile);
    uint64_t E = info->num_experts;
    cJSON *root = cJSON_CreateObject(), *thresholds = cJSON_CreateObject(),
          *measures = cJSON_CreateObject(), *pairs = cJSON_CreateArray();
    int ok = root && thresholds && measures && pairs;
    if (ok) {
        ok = cJSON_AddStringToObject(root, "format", FORMAT_NAME) &&
             add_count(root, "version", MOEVK_PROFILE_VERSION) &&
             add_count(root, "num_experts", E) && add_count(root, "top_k", info->top_k) &&
             cJSON_AddStringToObject(root, "mode", MODE_NAMES[info->mode]) &&
             cJSON_AddStringToObject(root, "score", SCORE_NAMES[info->score]) &&
             add_float(root, "temperature", info->temperature) &&
             add_count(root, "bins", info->bins) &&
             cJSON_AddBoolToObject(root, "bounds_set", info->given_bounds) &&
             add_count(root, "batches", profile->batches) &&
             add_count(root, "tokens", profile->tokens) &&
             add_count(thresholds, "min_tokens", t.min_tokens) &&
             add_number(thresholds, "usage_jsd", t.usage_jsd) &&
             add_number(thresholds, "psi", t.psi) &&
             add_number(thresholds, "energy_tail", t.energy_tail);
        ok = ok && cJSON_AddItemToObject(root, "thresholds", thresholds);
        if (!ok) cJSON_Delete(thresholds);
        double p99 = moevk_profile_energy_p99(profile);
        if (ok && isfinite(p99)) ok = add_number(root, "energy_p99", p99); /* for people */
        cJSON *usage = ok ? counts_array(profile->usage, E) : NULL;
        ok = ok && usage && cJSON_AddItemToObject(root, "usage", usage);
        if (!ok) cJSON_Delete(usage);
    }
    for (int q = 0; ok && q < MOEVK_MEASURES; ++q) {
        cJSON *measure = cJSON_CreateObject();
        cJSON *counts = counts_array(profile_histogram(profile, q), info->bins + 2);
        ok = measure && counts && cJSON_AddItemToObject(measure, "counts", counts);
        if (ok) {
            ok = add_float(measure, "lower", info->lower[q]) &&
                 add_float(measure, "upper", info->upper[q]) &&
                 cJSON_AddItemToObject(measures, MEASURE_NAMES[q], measure);
        } else {
            cJSON_Delete(counts);
        }
        if (!ok) cJSON_Delete(measure);
    }
    if (ok)
        ok = cJSON_AddItemToObject(root, "measures", measures);
    else
        cJSON_Delete(measures);
    for (uint64_t a = 0; ok && a < E; ++a) {
        cJSON *row = counts_array(profile->co_selection + a * E, E);
        ok = row && cJSON_AddItemToArray(pairs, row);
        if (!ok) cJSON_Delete(row);
    }
    if (ok)
        ok = cJSON_AddItemToObject(root, "co_selection", pairs);
    else
        cJSON_Delete(pairs);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

moevk_result moevk_profile_save(const moevk_profile *profile, const char *path) {
    if (!profile || !path) return MOEVK_ERROR_INVALID_ARGUMENT;
    cJSON *root = profile_json(profile);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return MOEVK_ERROR_OUT_OF_HOST_MEMORY;
    FILE *file = fopen(path, "wb");
    int ok = file && fputs(text, file) >= 0 && fputc('\n', file) != EOF;
    if (file && fclose(file) != 0) ok = 0;
    free(text);
    return ok ? MOEVK_SUCCESS : MOEVK_ERROR_INVALID_ARGUMENT;
}

/* ---- Loading ---- */
typedef struct reader {
    char *error;
    size_t error_size;
} reader;

static int fail(reader *r, const char *format, ...) {
    if (r->error && r->error_size) {
        int used = snprintf(r->error, r->error_size, "routing profile: ");
        va_list args;
        va_start(args, format);
        if (used > 0 && (size_t)used < r->error_size)
            vsnprintf(r->error + used, r->error_size - used, format, args);
        va_end(args);
    }
    return 0;
}

static const cJSON *member(reader *r, const cJSON *object, const char *name, int *ok) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, name);
    if (!item && *ok) *ok = fail(r, "\"%s\" is missing", name);
    return item;
}

/* A whole number in [0, most]. */
static int read_count(reader *r, const cJSON *item, const char *name, double most, uint64_t *out) {
    if (!item) return 0; /* missing: member() said so */
    if (!cJSON_IsNumber(item)) return fail(r, "\"%s\" is not a number", name);
    double v = item->valuedouble;
    if (!(v >= 0 && v <= most) || v != floor(v))
        return fail(r, "\"%s\" is %.17g; it must be a whole number in 0 .. %.17g", name, v, most);
    *out = (uint64_t)v;
    return 1;
}

static int read_counts(reader *r, const cJSON *array, const char *name, uint64_t n, uint64_t *out) {
    if (!array) return 0; /* missing: member() said so */
    if (!cJSON_IsArray(array)) return fail(r, "\"%s\" is not an array", name);
    if ((uint64_t)cJSON_GetArraySize(array) != n)
        return fail(r, "\"%s\" holds %d counts; it must hold %llu", name, cJSON_GetArraySize(array),
                    (unsigned long long)n);
    uint64_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item,
                       array) if (!read_count(r, item, name, LARGEST_EXACT, &out[i++])) return 0;
    return 1;
}

static int read_float(reader *r, const cJSON *item, const char *name, float *out) {
    if (!item) return 0; /* missing: member() said so */
    if (!cJSON_IsNumber(item)) return fail(r, "\"%s\" is not a number", name);
    float f = (float)item->valuedouble; /* this file's own are floats exactly */
    if (!isfinite(item->valuedouble) || !isfinite(f))
        return fail(r, "\"%s\" is %.17g, not a finite float", name, item->valuedouble);
    *out = f;
    return 1;
}

static int read_double(reader *r, const cJSON *item, const char *name, double *out) {
    if (!item) return 0; /* missing: member() said so */
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || item->valuedouble < 0)
        return fail(r, "\"%s\" is not a finite number >= 0", name);
    *out = item->valuedouble;
    return 1;
}

/* One of names[count] (NULL where an index has none): its index. */
static int read_enum(reader *r, const cJSON *item, const char *name, const char *const *names,
                     int count, int *out) {
    if (!item) return 0; /* missing: member() said so */
    for (int i = 0; i < count; ++i)
        if (names[i] && cJSON_IsString(item) && strcmp(item->valuestring, names[i]) == 0) {
            *out = i;
            return 1;
        }
    return fail(r, "\"%s\" must be one of this library's names (\"%s\", ...)", name, names[0]);
}

/* The header: format, version, options. */
static int read_info(reader *r, const cJSON *root, moevk_profile_info *info) {
    int ok = 1;
    const cJSON *format = member(r, root, "format", &ok);
    if (ok && (!cJSON_IsString(format) || strcmp(format->valuestring, FORMAT_NAME) != 0))
        return fail(r, "\"format\" must be \"" FORMAT_NAME "\"");
    uint64_t version = 0, E = 0, k = 0, bins = 0;
    int mode = 0, score = 0;
    ok = ok && read_count(r, member(r, root, "version", &ok), "version", 1e9, &version);
    if (ok && version != MOEVK_PROFILE_VERSION)
        return fail(r, "version %llu; this library reads version %d", (unsigned long long)version,
                    MOEVK_PROFILE_VERSION);
    ok = ok &&
         read_count(r, member(r, root, "num_experts", &ok), "num_experts", MOEVK_MAX_EXPERTS, &E);
    ok = ok && read_count(r, member(r, root, "top_k", &ok), "top_k", MOEVK_MAX_TOP_K, &k);
    ok = ok && read_count(r, member(r, root, "bins", &ok), "bins", MOEVK_PROFILE_MAX_BINS, &bins);
    ok = ok &&
         read_enum(r, member(r, root, "mode", &ok), "mode", MODE_NAMES, MODE_NAME_COUNT, &mode);
    ok = ok && read_enum(r, member(r, root, "score", &ok), "score", SCORE_NAMES, 2, &score);
    ok =
        ok && read_float(r, member(r, root, "temperature", &ok), "temperature", &info->temperature);
    if (!ok) return 0;
    if (bins == 0) return fail(r, "\"bins\" is 0");
    info->num_experts = (uint32_t)E;
    info->top_k = (uint32_t)k;
    info->bins = (uint32_t)bins;
    info->mode = (moevk_routing_mode)mode;
    info->score = (moevk_score_func)score;
    const cJSON *set = member(r, root, "bounds_set", &ok);
    if (!ok) return 0;
    if (!cJSON_IsBool(set)) return fail(r, "\"bounds_set\" is not true or false");
    info->given_bounds = cJSON_IsTrue(set);
    const cJSON *measures = member(r, root, "measures", &ok);
    if (ok && !cJSON_IsObject(measures)) return fail(r, "\"measures\" is not an object");
    for (int q = 0; ok && q < MOEVK_MEASURES; ++q) {
        const cJSON *measure = member(r, measures, MEASURE_NAMES[q], &ok);
        if (ok && !cJSON_IsObject(measure))
            return fail(r, "\"measures\".\"%s\" is not an object", MEASURE_NAMES[q]);
        ok = ok && read_float(r, member(r, measure, "lower", &ok), "lower", &info->lower[q]);
        ok = ok && read_float(r, member(r, measure, "upper", &ok), "upper", &info->upper[q]);
    }
    char message[256] = "";
    if (ok && profile_info_invalid(info, message, sizeof message)) return fail(r, "%s", message);
    return ok;
}

static int read_thresholds(reader *r, const cJSON *root, moevk_drift_thresholds *t) {
    int ok = 1;
    const cJSON *object = member(r, root, "thresholds", &ok);
    if (ok && !cJSON_IsObject(object)) return fail(r, "\"thresholds\" is not an object");
    uint64_t min_tokens = 0;
    ok = ok &&
         read_count(r, member(r, object, "min_tokens", &ok), "min_tokens", UINT32_MAX, &min_tokens);
    ok = ok && read_double(r, member(r, object, "usage_jsd", &ok), "usage_jsd", &t->usage_jsd);
    ok = ok && read_double(r, member(r, object, "psi", &ok), "psi", &t->psi);
    ok =
        ok && read_double(r, member(r, object, "energy_tail", &ok), "energy_tail", &t->energy_tail);
    t->min_tokens = (uint32_t)min_tokens;
    return ok;
}

/* The counts, and that they agree: each histogram holds every token, the usage at most k (or E)
 * choices of each, the co-selection is symmetric with the usage on its diagonal (or empty). */
static int read_counts_of(reader *r, const cJSON *root, moevk_profile *profile) {
    const moevk_profile_info *info = &profile->info;
    uint64_t E = info->num_experts;
    int ok = 1;
    ok = ok && read_count(r, member(r, root, "batches", &ok), "batches", LARGEST_EXACT,
                          &profile->batches);
    ok = ok &&
         read_count(r, member(r, root, "tokens", &ok), "tokens", LARGEST_EXACT, &profile->tokens);
    ok = ok && read_counts(r, member(r, root, "usage", &ok), "usage", E, profile->usage);
    const cJSON *measures = cJSON_GetObjectItemCaseSensitive(root, "measures");
    for (int q = 0; ok && q < MOEVK_MEASURES; ++q) {
        const cJSON *measure = cJSON_GetObjectItemCaseSensitive(measures, MEASURE_NAMES[q]);
        uint64_t *counts = profile_histogram(profile, q);
        ok = read_counts(r, member(r, measure, "counts", &ok), MEASURE_NAMES[q], info->bins + 2,
                         counts);
        double total = 0;
        for (uint32_t b = 0; ok && b < info->bins + 2; ++b) total += (double)counts[b];
        if (ok && total != (double)profile->tokens)
            return fail(r, "the %s histogram holds %.17g tokens, \"tokens\" says %llu",
                        MEASURE_NAMES[q], total, (unsigned long long)profile->tokens);
    }
    const cJSON *pairs = member(r, root, "co_selection", &ok);
    if (ok && (!cJSON_IsArray(pairs) || (uint64_t)cJSON_GetArraySize(pairs) != E))
        return fail(r, "\"co_selection\" must be an array of %llu rows", (unsigned long long)E);
    const cJSON *row;
    uint64_t a = 0;
    if (ok)
        cJSON_ArrayForEach(row, pairs) if (!read_counts(r, row, "co_selection", E,
                                                        profile->co_selection + E * a++)) return 0;
    if (!ok) return 0;
    double usage = 0;
    for (uint64_t e = 0; e < E; ++e) usage += (double)profile->usage[e];
    double most_choices = info->mode == MOEVK_MODE_EXPERT_CHOICE ? (double)E : info->top_k;
    if (usage > most_choices * (double)profile->tokens)
        return fail(r, "the usage counts %.17g choices, more than %g for each of %llu tokens",
                    usage, most_choices, (unsigned long long)profile->tokens);
    int empty = 1;
    for (uint64_t i = 0; i < E * E; ++i) empty &= profile->co_selection[i] == 0;
    for (uint64_t i = 0; !empty && i < E; ++i)
        for (uint64_t j = 0; j < E; ++j) {
            if (profile->co_selection[i * E + j] != profile->co_selection[j * E + i])
                return fail(r, "\"co_selection\" is not symmetric at [%llu][%llu]",
                            (unsigned long long)i, (unsigned long long)j);
            if (i == j && profile->co_selection[i * E + i] != profile->usage[i])
                return fail(r, "\"co_selection\"[%llu][%llu] is not expert %llu's usage",
                            (unsigned long long)i, (unsigned long long)i, (unsigned long long)i);
        }
    if (profile->tokens > 0 && !info->given_bounds)
        return fail(r, "\"tokens\" is %llu but \"bounds_set\" is false",
                    (unsigned long long)profile->tokens);
    return 1;
}

moevk_result moevk_profile_parse(const char *text, size_t length, moevk_profile **out, char *error,
                                 size_t error_size) {
    if (error && error_size) error[0] = '\0';
    if (!out) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    reader r = {error, error_size};
    if (!text) return fail(&r, "no text"), MOEVK_ERROR_INVALID_ARGUMENT;
    cJSON *root = cJSON_ParseWithLength(text, length);
    if (!root) return fail(&r, "not JSON"), MOEVK_ERROR_INVALID_ARGUMENT;
    moevk_profile_info info;
    moevk_profile_info_init(&info);
    moevk_drift_thresholds thresholds;
    moevk_drift_thresholds_init(&thresholds);
    moevk_profile *profile = NULL;
    moevk_result result = MOEVK_ERROR_INVALID_ARGUMENT;
    if (!cJSON_IsObject(root))
        fail(&r, "the top level is not an object");
    else if (read_info(&r, root, &info) && read_thresholds(&r, root, &thresholds)) {
        profile = profile_new(&info);
        if (!profile)
            result = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
        else if (read_counts_of(&r, root, profile)) {
            profile->info.given_bounds = info.given_bounds;
            profile->thresholds = thresholds;
            result = MOEVK_SUCCESS;
        }
    }
    cJSON_Delete(root);
    if (result != MOEVK_SUCCESS)
        moevk_profile_destroy(profile);
    else
        *out = profile;
    return result;
}

moevk_result moevk_profile_load(const char *path, moevk_profile **out, char *error,
                                size_t error_size) {
    if (error && error_size) error[0] = '\0';
    if (!out) return MOEVK_ERROR_INVALID_ARGUMENT;
    *out = NULL;
    reader r = {error, error_size};
    if (!path) return fail(&r, "no path"), MOEVK_ERROR_INVALID_ARGUMENT;
    FILE *file = fopen(path, "rb");
    if (!file) return fail(&r, "cannot open %s", path), MOEVK_ERROR_INVALID_ARGUMENT;
    /* A profile of E = 1024 is some tens of megabytes; past 1 GiB it is not one. */
    char *text = NULL;
    size_t used = 0, capacity = 0;
    moevk_result result = MOEVK_SUCCESS;
    for (;;) {
        if (used == capacity) {
            if (capacity >= (1u << 30)) {
                fail(&r, "%s is larger than 1 GiB", path);
                result = MOEVK_ERROR_INVALID_ARGUMENT;
                break;
            }
            capacity = capacity ? capacity * 2 : 1 << 16;
            char *grown = realloc(text, capacity);
            if (!grown) {
                result = MOEVK_ERROR_OUT_OF_HOST_MEMORY;
                break;
            }
            text = grown;
        }
        size_t got = fread(text + used, 1, capacity - used, file);
        used += got;
        if (got == 0) break;
    }
    if (result == MOEVK_SUCCESS && ferror(file)) {
        fail(&r, "cannot read %s", path);
        result = MOEVK_ERROR_INVALID_ARGUMENT;
    }
    fclose(file);
    if (result == MOEVK_SUCCESS) result = moevk_profile_parse(text, used, out, error, error_size);
    free(text);
    return result;
}

#else /* built without cJSON */

moevk_result moevk_profile_save(const moevk_profile *profile, const char *path) {
    (void)profile, (void)path;
    return MOEVK_ERROR_UNSUPPORTED;
}

moevk_result moevk_profile_parse(const char *text, size_t length, moevk_profile **out, char *error,
                                 size_t error_size) {
    (void)text, (void)length;
    if (out) *out = NULL;
    if (error && error_size) snprintf(error, error_size, "moevk was built without cJSON");
    return MOEVK_ERROR_UNSUPPORTED;
}

moevk_result moevk_profile_load(const char *path, moevk_profile **out, char *error,
                                size_t error_size) {
    (void)path;
    return moevk_profile_parse(NULL, 0, out, error, error_size);
}
#endif
