// The hidden states [T, d] element by element, whatever their type. Needs common.glsl.

// Element i of the hidden states [T, d] (hidden_type).
float hidden_element(uint i) {
    if (HIDDEN_DTYPE == DTYPE_F32) return uintBitsToFloat(hidden_word(i));
    return decode_element(hidden_word(i >> 1), i, HIDDEN_DTYPE);
}

// Element i as a weight's gradient takes it: 0 where it is infinite or NaN. A row holding one
// has non-finite logits, so the route leaves it out and its dL/dlogits is 0, which must add
// nothing (0 * inf is NaN). Tested on the bits: no compiler may assume it finite.
float gradient_hidden_element(uint i) {
    float x = hidden_element(i);
    return (floatBitsToUint(x) & 0x7F800000u) == 0x7F800000u ? 0.0 : x;
}
