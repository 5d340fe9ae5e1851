/* moevk-bench's outputs: a table for people, JSON for machines, an SVG bar chart. */
#include <string.h>

#include "bench.h"

const char *const STAGE_NAMES[STAGE_N] = {"scores+topk", "bucketing", "dispatch",
                                          "combine",     "stats",     "route"};

const char *policy_name(bench_policy policy) {
    static const char *const NAMES[POLICY_COUNT] = {"position", "score",    "dropless", "sequence",
                                                    "batch",    "sinkhorn", "choice"};
    return (unsigned)policy < POLICY_COUNT ? NAMES[policy] : "position";
}

const char *dtype_name(moevk_dtype dtype) {
    static const char *const NAMES[] = {"f32",  "f16",  "bf16", "q8_0", "q4_0",
                                        "q4_k", "q6_k", "q5_0", "q5_k"};
    return (unsigned)dtype < sizeof NAMES / sizeof NAMES[0] ? NAMES[dtype] : "f32";
}

moevk_dtype dtype_named(const char *name) {
    for (int t = MOEVK_DTYPE_F32; t <= MOEVK_DTYPE_Q5_K; ++t)
        if (!strcmp(name, dtype_name((moevk_dtype)t))) return (moevk_dtype)t;
    return (moevk_dtype)-1;
}

double dtype_bytes_per_weight(moevk_dtype type) {
    switch (type) {
    case MOEVK_DTYPE_F32: return 4.0;
    case MOEVK_DTYPE_Q8_0: return 34.0 / 32;
    case MOEVK_DTYPE_Q4_0: return 18.0 / 32;
    case MOEVK_DTYPE_Q4_K: return 144.0 / 256;
    case MOEVK_DTYPE_Q6_K: return 210.0 / 256;
    case MOEVK_DTYPE_Q5_0: return 22.0 / 32;
    case MOEVK_DTYPE_Q5_K: return 176.0 / 256;
    default: return 2.0;
    }
}

/* What the whole route can not beat: its bytes at copy bandwidth, or its launches. */
static double floor_ms(const ceilings *ceil, const bench_case *c) {
    double bytes_ms =
        ceil->copy_gbps > 0 ? c->stages[STAGE_ROUTE].bytes / (ceil->copy_gbps * 1e9) * 1e3 : 0;
    double launches_ms = (c->counts.route_dispatches + 1) * ceil->launch_ms; /* + combine */
    return bytes_ms > launches_ms ? bytes_ms : launches_ms;
}

static double gbps(const stage_figures *s) {
    return s->median_ms > 0 ? s->bytes / (s->median_ms * 1e-3) * 1e-9 : 0;
}

void report_table(FILE *out, const bench_device *device, const ceilings *ceil,
                  const bench_case *cases, int count) {
    fprintf(out, "\n%s (%s %s), subgroup size %u\n", device->properties.deviceName,
            device->driver_name, device->driver_info, device->subgroup_size);
    fprintf(out,
            "copy ceiling %.1f GB/s (read + write of %.0f MiB; vkCmdCopyBuffer %.1f, shader %.1f), "
            "launch floor %.4f ms, FMA ceiling %.1f GFLOP/s\n",
            ceil->copy_gbps, ceil->copy_bytes / 2 / 1048576, ceil->transfer_copy_gbps,
            ceil->shader_copy_gbps, ceil->launch_ms, ceil->fma_gflops);
    fprintf(out,
            "context + router: cold %.1f ms, warm (pipeline cache) %.1f ms; first route %.1f ms "
            "(wall clock)\n",
            ceil->context_cold_ms, ceil->context_warm_ms, ceil->first_route_ms);
    fprintf(out, "GPU medians in ms (10th-90th percentile spread in %% of the median); dispatch "
                 "and combine GB/s and %% of the copy ceiling; the front end (top-k + bucketing): "
                 "dispatches/barriers recorded, and its time in launch floors\n");
    fprintf(out,
            "%7s %4s %2s %5s %-4s %-8s | %7s %7s %7s %7s %7s | %9s %9s | %8s %8s %6s %6s | %5s "
            "%6s\n",
            "T", "E", "k", "d", "type", "policy", "topk", "bucket", "dispat", "stats", "combine",
            "disp GB/s", "comb GB/s", "route", "best", "spread", "xfloor", "fe d/b", "fe xfl");
    for (int i = 0; i < count; ++i) {
        const bench_case *c = &cases[i];
        fprintf(out, "%7u %4u %2u %5u %-4s %-8s | ", c->T, c->E, c->k, c->d, dtype_name(c->dtype),
                policy_name(c->policy));
        if (!c->ran) {
            fprintf(out, "skipped: %s\n", c->skipped);
            continue;
        }
        const stage_figures *s = c->stages;
        const stage_figures *r = &s[STAGE_ROUTE];
        double spread = r->median_ms > 0 ? 100.0 * (r->high_ms - r->low_ms) / r->median_ms : 0;
        double front_ms = s[STAGE_TOPK].median_ms + s[STAGE_BUCKET].median_ms;
        fprintf(out,
                "%7.3f %7.3f %7.3f %7.3f %7.3f | %5.0f %2.0f%% %5.0f %2.0f%% | %8.3f %8.3f %5.1f%% "
                "%6.1f | %2u/%-2u %6.1f\n",
                s[STAGE_TOPK].median_ms, s[STAGE_BUCKET].median_ms, s[STAGE_DISPATCH].median_ms,
                s[STAGE_STATS].median_ms, s[STAGE_COMBINE].median_ms, gbps(&s[STAGE_DISPATCH]),
                ceil->copy_gbps > 0 ? 100 * gbps(&s[STAGE_DISPATCH]) / ceil->copy_gbps : 0,
                gbps(&s[STAGE_COMBINE]),
                ceil->copy_gbps > 0 ? 100 * gbps(&s[STAGE_COMBINE]) / ceil->copy_gbps : 0,
                r->median_ms, r->best_ms, spread, r->median_ms / floor_ms(ceil, c),
                c->counts.front_end_dispatches, c->counts.front_end_barriers,
                ceil->launch_ms > 0 ? front_ms / ceil->launch_ms : 0);
    }
}

static void json_string(FILE *f, const char *text) {
    fputc('"', f);
    for (; *text; ++text) {
        if (*text == '"' || *text == '\\') fputc('\\', f);
        if ((unsigned char)*text >= 0x20) fputc(*text, f);
    }
    fputc('"', f);
}

int report_json(const char *path, const bench_device *device, const ceilings *ceil,
                const bench_case *cases, int count) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    const VkPhysicalDeviceProperties *p = &device->properties;
    fprintf(f, "{\n  \"device\": ");
    json_string(f, p->deviceName);
    fprintf(f, ",\n  \"vendor_id\": %u,\n  \"driver_name\": ", p->vendorID);
    json_string(f, device->driver_name);
    fprintf(f, ",\n  \"driver_info\": ");
    json_string(f, device->driver_info);
    fprintf(
        f,
        ",\n  \"driver_version\": %u,\n  \"api_version\": \"%u.%u.%u\",\n  \"subgroup_size\": %u,\n"
        "  \"moevk_version\": \"%s\",\n  \"copy_gbps\": %.3f,\n  \"transfer_copy_gbps\": %.3f,\n"
        "  \"shader_copy_gbps\": %.3f,\n  \"launch_floor_ms\": %.6f,\n  \"fma_gflops\": %.3f,\n"
        "  \"context_cold_ms\": %.3f,\n  \"context_warm_ms\": %.3f,\n  \"first_route_ms\": %.3f,\n"
        "  \"cases\": [",
        p->driverVersion, VK_API_VERSION_MAJOR(p->apiVersion), VK_API_VERSION_MINOR(p->apiVersion),
        VK_API_VERSION_PATCH(p->apiVersion), device->subgroup_size, moevk_version_string(),
        ceil->copy_gbps, ceil->transfer_copy_gbps, ceil->shader_copy_gbps, ceil->launch_ms,
        ceil->fma_gflops, ceil->context_cold_ms, ceil->context_warm_ms, ceil->first_route_ms);
    for (int i = 0; i < count; ++i) {
        const bench_case *c = &cases[i];
        fprintf(f,
                "%s\n    {\"T\": %u, \"E\": %u, \"k\": %u, \"d\": %u, \"dtype\": \"%s\", "
                "\"policy\": \"%s\"",
                i ? "," : "", c->T, c->E, c->k, c->d, dtype_name(c->dtype), policy_name(c->policy));
        if (!c->ran) {
            fprintf(f, ", \"skipped\": ");
            json_string(f, c->skipped);
            fprintf(f, "}");
            continue;
        }
        fprintf(f, ", \"capacity\": %u, \"floor_ms\": %.6f", c->capacity, floor_ms(ceil, c));
        fprintf(f,
                ",\n     \"recording\": {\"front_end_dispatches\": %u, \"front_end_barriers\": %u, "
                "\"route_dispatches\": %u, \"route_barriers\": %u}",
                c->counts.front_end_dispatches, c->counts.front_end_barriers,
                c->counts.route_dispatches, c->counts.route_barriers);
        for (int s = 0; s < STAGE_N; ++s)
            fprintf(f,
                    ",\n     \"%s\": {\"median_ms\": %.6f, \"best_ms\": %.6f, \"p10_ms\": %.6f, "
                    "\"p90_ms\": %.6f, \"bytes\": %.0f, \"gbps\": %.3f}",
                    STAGE_NAMES[s], c->stages[s].median_ms, c->stages[s].best_ms,
                    c->stages[s].low_ms, c->stages[s].high_ms, c->stages[s].bytes,
                    gbps(&c->stages[s]));
        fprintf(f, "}");
    }
    fprintf(f, "\n  ]\n}\n");
    return fclose(f) == 0;
}

int report_svg(const char *path, const bench_device *device, const bench_case *cases, int count) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    static const char *const colors[5] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1"};
    int ran = 0;
    double most = 0;
    for (int i = 0; i < count; ++i)
        if (cases[i].ran) {
            ++ran;
            if (cases[i].stages[STAGE_ROUTE].median_ms > most)
                most = cases[i].stages[STAGE_ROUTE].median_ms;
        }
    int bar = 22, left = 300, width = 860, top = 50;
    int height = top + ran * (bar + 6) + 60;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n",
            left + width + 40, height);
    fprintf(f,
            "<text x=\"10\" y=\"20\" font-size=\"15\">moevk route + combine, GPU median ms: "
            "%s</text>\n",
            device->properties.deviceName);
    for (int s = 0; s < 5; ++s)
        fprintf(f,
                "<rect x=\"%d\" y=\"28\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" "
                "y=\"39\">%s</text>\n",
                left + s * 130, colors[s], left + s * 130 + 16, STAGE_NAMES[s]);
    int row = 0;
    for (int i = 0; i < count; ++i) {
        const bench_case *c = &cases[i];
        if (!c->ran) continue;
        int y = top + row++ * (bar + 6);
        fprintf(f, "<text x=\"10\" y=\"%d\">T=%u E=%u k=%u d=%u %s %s</text>\n", y + 15, c->T, c->E,
                c->k, c->d, dtype_name(c->dtype), policy_name(c->policy));
        double x = left;
        for (int s = 0; s < 5; ++s) {
            double w = most > 0 ? c->stages[s].median_ms / most * width : 0;
            fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", x,
                    y, w, bar, colors[s]);
            x += w;
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.3f</text>\n", x + 4, y + 15,
                c->stages[STAGE_ROUTE].median_ms);
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0;
}
