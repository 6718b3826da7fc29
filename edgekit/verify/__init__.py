"""Verification: how the build judges an artifact against its reference model.

- ``rule``: THE tolerance rule, output agreement and verdict semantics (re-exported from the
  standalone device runner, so the build and the device judge with the same code), and the
  profile's tolerances as the absolute numbers the manifest carries.
- ``metrics``: task metrics of the accuracy stage (top-1, embedding cosine, perplexity,
  next-token agreement).
- ``hostrun``: runs artifacts on the build host (LiteRT / ONNX Runtime, kernels or reference).
- ``hostinfo``: the verifying CPU (int8 ISA, features) and the installed stack.
"""
