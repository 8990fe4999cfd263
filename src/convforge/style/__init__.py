"""Style transfer: Gatys et al.'s image optimization and Johnson et al.'s fast feed-forward network, trained by a
recipe (`task: style`) and exported like any model; both measure style and content with a VGG built by convforge
(features.py), whose ImageNet weights load from a local file."""
