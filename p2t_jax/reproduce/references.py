"""The reference figure beside each claim: what the paper or the series says, keyed by claim name.

The names are those the experiments give their claims in ``results.json``. A claim not
listed here is reported with no reference (the report says so rather than guessing).
"""

from __future__ import annotations

REFERENCES: dict[str, str] = {
    # 1. The perceptron (Rosenblatt 1958; Minsky & Papert 1969; Novikoff 1962)
    "and_learned": "Rosenblatt's rule converges on any linearly separable set (AND is one)",
    "or_learned": "Rosenblatt's rule converges on any linearly separable set (OR is one)",
    "nand_learned": "Rosenblatt's rule converges on any linearly separable set (NAND is one)",
    "xor_never_learned": "Minsky & Papert 1969: no single line separates XOR, so some error remains every epoch",
    "xnor_never_learned": "Minsky & Papert 1969: no single line separates XNOR",
    "separable_converged": "Novikoff 1962: convergence on every separable set",
    "within_novikoff_bound": "Novikoff 1962: at most (R/gamma)^2 updates",
    # 2. The MLP
    "linear_layers_collapse": "series: two linear layers equal one (the product of the matrices)",
    "nonlinear_layers_do_not_collapse": "series: a non-linearity between the layers breaks the collapse",
    "hand_xor_accuracy": "series: a 2-2-1 sigmoid net with hand weights (OR minus AND) solves XOR, 4/4",
    "hand_xor_outputs": "series: outputs near 0 / 1 / 1 / 0 on 00 / 01 / 10 / 11",
    "hand_xor_hidden_units": "series: the hidden units compute OR and AND",
    "hidden_space_separable": "series: in the hidden space XOR is linearly separable (chapter 1's rule learns it)",
    # 3. Backpropagation
    "backprop_matches_jax_grad": "series: the hand-written chain rule equals autodiff",
    "wide_converges_all_seeds": "series: 2-4-1 converges on XOR from every seed",
    "narrow_stuck_on_some_seeds": "series: 2-2-1 gets stuck on some seeds",
    "vmap_equals_loop": "the vmapped sweep equals a Python loop of the same runs",
    "smooth_lr_converges": "series: a small learning rate converges",
    "smooth_lr_falls_smoothly": "series: a small learning rate gives a smooth loss curve",
    "high_lr_oscillates": "series: the loss oscillates at lr 1.0; measured here: first rises near lr 4 = "
                          "2/lambda_max of the Hessian at initialisation",
    "lr_1_oscillates": "series: at learning rate 1.0 the loss oscillates",
    # 4. Optimisers
    "adam_ahead_after_epoch1": "series: Adam ahead of SGD after epoch 1 on MNIST",
    "full_mnist_98": "a 784-512-512-10 MLP reaches ~98.4% on full MNIST",
    # 5. Regularisation
    "baseline_overfits": "series: an unregularised 784-512-512-10 MLP overfits (train near 100%, test stalls)",
    "dropout_and_decay_shrink_gap": "series: dropout 0.2 + weight decay 1e-4 shrink the train/test gap",
    # 6. CNN
    "cnn_beats_mlp": "series: the CNN beats the MLP on the same MNIST subset; a small CNN reaches ~99.2% on full "
                     "MNIST (Flax's example: 99.17% after 10 epochs)",
    "far_fewer_first_layer_weights": "series: ~1/1000 of the MLP's first-layer weights (288 vs 100,352 here)",
    # 7. Batch norm and residual connections
    "plain_layer1_gradient_vanishes": "series: a 30-layer plain net's layer-1 gradient is orders of magnitude below "
                                      "the residual net's",
    "bn_keeps_preactivations_normal": "Ioffe & Szegedy 2015: batch norm keeps each layer's inputs near N(0, 1)",
    "without_bn_preactivations_drift": "Ioffe & Szegedy 2015: without it the layer inputs' distribution drifts",
    "deeper_plain_trains_worse_without_bn": "He et al. 2016, Fig. 6: plain-56 trains worse than plain-20 (CIFAR-10)",
    "deeper_plain_trains_worse_with_bn": "He et al. 2016, Fig. 6: the degradation appears with batch norm too",
    "residual_does_not_degrade_without_bn": "He et al. 2016: ResNet-20 / 56 / 110 error 8.75 / 6.97 / 6.43% "
                                            "(deeper is better)",
    "residual_does_not_degrade_with_bn": "He et al. 2016: ResNet-20 / 56 / 110 error 8.75 / 6.97 / 6.43% "
                                         "(deeper is better)",
    "residual_loss_ratio_to_shallowest_without_bn": "He et al. 2016: deeper residual nets train no worse",
    "residual_loss_ratio_to_shallowest_with_bn": "He et al. 2016: deeper residual nets train no worse",
    # 8. Recurrent networks
    "rnn_learns_trained_range": "series: the vanilla RNN learns the trained 2-5 fillers",
    "gated_cells_hold": "series: the LSTM holds past the trained range; Hochreiter & Schmidhuber 1997: LSTM solves "
                        "lag 100 in 100% of runs",
    "gradient_vanishes_for_rnn": "Bengio et al. 1994: the RNN's gradient shrinks geometrically with distance; "
                                 "Hochreiter & Schmidhuber 1997: plain RNNs solve lag 4 in 78% of runs, lag 10 in 0%",
    "rnn_falls_toward_chance": "series: the vanilla RNN falls toward chance (1/6) by ~10-15 fillers",
    # 9. Attention
    "attention_finds_the_verb": "series: on verb-final -> verb-second reordering the learned alignment is "
                                "off-diagonal (on the source verb)",
    "attention_holds_with_length": "Bahdanau et al. 2015: attention keeps quality on longer sentences",
    "scaling_prevents_saturation": "Vaswani et al. 2017: 1/sqrt(d) scaling keeps the softmax from saturating",
    # 10. The Transformer
    "bigger_model_lower_val_loss": "series: the 826K model beats the 112K one on validation loss; nanoGPT's CPU "
                                   "recipe reaches ~1.88, its GPU recipe 1.47",
    "bigger_model_more_real_words": "series: the 826K model's samples are better structured",
    # 11. Pointer networks
    "sort_trained_lengths": "a PyTorch reproduction: 98.6% per pointer sorting 5 integers, 92.4% for 10",
    "sort_degrades_gracefully": "series: accuracy degrades gracefully on longer inputs; an RL-trained sorter: order "
                                "score 0.997 at 10, 0.75 / 0.56 at 15 / 20",
    "hull_area": "Vinyals et al. 2015, Table 1: area covered 99.2% (trained on 5-50); exact 92.0% at n=5, "
                 "87.0% at n=10",
    "tsp_near_optimal": "Vinyals et al. 2015, Table 2: n=5 2.12 (optimal 2.12), n=10 2.88 (optimal 2.87)",
    "beam_not_worse": "Vinyals et al. 2015: beam search over the pointer distribution",
}


def reference(claim: str) -> str:
    """The reference figure for ``claim``, or an empty string when none is recorded."""
    return REFERENCES.get(claim, "")
