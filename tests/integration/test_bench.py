#!/usr/bin/env python3
"""kiln bench kernels as a peer script reads it: exit codes and the --json shape."""
import json
import os
import shutil
import subprocess
import tempfile
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

    def test_openblas_coretype_in_environment_is_respected(self):
        r = kiln("info", "--json", env={"OPENBLAS_CORETYPE": "Haswell"})
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        if doc["cpu"]["arch"] != "x86_64":
            self.skipTest("x86-64 core types")
        self.assertEqual(doc["openblas"]["core"], "Haswell")
        self.assertEqual(doc["openblas"]["coretype_env"], "Haswell")

    def test_bench_coretype_option_restarts_under_it(self):
        r = kiln("bench", "kernels", "--json", "--coretype", "Haswell", "--layer", "none",
                 "--min-time", "0", env={"OPENBLAS_CORETYPE": "SkylakeX"})
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        if doc["cpu"]["arch"] != "x86_64":
            self.skipTest("x86-64 core types")
        self.assertEqual(doc["openblas"]["coretype_env"], "Haswell")
        self.assertEqual(doc["openblas"]["core"], "Haswell")



class BenchCold(unittest.TestCase):
    """kiln bench cold: fresh processes, phases that add up to the total."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kiln-cold-")
        cls.model = os.path.join(cls.tmp, "lenet.kiln")
        src = os.environ.get("KILN_SOURCE_DIR", ".")
        r = kiln("import", os.path.join(src, "models", "lenet-mnist.yaml"), "-o", cls.model)
        if r.returncode:
            raise RuntimeError(r.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_phases_add_up(self):
        r = kiln("bench", "cold", self.model, "--repeat", "3", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual((doc["bench"], doc["repeat"], doc["page_cache"]), ("cold", 3, "warm"))
        self.assertEqual(len(doc["runs"]), 3)
        for run in doc["runs"]:
            parts = [run[k] for k in ("exec_ms", "open_ms", "compile_ms", "first_run_ms")]
            for p in parts:
                self.assertGreaterEqual(p, 0, run)
            self.assertGreater(run["exec_ms"], 0, run)
            self.assertAlmostEqual(sum(parts), run["total_ms"], delta=0.01)

    def test_bad_input_is_one_line(self):
        for args, code in ((["bench", "cold", self.model, "--repeat", "0"], 2),
                           (["bench", "cold"], 2),
                           (["bench", "cold", os.path.join(self.tmp, "missing.kiln")], 1)):
            r = kiln(*args)
            self.assertEqual(r.returncode, code, (args, r.stderr))
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, (args, r.stderr))
        bad = os.path.join(self.tmp, "bad.kiln")
        with open(bad, "wb") as f:
            f.write(b"not a model")
        r = kiln("bench", "cold", bad, "--repeat", "1")
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_bench_model_layers(self):
        """kiln bench model --layers: every layer of the model once, slowest
        first, in the JSON and the table; N limits the rows."""
        r = kiln("bench", "model", self.model, "--runs", "3", "--warmup", "1", "--layers",
                 "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        rows = doc["layers"]
        names = [x["name"] for x in rows]
        self.assertEqual(len(names), len(set(names)))
        self.assertGreaterEqual(len(rows), 8)  # lenet: conv, pool, conv, pool, flatten, fc...
        ms = [x["ms"] for x in rows]
        self.assertEqual(ms, sorted(ms, reverse=True))
        self.assertTrue(all(m >= 0 for m in ms))
        self.assertAlmostEqual(sum(ms), doc["layers_ms"], delta=1e-6)
        # each layer's fastest run: no slower than its mean over the runs
        mins = [x["min_ms"] for x in rows]
        self.assertTrue(all(0 <= lo <= m + 1e-9 for lo, m in zip(mins, ms)), rows)
        self.assertAlmostEqual(sum(mins), doc["layers_min_ms"], delta=1e-6)
        self.assertLessEqual(doc["layers_min_ms"], doc["layers_ms"] + 1e-9)
        conv = [x for x in rows if x["op"].startswith("Conv")]
        self.assertEqual(len(conv), 2)
        self.assertTrue(all(x["flops"] > 0 for x in conv))
        r = kiln("bench", "model", self.model, "--runs", "2", "--layers=3")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        first = [i for i, ln in enumerate(lines) if "slowest first" in ln]
        self.assertEqual(len(first), 1, r.stdout)
        self.assertEqual(len(lines) - first[0] - 1, 1 + 3, r.stdout)  # header, three layers
        r = kiln("bench", "model", self.model, "--layers=0")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        r = kiln("bench", "model", self.model, "--runs", "2", "--json")
        self.assertNotIn("layers", json.loads(r.stdout))
        self.assertFalse(json.loads(r.stdout)["preload"])

    def test_bench_model_preload(self):
        """kiln bench model --preload: the weights read into huge pages
        first; the outputs are the model's either way (it runs), the JSON
        says so, and anything but a .kiln is a one-line usage error."""
        r = kiln("bench", "model", self.model, "--runs", "2", "--warmup", "1", "--preload",
                 "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertTrue(doc["preload"])
        self.assertGreater(doc["median_ms"], 0)
        onnx = os.path.join(self.tmp, "m.onnx")
        with open(onnx, "wb") as f:
            f.write(b"x")
        r = kiln("bench", "model", onnx, "--preload")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        r = kiln("bench", "model", os.path.join(self.tmp, "missing.kiln"), "--preload")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)


if __name__ == "__main__":
    unittest.main()
