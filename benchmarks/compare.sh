#!/bin/sh
# The architecture comparison in the README: params, MACs, size, batch-1 CPU latency (Keras and TFLite fp32)
# of ten classic CNNs at 224x224. Writes benchmarks/results/compare/compare.{json,md,png}. Run: make bench
# Extra arguments pass through, e.g. --train-recipe recipes/classification/lenet5_digits.yaml --set train.epochs=5
set -e
cd "$(dirname "$0")/.."
CONVFORGE="${CONVFORGE:-.venv/bin/convforge}"
TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" "$CONVFORGE" compare \
    --models 'lenet5,alexnet,vgg11,googlenet,resnet18,resnet50,densenet121,squeezenet1_1,mobilenet_v2,inception_v3' \
    --input-size 224 --out benchmarks/results/compare "$@"
