#version 450
#extension GL_GOOGLE_include_directive : require
// The routing profile of a batch: each valid token's five measures (entropy, top-1 probability,
// top-1 minus top-2, raw logsumexp, energy: scores_topk.comp's row stats and row measures) and
// their histograms, with the
// co-selected pairs of experts and the count of energies past the drift's threshold. Every sum
// is a count (integer atomics), so the order tokens arrive in changes no bit.
//   PROFILE_PHASE_MEASURES    grid: tokens. The measures into profile_measures [T, 5]; their
//                             extremes (when the bounds are not given), the tail count, the
//                             pairs (k >= 2: both (a, b) and (b, a), and (a, a) per selection).
//   PROFILE_PHASE_HISTOGRAMS  grid: tokens. Each measure into its histogram, between the given
//                             bounds or the batch's extremes widened by a quarter of their span
//                             on each side (by 0.5 where the span is 0); invocation 0 writes the
//                             bounds used into the header.
#include "profile.h"
#define STAGE_BUFFERS PROFILE_BUFFERS
#define STAGE_PARAMS PROFILE_PARAMS
#include "common.glsl"

// Floats as uints in the same order (negative values reversed), for atomicMin and atomicMax.
uint ordered(float x) {
    uint bits = floatBitsToUint(x);
    return (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
}
float unordered(uint u) {
    return uintBitsToFloat((u & 0x80000000u) != 0u ? u & 0x7FFFFFFFu : ~u);
}

void count_pairs(uint t) {
    uint base = t * CHOICES;
    for (uint i = 0u; i < CHOICES; ++i) {
        int a = expert_ids[base + i];
        if (a < 0) continue;
        atomicAdd(profile[PROFILE_PAIRS + uint(a) * P.num_experts + uint(a)], 1u);
        for (uint j = i + 1u; j < CHOICES; ++j) {
            int b = expert_ids[base + j];
            if (b < 0) continue;
            atomicAdd(profile[PROFILE_PAIRS + uint(a) * P.num_experts + uint(b)], 1u);
            atomicAdd(profile[PROFILE_PAIRS + uint(b) * P.num_experts + uint(a)], 1u);
        }
    }
}

void measure(uint t) {
    if (row_flags[t] != ROW_VALID) return;
    vec4 stats = row_stats[t], m = row_measures[t]; // m: top-1, top-2, energy
    precise float margin = m.x - m.y;
    float values[PROFILE_MEASURES] = float[](stats.w, m.x, margin, stats.z, m.z);
    for (uint q = 0u; q < PROFILE_MEASURES; ++q) {
        profile_measures[t * PROFILE_MEASURES + q] = values[q];
        if ((P.flags & FLAG_PROFILE_BOUNDS) == 0u) {
            atomicMin(profile[PROFILE_LEAST + q], ordered(values[q]));
            atomicMax(profile[PROFILE_GREATEST + q], ordered(values[q]));
        }
    }
    if ((P.flags & FLAG_PROFILE_TAIL) != 0u &&
        m.z > uintBitsToFloat(profile[PROFILE_TAIL_THRESHOLD]))
        atomicAdd(profile[PROFILE_TAIL_COUNT], 1u);
    if ((P.flags & FLAG_PROFILE_PAIRS) != 0u) count_pairs(t);
}

void bounds_of(uint q, out float lower, out float upper) {
    if ((P.flags & FLAG_PROFILE_BOUNDS) != 0u) {
        lower = uintBitsToFloat(profile[PROFILE_GIVEN_LOWER + q]);
        upper = uintBitsToFloat(profile[PROFILE_GIVEN_UPPER + q]);
        return;
    }
    float least = unordered(profile[PROFILE_LEAST + q]);
    float greatest = unordered(profile[PROFILE_GREATEST + q]);
    precise float span = greatest - least;
    precise float widened_lower = span > 0.0 ? least - 0.25 * span : least - 0.5;
    precise float widened_upper = span > 0.0 ? greatest + 0.25 * span : greatest + 0.5;
    precise float widened_span = widened_upper - widened_lower;
    // Past the float range, the extremes themselves.
    bool finite = !isinf(widened_span) && !isnan(widened_span);
    lower = finite ? widened_lower : least;
    upper = finite ? widened_upper : greatest;
}

// 0 below lower, 1 + the bin between, bins + 1 at or above upper.
uint bin_of(float x, float lower, float upper) {
    uint bins = P.profile_bins;
    if (!(x >= lower)) return 0u;
    if (!(x < upper)) return bins + 1u;
    precise float position = (x - lower) / (upper - lower) * float(bins);
    uint bin = position >= 0.0 ? uint(position) : 0u; // NaN (infinite span): the first
    return 1u + min(bin, bins - 1u);
}

void histogram(uint t) {
    if (row_flags[t] != ROW_VALID) return;
    for (uint q = 0u; q < PROFILE_MEASURES; ++q) {
        float lower, upper;
        bounds_of(q, lower, upper);
        uint bin = bin_of(profile_measures[t * PROFILE_MEASURES + q], lower, upper);
        atomicAdd(profile[PROFILE_HISTOGRAMS + q * PROFILE_HISTOGRAM_WORDS(PROFILE_MAX_BINS) + bin],
                  1u);
    }
}

void main() {
    uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    if (P.phase == PROFILE_PHASE_HISTOGRAMS && gl_GlobalInvocationID.x == 0u) {
        for (uint q = 0u; q < PROFILE_MEASURES; ++q) {
            float lower, upper;
            bounds_of(q, lower, upper);
            profile[PROFILE_USED_LOWER + q] = floatBitsToUint(lower);
            profile[PROFILE_USED_UPPER + q] = floatBitsToUint(upper);
        }
    }
    for (uint t = gl_GlobalInvocationID.x; t < P.num_tokens; t += stride) {
        if (P.phase == PROFILE_PHASE_MEASURES)
            measure(t);
        else
            histogram(t);
    }
}
