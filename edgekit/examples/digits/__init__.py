"""A small CNN for scikit-learn's 8x8 digits, with shipped trained weights.

``model.load_model()`` returns the trained model; ``train`` re-creates the weights. Nothing heavy
is imported here: import ``edgekit.examples.digits.model`` (needs torch) explicitly.
"""
