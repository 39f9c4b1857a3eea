"""The teacher's conv layers as a graph: tracing, the layer list, BatchNorm folding."""
