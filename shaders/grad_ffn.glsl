// Which FFN a backward kernel of the experts runs on (the five grad_expert_*.comp): the routed
// experts' (their rows gathered by the route, in the tile map's tiles) or, built with SHARED_FFN
// (the "shared" variant), the shared experts' (one expert, every token a row, tiles of
// TILE_ROWS tokens). The kernels' bodies are the same; these name what differs. Needs
// common.glsl (and hidden.glsl for row_x). Macros, not functions, where they touch a buffer: a
// kernel declares only the buffers of the macros it uses.
#ifdef SHARED_FFN
#define UP_WORDS shared_up_words
#define GATE_WORDS shared_gate_words
#define DOWN_WORDS shared_down_words
#define FFN_BIAS shared_bias
#define FFN_H shared_intermediate
#define GRAD_PRE_VALUES grad_shared_pre
#define GRAD_GATE_VALUES grad_shared_gate
#define GRAD_UP_VALUES grad_shared_up
#define GRAD_DOWN_VALUES grad_shared_down
#define GRAD_BIAS_VALUES grad_shared_bias
#define FFN_F P.shared_intermediate_size
#define FFN_EXPERTS 1u

// A tile of TILE_ROWS tokens, grid y.
uvec4 backward_tile() {
    uint begin = gl_WorkGroupID.y * TILE_ROWS;
    return uvec4(0u, begin, min(begin + TILE_ROWS, P.num_tokens), 0u);
}
#define row_x(row, k) hidden_element((row) * P.hidden_size + (k))
// The shared output's upstream gradient: dL/doutput, times the token's gate when gated.
#define row_dy(row, i)                                                                             \
    (grad_output[(row) * P.hidden_size + (i)] *                                                    \
     ((P.flags & FLAG_SHARED_GATE) != 0u ? shared_scale[row] : 1.0))
#define expert_row_count(expert) P.num_tokens
#define expert_first_row(expert) 0u
#else
#define UP_WORDS expert_up_words
#define GATE_WORDS expert_gate_words
#define DOWN_WORDS expert_down_words
#define FFN_BIAS expert_bias
#define FFN_H intermediate
#define GRAD_PRE_VALUES grad_pre
#define GRAD_GATE_VALUES grad_expert_gate
#define GRAD_UP_VALUES grad_expert_up
#define GRAD_DOWN_VALUES grad_expert_down
#define GRAD_BIAS_VALUES grad_expert_bias
#define FFN_F P.intermediate_size
#define FFN_EXPERTS NUM_EXPERTS

// The tile map's tile, grid y (expert_tiles.comp).
#define backward_tile() tile_entries[TILE_ENTRIES / 4u + gl_WorkGroupID.y]
// A row's hidden state, gathered through row_token (rows no token fills read as zeros).
#define row_x(row, k)                                                                              \
    (row_token[row] < 0 ? 0.0 : hidden_element(uint(row_token[row]) * P.hidden_size + (k)))
// The row's share of dL/doutput, w * dL/doutput (grad_combine.comp).
#define row_dy(row, i) grad_expert_out[(row) * P.hidden_size + (i)]
// The expert's kept rows: their count and the first (capacity layout: e C; dropless: offsets).
#define expert_row_count(expert) expert_info[NUM_EXPERTS + (expert)]
#define expert_first_row(expert)                                                                   \
    ((P.flags & FLAG_DROPLESS) != 0u ? expert_info[2u * NUM_EXPERTS + (expert)]                    \
                                     : (expert) * P.capacity)
#endif

// The pre-activations' gradients: after the forward's pre-activations (up's, then gate's, each
// grad_pre_stride floats), which stay as they are, so that a second backward of the same forward
// finds them again.
#define PRE_GRADIENT(i) GRAD_PRE_VALUES[2u * P.grad_pre_stride + (i)]
