"""Models: the declarative registry, the verified local store, and ONNX Runtime session creation."""
