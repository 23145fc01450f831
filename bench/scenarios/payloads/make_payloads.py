#!/usr/bin/env python3
"""Writes the request bodies the bench scenarios send, with the standard
library only (PNG is zlib + CRC32), so they can be made again anywhere:

  digit28.png   28x28 grayscale, a hand-drawn-like 7 (MNIST's input size)
  rgb32.png     32x32 RGB, a smooth pattern (CIFAR-10's input size)
  rgb224.png    224x224 RGB, a smooth pattern (ResNet50's input size)
  echo.json     a small JSON body for the echo function
"""
import math
import os
import struct
import zlib


def png(path, width, height, channels, pixel):
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    color = {1: 0, 3: 2}[channels]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def seven(x, y):
    # A top bar and a diagonal stroke, white on black like MNIST.
    on = (6 <= y <= 8 and 6 <= x <= 21) or (8 <= y <= 23 and abs(x - (21 - (y - 8) * 0.6)) < 1.6)
    return (255 if on else 0,)


def pattern(size):
    def px(x, y):
        r = int(127 + 127 * math.sin(x * 6.28 / size))
        g = int(127 + 127 * math.cos(y * 6.28 / size))
        b = int(127 + 127 * math.sin((x + y) * 3.14 / size))
        return (r, g, b)
    return px


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    png(os.path.join(here, "digit28.png"), 28, 28, 1, seven)
    png(os.path.join(here, "rgb32.png"), 32, 32, 3, pattern(32))
    png(os.path.join(here, "rgb224.png"), 224, 224, 3, pattern(224))
    with open(os.path.join(here, "echo.json"), "w") as f:
        f.write('{"inputs": [1, 2, 3, 4], "note": "kiln load smoke"}\n')
