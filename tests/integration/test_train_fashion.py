#!/usr/bin/env python3
"""One epoch of Fashion-MNIST (Debian's dataset-fashion-mnist) with the
small CNN in models/: test accuracy above 85%. Skipped when the data set is
not installed."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SRC = os.environ.get("KILN_SOURCE_DIR", ".")
DATA = os.environ.get("KILN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


class FashionMnist(unittest.TestCase):
    def test_one_epoch_above_85_percent(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "fm.kiln")
            r = subprocess.run([KILN, "train", "--arch", os.path.join(SRC, "models/small-cnn.yaml"),
                                "--data", "fashion-mnist", "--epochs", "1", "--batch", "64",
                                "--optimizer", "adam", "--lr", "0.002", "--threads", "2",
                                "-o", out], capture_output=True, text=True, timeout=1200)
            self.assertEqual(r.returncode, 0, r.stderr)
            e = subprocess.run([KILN, "eval", out, "--data", "fashion-mnist", "--json"],
                               capture_output=True, text=True, timeout=600)
            self.assertEqual(e.returncode, 0, e.stderr)
            j = json.loads(e.stdout)
            self.assertEqual(j["count"], 10000)
            self.assertGreater(j["accuracy"], 0.85)


if __name__ == "__main__":
    if not os.path.exists(os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")):
        print("skipped: %s not installed (apt install dataset-fashion-mnist)" % DATA)
        sys.exit(77)
    unittest.main()
