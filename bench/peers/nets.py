"""The networks kiln is compared on, defined once for the benchmark export
(bench/peers/export_models.py) and the conformance data
(tests/data/onnx/generate.py).

They match kiln's architecture files:
  lenet-mnist   conv5x5x32-relu-pool-conv5x5x64-relu-pool-fc1024-relu-fc10
                on 1x28x28; 'same' padding (pad 2), 2x2/2 max pooling,
                so fc1 sees 64x7x7 = 3136 features.
  cifar10-cnn   3 blocks of conv3x3 (pad 1) + BN + ReLU + 2x2/2 max pool
                with 32/64/128 channels on 3x32x32, then fc256-relu-fc10
                (fc1 sees 128x4x4 = 2048 features).
  resnet50      torchvision.models.resnet50(weights=None).
  mobilenetv2   torchvision.models.mobilenet_v2(weights=None): depthwise
                3x3 convs, ReLU6, inverted residuals.

Only the system interpreter with Debian's python3-torch is assumed.
"""

import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self, fc_width=1024):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 7 * 7, fc_width)
        self.fc2 = nn.Linear(fc_width, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


class CifarCNN(nn.Module):
    def __init__(self):
        super().__init__()
        layers = []
        cin = 3
        for cout in (32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU(), nn.MaxPool2d(2, 2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        return self.fc2(torch.relu(self.fc1(x)))


class ResidualBlock(nn.Module):
    """A ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut
    (identity, or a 1x1 strided conv + BN when the shape changes), then ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.down is None else self.down(x)
        return torch.relu(y + s)


def resnet50():
    import torchvision
    return torchvision.models.resnet50(weights=None)


def mobilenetv2():
    import torchvision
    return torchvision.models.mobilenet_v2(weights=None)


@torch.no_grad()
def calibrate_bn(model, input_shape, batches=2, batch=4):
    """Gives every BatchNorm non-trivial statistics and affine parameters:
    random gamma/beta, then running mean/var accumulated (cumulative
    average) over a few random batches in training mode. Folding BN into
    conv then changes the weights, and activations stay well scaled
    through deep nets, as they are in trained models."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return model
    for m in bns:
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for _ in range(batches):
        model(torch.randn(batch, *input_shape[1:]))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@torch.no_grad()
def count_flops(model, x):
    """FLOPs (2 x multiply-adds) of the conv and linear layers of one
    forward pass of x, the convention kiln's benchmarks use."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * out.numel() * k

    def fc_hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(fc_hook))
    model(x)
    for h in hooks:
        h.remove()
    return total[0]


@torch.no_grad()
def conv_layers(model, x):
    """Every Conv2d of one forward pass as (module name, input shape,
    module), in execution order."""
    seen = []
    names = {m: n for n, m in model.named_modules()}

    def hook(m, inp, out):
        seen.append((names[m], tuple(inp[0].shape), m))

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    model(x)
    for h in hooks:
        h.remove()
    return seen
