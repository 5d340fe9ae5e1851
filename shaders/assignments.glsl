// Assignments are numbered k-major (every token's rank-0 choice, then rank 1, ...): bucketing
// walks them in that order. Needs P.num_tokens and P.choices.

// The k-major number of a token's choice of rank j.
uint choice_assignment(uint token, uint rank) { return rank * P.num_tokens + token; }

// Assignment `a` in k-major order (rank-major, then token) -> index into the [T, k] arrays.
uint assignment_to_choice(uint a) {
    uint rank = a / P.num_tokens;
    uint token = a - rank * P.num_tokens;
    return token * P.choices + rank;
}
