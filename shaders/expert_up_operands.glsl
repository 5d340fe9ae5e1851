// The routed experts' up projection's operands (expert_up.comp): a row's hidden state, gathered
// through row_token (rows no token fills read as zeros), and the experts' up and gate weights
// [E, f, d]. Includes ffn.glsl.
#define FFN_DUAL
#include "ffn.glsl"
DEFINE_WEIGHT_READER(up_weight, expert_up_words)
DEFINE_WEIGHT_READER(gate_weight, expert_gate_words)
DEFINE_WEIGHT_CHUNK_READER(up_chunk, expert_up_words)
DEFINE_WEIGHT_CHUNK_READER(gate_chunk, expert_gate_words)
DEFINE_WEIGHT_QUAD_READER(up_quad, expert_up_words)
DEFINE_WEIGHT_QUAD_READER(gate_quad, expert_gate_words)

float ffn_input(uint row, uint k) {
    int token = row_token[row];
    return token < 0 ? 0.0 : hidden_element(uint(token) * P.hidden_size + k);
}
float ffn_weight(uint expert, uint n, uint k) {
    return up_weight((expert * P.intermediate_size + n) * P.hidden_size + k);
}
float ffn_weight2(uint expert, uint n, uint k) {
    return gate_weight((expert * P.intermediate_size + n) * P.hidden_size + k);
}
void ffn_weight_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    up_chunk((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight2_chunk(uint expert, uint n, uint k0, out float w[WEIGHT_CHUNK]) {
    gate_chunk((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight_quad(uint expert, uint n, uint k0, out float w[4]) {
    up_quad((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}
void ffn_weight2_quad(uint expert, uint n, uint k0, out float w[4]) {
    gate_quad((expert * P.intermediate_size + n) * P.hidden_size + k0, w);
}

