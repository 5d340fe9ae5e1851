// Row geometry of [rows, d] buffers of hidden_type elements, shared by dispatch and combine.
// A row is moved in the widest unit that divides its length in bytes: 16 bytes, 4 bytes, or
// (16-bit types with odd d) single elements packed two to a 32-bit word.
uint element_bytes() { return DTYPE == DTYPE_F32 ? 4u : 2u; }
uint row_bytes() { return P.hidden_size * element_bytes(); }
uint unit_bytes() {
    uint bytes = row_bytes();
    return bytes % 16u == 0u ? 16u : (bytes % 4u == 0u ? 4u : 0u);
}
