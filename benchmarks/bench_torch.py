"""PyTorch eager MobileNetV2 for the model benchmark (used only when ``torch`` is installed).

Written like torchvision's (Conv2d + BatchNorm2d + ReLU6, NCHW, symmetric padding), from mnv2ref's
(t, c, n, s) table; its own random weights, eval mode: only its speed is compared, not its outputs.
"""
from __future__ import annotations


def torch_eager(alpha, threads):
    import torch
    from torch import nn

    from mnv2ref import arch

    torch.set_num_threads(threads)

    def cbr(cin, cout, k, s, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=1e-3)]
        return layers + [nn.ReLU6(inplace=True)] if relu else layers

    class Block(nn.Module):
        def __init__(self, b):
            super().__init__()
            hidden = b.cexp
            self.res = b.residual
            self.body = nn.Sequential(*(cbr(b.cin, hidden, 1, 1) if b.has_expand else []),
                                      *cbr(hidden, hidden, 3, b.stride, groups=hidden),
                                      *cbr(hidden, b.cout, 1, 1, relu=False))

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    blocks = arch.blocks(alpha)
    last = arch.last_channels(alpha)
    net = nn.Sequential(*cbr(3, blocks[0].cin, 3, 2), *[Block(b) for b in blocks],
                        *cbr(blocks[-1].cout, last, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(last, 1000), nn.Softmax(dim=1)).eval()

    def run(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return run
