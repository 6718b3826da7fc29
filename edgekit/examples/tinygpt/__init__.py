"""TinyGPT: a byte-level GPT-style causal language model trained offline on the standard
library's docstrings, with shipped weights (``tinygpt.pt``).

``model.factory`` serves ``edgekit/examples/tinygpt/model.py:factory``: input ``input_ids`` int64
``[1, 64]`` (bytes 0..255), output ``logits`` float32 ``[1, 64, 256]``. ``corpus`` builds the
training and held-out text, ``train`` re-creates the weights. Nothing heavy is imported here.
"""
