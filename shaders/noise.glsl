// Router noise from Philox4x32-10 (Salmon et al. 2011, Random123): key = the seed's two 32-bit
// halves, counter = (token + noise_row_offset, expert, step, layer), all read from the noise
// state buffer, as the amount is (so that a recorded route serves every step). Word 0 gives
// u = (x >> 8) * 2^-24 + 2^-25 in (0, 1); Gaussian noise uses words 0 and 1 by Box-Muller.
// engine's CPU reference (reference/noise.c) computes the same numbers.
uvec4 philox4x32_10(uvec4 counter, uvec2 key) {
    for (uint round = 0u; round < 10u; ++round) {
        if (round > 0u) key += uvec2(0x9E3779B9u, 0xBB67AE85u);
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, counter.x, hi0, lo0);
        umulExtended(0xCD9E8D57u, counter.z, hi1, lo1);
        counter = uvec4(hi1 ^ counter.y ^ key.x, lo1, hi0 ^ counter.w ^ key.y, lo0);
    }
    return counter;
}

// The call's noise amount: Gaussian std, jitter's epsilon, Gumbel's scale (learned std: its
// epsilon).
float noise_amount() { return uintBitsToFloat(noise_state[NOISE_STATE_AMOUNT]); }

precise float noise_uniform(uint word) {
    return float(word >> 8) * (1.0 / 16777216.0) + (1.0 / 33554432.0);
}

// Jitter's factor from word 0's uniform: 1 - amount + 2 amount u, correctly rounded f32
// operations, no contraction (bit-identical to the CPU); the scores' slope where they use it.
precise float jitter_factor(float u0) {
    float amount = noise_amount();
    return (1.0 - amount) + (2.0 * amount) * u0;
}

// The Gaussian noise's std for a token and an expert: the router's, each expert's, or learned
// per token and expert (noise_std.comp).
float noise_std(uint token, uint expert) {
    if ((P.flags & FLAG_NOISE_STD_PER_EXPERT) != 0u) return noise_std_values[expert];
    if ((P.flags & FLAG_NOISE_STD_LEARNED) != 0u)
        return noise_std_values[token * P.num_experts + expert];
    return noise_amount();
}

// The Philox words of (token, expert) at the route's step and layer.
uvec4 noise_bits(uint token, uint expert) {
    uvec4 counter = uvec4(token + noise_state[NOISE_STATE_ROW_OFFSET], expert,
                          noise_state[NOISE_STATE_STEP], noise_state[NOISE_STATE_LAYER]);
    return philox4x32_10(counter, uvec2(noise_state[NOISE_STATE_SEED_LOW],
                                        noise_state[NOISE_STATE_SEED_HIGH]));
}

// A standard normal number by Box-Muller from Philox words 0 and 1.
float standard_normal(uvec4 bits) {
    return sqrt(-2.0 * log(noise_uniform(bits.x))) * cos(6.2831853071795864 * noise_uniform(bits.y));
}

// The standard normal sample of (token, expert); the Gaussian noise is the std times it.
float gaussian_sample(uint token, uint expert) {
    return standard_normal(noise_bits(token, expert));
}

// The logit after noise, for a token and an expert (NOISE_NONE: the logit itself).
precise float noisy_logit(float logit, uint token, uint expert) {
    if (P.noise_kind == NOISE_NONE || isinf(logit) || isnan(logit)) return logit;
    uvec4 bits = noise_bits(token, expert);
    float u0 = noise_uniform(bits.x);
    if (P.noise_kind == NOISE_JITTER) {
        // Correctly rounded f32 operations, no contraction: bit-identical to the CPU.
        precise float noisy = logit * jitter_factor(u0);
        return noisy;
    }
    if (P.noise_kind == NOISE_GAUSSIAN)
        return logit + noise_std(token, expert) * standard_normal(bits);
    return logit - noise_amount() * log(-log(u0)); // Gumbel
}
