"""Chapter-specific mechanisms that are not a model or a training loop, as pure functions.

The perceptron learning rule, hand-written backpropagation, hand-set weights, XOR seed
sweeps and the like live here; ``experiments/`` scripts put them together into runs.
"""
