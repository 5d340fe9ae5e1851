#version 450
// An empty compute shader: what one dispatch costs when it does nothing (the launch floor).
layout(local_size_x = 64) in;
void main() {}
