"""Language models on the edge: sources (HF folder, GGUF), the exportable KV-cache decoder, its
ONNX export, weight quantization and generation figures."""
