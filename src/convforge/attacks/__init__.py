"""Adversarial attacks on image classifiers, each returning an AttackResult (x_adv, success, queries, norm).

White-box attacks take a Keras classifier (or a recipe, run folder or .keras path, whose saved preprocessing is
then applied inside); black-box attacks take predict(x) -> probabilities, such as `artifact_predictor` over an
exported TFLite or ONNX model. x and eps are in the pixel scale `clip` gives (0..1 by default).

Examples:
    >>> from convforge import attacks
    >>> result = attacks.pgd("runs/lenet5_digits/20261127-101500", x, y, eps=0.1, steps=20)   # doctest: +SKIP
    >>> tflite = attacks.artifact_predictor("saved_models/lenet5_digits/model.tflite")          # doctest: +SKIP
    >>> attacks.square(tflite, x, y, eps=0.1, max_queries=1000).success_rate                     # doctest: +SKIP
"""
from convforge.attacks.black_box import hop_skip_jump, simba, square, transfer
from convforge.attacks.patch import PatchResult, adversarial_patch
from convforge.attacks.target import AttackResult, WhiteBox, artifact_predictor
from convforge.attacks.white_box import carlini_wagner, deepfool, fgsm, pgd

WHITE_BOX = {"fgsm": fgsm, "pgd": pgd, "carlini_wagner": carlini_wagner, "deepfool": deepfool}
BLACK_BOX = {"square": square, "simba": simba, "hop_skip_jump": hop_skip_jump}
ATTACKS = (*WHITE_BOX, *BLACK_BOX, "transfer", "patch")

__all__ = ["ATTACKS", "AttackResult", "PatchResult", "WhiteBox", "adversarial_patch", "artifact_predictor",
           "carlini_wagner", "deepfool", "fgsm", "hop_skip_jump", "pgd", "simba", "square", "transfer"]
