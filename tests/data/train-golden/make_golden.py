#!/usr/bin/python3
"""Writes PyTorch's forward and backward on small nets, for the unit test
tests/unit/test_train_golden.c (which does not need torch).

For each net: NAME.yaml, the architecture in kiln train's language, and
NAME.bin, float32 arrays (little-endian), each stored as
    u32 name length, name, u32 count, count float32
in this order:
    params      every parameter in kiln's layout (per layer: conv/dense
                weight, bias; batch norm gamma, beta, running mean, running
                variance), seeded
    x           the input batch, N x C x H x W
    labels      N class indices (as floats)
    logits      the forward pass in training mode (batch statistics)
    loss        mean softmax cross-entropy (1 value)
    grads       d loss / d params in the same layout (0 for running stats)
    after       params after that forward pass (running stats updated with
                momentum 0.1 and the unbiased batch variance)

usage: /usr/bin/python3 tests/data/train-golden/make_golden.py   (python3-torch)
"""
import os
import struct

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))


def conv_bn(cin, cout, k, stride, relu):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU()] if relu else [])


class Block(nn.Module):
    """kiln's residual block: main branch, then the 1x1 projection (when the
    stride or width changes), add, ReLU. Registration order = kiln's."""

    def __init__(self, cin, mid, cout, stride):
        super().__init__()
        if mid:
            main = conv_bn(cin, mid, 1, 1, True) + conv_bn(mid, mid, 3, stride, True) + \
                conv_bn(mid, cout, 1, 1, False)
        else:
            main = conv_bn(cin, cout, 3, stride, True) + conv_bn(cout, cout, 3, 1, False)
        self.main = nn.Sequential(*main)
        self.proj = nn.Sequential(*conv_bn(cin, cout, 1, stride, False)) \
            if stride != 1 or cin != cout else None

    def forward(self, x):
        return torch.relu(self.main(x) + (self.proj(x) if self.proj is not None else x))


NETS = {
    "cnn": ("""name: cnn
input: {channels: 2, height: 8, width: 8}
layers:
  - {type: conv, filters: 4, kernel: 3, pad: 1, act: relu}
  - {type: maxpool, size: 2}
  - {type: conv, filters: 6, kernel: 3, pad: 1, bn: true, act: relu}
  - {type: avgpool, kernel: 3, stride: 2, pad: 1}
  - {type: dense, units: 8, act: relu}
  - {type: dense, units: 3}
""", lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        *conv_bn(4, 6, 3, 1, True), nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 3)), (4, 2, 8, 8)),
    "resnet": ("""name: resnet
input: {channels: 3, height: 8, width: 8}
layers:
  - {type: conv, filters: 8, kernel: 3, pad: same, bn: true, act: relu}
  - {type: basic, filters: 8}
  - {type: basic, filters: 12, stride: 2}
  - {type: bottleneck, mid: 4, out: 16, stride: 2}
  - {type: gap}
  - {type: dense, units: 4}
""", lambda: nn.Sequential(
        *conv_bn(3, 8, 3, 1, True), Block(8, 0, 8, 1), Block(8, 0, 12, 2), Block(12, 4, 16, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)), (4, 3, 8, 8)),
}


def kiln_order(net):
    """(tensor, is_buffer) in kiln's parameter layout."""
    out = []
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out.append((m.weight, False))
            if m.bias is not None:
                out.append((m.bias, False))
        elif isinstance(m, nn.BatchNorm2d):
            out += [(m.weight, False), (m.bias, False), (m.running_mean, True),
                    (m.running_var, True)]
    return out


def flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts]).tolist()


def main():
    for name, (yaml, make, shape) in NETS.items():
        torch.manual_seed(7)
        net = make()
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for t, _ in kiln_order(net):
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics, var > 0
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        params = flat(t for t, _ in kiln_order(net))
        x = torch.randn(shape, generator=g)
        labels = torch.randint(0, net[-1].out_features, (shape[0],), generator=g)
        net.train()
        logits = net(x)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        grads = flat(torch.zeros_like(t) if buf else t.grad for t, buf in kiln_order(net))
        after = flat(t for t, _ in kiln_order(net))
        arrays = [("params", params), ("x", x.reshape(-1).tolist()),
                  ("labels", [float(v) for v in labels]), ("logits", logits.reshape(-1).tolist()),
                  ("loss", [loss.item()]), ("grads", grads), ("after", after)]
        with open(os.path.join(HERE, name + ".yaml"), "w") as f:
            f.write(yaml)
        with open(os.path.join(HERE, name + ".bin"), "wb") as f:
            for key, vals in arrays:
                f.write(struct.pack("<I", len(key)) + key.encode())
                f.write(struct.pack("<I%df" % len(vals), len(vals), *vals))
        print("%s: %d parameters, loss %.6f (torch %s)" % (name, len(params), loss.item(),
                                                           torch.__version__))


if __name__ == "__main__":
    main()
