#!/usr/bin/env python3
"""kiln bench kernels as a peer script reads it: exit codes and the --json shape."""
import json
import os
import subprocess
import unittest

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")


def kiln(*args, env=None):
    e = dict(os.environ)
    e.pop("KILN_ISA", None)
    e["OPENBLAS_NUM_THREADS"] = "1"
    if env:
        e.update(env)
    return subprocess.run([KILN, *args], capture_output=True, text=True, env=e, timeout=240)


class BenchKernels(unittest.TestCase):
    def test_usage_errors_are_one_line(self):
        for args in (["bench"], ["bench", "model-x"], ["bench", "kernels", "--threads", "0"],
                     ["bench", "kernels", "--isa", "sparc"]):
            r = kiln(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, (args, r.stderr))

    def test_json_has_every_layer_for_every_impl(self):
        r = kiln("bench", "kernels", "--quick", "--json", "--no-ref", "--min-time", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["bench"], "kernels")
        self.assertEqual(doc["threads"], 1)
        self.assertGreater(doc["peak"]["sgemm_gflops"], 0)
        rows = [x for x in doc["results"] if x["layer"] != "TOTAL"]
        impls = {x["impl"] for x in rows if x["group"] == "resnet50 conv"}
        self.assertIn("im2col", impls)
        for isa in doc["peak"]["fma_gflops"]:
            self.assertIn(isa, impls)
        for x in rows:
            self.assertGreater(x["ms"], 0, x)
            self.assertGreater(x["gflops"], 0, x)
        totals = [x for x in doc["results"] if x["layer"] == "TOTAL"]
        self.assertEqual({t["group"] for t in totals}, {"resnet50 conv", "mobilenetv2 depthwise"})

    def test_isa_ref_measures_only_ref_and_baseline(self):
        r = kiln("bench", "kernels", "--quick", "--json", "--isa", "ref", "--min-time", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["peak"]["fma_gflops"], {})
        self.assertEqual({x["impl"] for x in doc["results"] if "impl" in x}, {"im2col", "ref"})


if __name__ == "__main__":
    unittest.main()
