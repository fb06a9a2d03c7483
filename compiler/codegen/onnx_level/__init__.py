"""ONNX rewrites a pipeline applies before TVM imports the graph (exact numerics)."""
