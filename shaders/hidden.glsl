// The hidden states [T, d] element by element, whatever their type. Needs common.glsl.

// Element i of the hidden states [T, d] (hidden_type).
float hidden_element(uint i) {
    if (HIDDEN_DTYPE == DTYPE_F32) return uintBitsToFloat(hidden_word(i));
    return decode_element(hidden_word(i >> 1), i, HIDDEN_DTYPE);
}
