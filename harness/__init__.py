"""The validation harness: a model's accuracy on the user's data and its latency as an
application sees it, for the fp32 reference and any number of candidates (ONNX models or
edgec artifacts), with a report."""
