// The learned Gaussian std's pre-activation, from the hidden states and W_noise: noise_std.comp
// and the losses' backward. Needs common.glsl and hidden.glsl.

// A learned std's pre-activation x_t . W_noise[:, e], in f32 in index order: noise_std.comp takes
// its softplus, and the losses' backward its slope, from the same sum.
float learned_noise_preactivation(uint token, uint expert) {
    uint E = P.num_experts, d = P.hidden_size;
    float dot_product = 0.0;
    for (uint j = 0u; j < d; ++j)
        dot_product += hidden_element(token * d + j) * noise_weights[j * E + expert];
    return dot_product;
}
