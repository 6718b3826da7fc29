"""The converters: quantization schemes (ONNX Runtime and TFLite) and the onnx2tf driver, one
module each; the build's stages call them.

Every transformer scheme is a function ``(model, output, *, options) -> Path`` with a
frozen-dataclass ``options``; heavy backends (onnxruntime.quantization, tensorflow) are imported
inside the function that uses them, so importing this package is cheap. Why each scheme exists and what
it costs in accuracy is measured in ``scripts/measure_transformers.py``.

- ``ort_static``: static QDQ int8 of image/float models with the target profile's scheme (the
  build's ``model_int8.onnx``), and the scheme record the manifest carries.
- ``ort_dynamic``: int8 weights, activations quantized at run time (MatMulInteger).
- ``ort_static_transformer``: static QDQ int8 on MatMul/Gemm only; LayerNorm, Softmax, GELU
  and the pooling stay float.
- ``ort_int4``: weight-only int4 (MatMulNBits), after rewriting Gemm into MatMul.
- ``tflite_variants``: the one onnx2tf driver (``convert_onnx``), and TFLite dynamic-range int8,
  int8 with float fallback, fp16, from the SavedModel onnx2tf writes.
- ``_io``: shared plumbing: model in, file out, the int8/uint8 -> QuantType table and the one
  calibration data reader.
- ``onnx_rewrites``: exact graph rewrites (Gemm -> MatMul, ReduceL2 -> ReduceSum/Sqrt, Erf-GELU ->
  Gelu, duplicate value names from the exporter) and which ops full-integer TFLite keeps float.
"""
