"""bench/peers/compare.py joins kiln's and the peers' benchmark records on
(model or layer, threads, batch) and computes base/peer ratios;
bench/peers/pair.py's statistics of paired turns and its libkiln binding;
bench/peers/layer_pair.py's reading of ORT profiles and its pairing of
kiln's conv layers with ORT's nodes.
Standard library only; no peer needs to be installed."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ.get("KILN_SOURCE_DIR",
                     os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
COMPARE = os.path.join(SRC, "bench", "peers", "compare.py")
sys.path.insert(0, os.path.dirname(COMPARE))
import compare  # noqa: E402
import layer_pair  # noqa: E402
import pair  # noqa: E402


def rec(tool, name, threads, p90, kind="model", batch=1, **kw):
    r = {"peer" if tool != "kiln" else "tool": tool, kind: name, "threads": threads,
         "batch": batch, "median_ms": p90 * 0.9, "p90_ms": p90, "gflops": 1.0}
    r.update(kw)
    return r


class CompareTest(unittest.TestCase):
    def run_compare(self, texts, *args):
        files = []
        with tempfile.TemporaryDirectory() as d:
            for i, t in enumerate(texts):
                fn = os.path.join(d, f"{i}.jsonl")
                with open(fn, "w") as f:
                    f.write(t)
                files.append(fn)
            p = subprocess.run([sys.executable, COMPARE, *args, *files],
                               capture_output=True, text=True, timeout=60)
        return p

    def test_ratios_join_on_model_threads_batch(self):
        kiln = [rec("kiln", "resnet50", 1, 40.0), rec("kiln", "resnet50", 2, 30.0)]
        ort = [rec("onnxruntime", "resnet50", 1, 50.0), rec("onnxruntime", "resnet50", 2, 20.0),
               rec("onnxruntime", "resnet50", 1, 80.0, batch=4)]
        p = self.run_compare(["\n".join(map(json.dumps, kiln)),
                              "noise line\n" + "\n".join(map(json.dumps, ort))],
                             "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = [json.loads(l) for l in p.stdout.splitlines()]
        by = {(o["name"], o["threads"], o["batch"]): o for o in out}
        self.assertAlmostEqual(by[("resnet50", 1, 1)]["ratios"]["onnxruntime"], 0.8)
        self.assertAlmostEqual(by[("resnet50", 2, 1)]["ratios"]["onnxruntime"], 1.5)
        # batch 4 has no kiln record: a row without a ratio
        self.assertEqual(by[("resnet50", 1, 4)]["ratios"], {})

    def test_metric_choice(self):
        k = rec("kiln", "m", 1, 10.0)
        o = rec("onnxruntime", "m", 1, 20.0)
        o["median_ms"] = 5.0
        p = self.run_compare([json.dumps(k), json.dumps(o)], "--metric", "median_ms",
                             "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertAlmostEqual(json.loads(p.stdout.splitlines()[0])["ratios"]["onnxruntime"], 1.8)

    def test_layer_shape_fields_and_weighted_total(self):
        kiln = {"tool": "kiln", "results": [
            {"cin": 64, "h": 56, "w": 56, "cout": 64, "kh": 3, "stride": 1, "pad": 1,
             "threads": 1, "batch": 1, "median_ms": 1.0, "p90_ms": 1.0, "count": 3},
            {"layer": "conv_3x224x224_64_k7s2p3", "threads": 1, "batch": 1,
             "median_ms": 2.0, "p90_ms": 2.0, "count": 1}]}
        ort = [rec("onnxruntime", "conv_64x56x56_64_k3s1p1", 1, 2.0, kind="layer", count=3),
               rec("onnxruntime", "conv_3x224x224_64_k7s2p3", 1, 1.0, kind="layer", count=1)]
        p = self.run_compare([json.dumps(kiln), "\n".join(map(json.dumps, ort))],
                             "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = [json.loads(l) for l in p.stdout.splitlines()]
        names = [o["name"] for o in out]
        self.assertIn("conv_64x56x56_64_k3s1p1", names)
        total = [o for o in out if o["kind"] == "total"]
        self.assertEqual(len(total), 1)
        # kiln: 3*1 + 1*2 = 5; ORT: 3*2 + 1*1 = 7
        self.assertAlmostEqual(total[0]["values"]["kiln"], 5.0)
        self.assertAlmostEqual(total[0]["values"]["onnxruntime"], 7.0)
        self.assertAlmostEqual(total[0]["ratios"]["onnxruntime"], round(5 / 7, 4))

    def test_markdown_table(self):
        p = self.run_compare([json.dumps(rec("kiln", "lenet-mnist", 1, 1.0)),
                              json.dumps(rec("pytorch", "lenet-mnist", 1, 4.0))])
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertTrue(lines[0].startswith("|"))
        self.assertIn("kiln/pytorch", lines[0])
        self.assertIn("| model | lenet-mnist | 1 | 1 | 1.000 | 4.000 | 0.25 |", lines)

    def test_missing_base_is_an_error(self):
        p = self.run_compare([json.dumps(rec("onnxruntime", "m", 1, 1.0))])
        self.assertEqual(p.returncode, 1)
        self.assertIn("no records from base tool 'kiln'", p.stderr)

    def test_records_from_text_forms(self):
        self.assertEqual(len(compare.records_from_text('[{"a":1},{"b":2}]')), 2)
        self.assertEqual(len(compare.records_from_text('{"a":1}\n{"b":2}\nnot json\n')), 2)
        self.assertEqual(compare.records_from_text(""), [])


class PairTest(unittest.TestCase):
    def test_paired_summary(self):
        r = pair.paired_summary([10.0, 20.0, 30.0, 40.0], [20.0, 20.0, 20.0, 20.0])
        self.assertEqual(r["rounds"], 4)
        self.assertAlmostEqual(r["ratio_median"], 1.25)
        self.assertAlmostEqual(r["ratio_q1"], 0.875)  # between the 1st and 2nd of 0.5, 1, 1.5, 2
        self.assertAlmostEqual(r["ratio_q3"], 1.625)
        self.assertAlmostEqual(r["kiln_median_ms"], 25.0)
        self.assertAlmostEqual(r["kiln_p90_ms"], 37.0)
        self.assertAlmostEqual(r["ratio_p90"], 1.85)
        self.assertEqual(r["kiln_faster_rounds"], 1)
        # the ratio pairs runs: reordering one side changes it
        r2 = pair.paired_summary([40.0, 30.0, 20.0, 10.0], [40.0, 30.0, 20.0, 10.0])
        self.assertAlmostEqual(r2["ratio_median"], 1.0)
        with self.assertRaises(ValueError):
            pair.paired_summary([1.0], [1.0, 2.0])

    def test_a_turn_drops_its_first_run(self):
        self.assertEqual(pair.turn_ms([9.0, 1.0, 2.0, 3.0]), 2.0)
        self.assertEqual(pair.turn_ms([5.0]), 5.0)

    def test_kiln_through_ctypes(self):
        # The binding runs the shipped MNIST model: a softmax of 10 classes.
        lib = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(os.environ.get("KILN_BIN", "build/src/cli/kiln"))))), "libkiln.so")
        if not os.path.exists(lib):
            self.fail("no libkiln.so beside KILN_BIN (%s)" % lib)
        env = dict(os.environ, OPENBLAS_THREAD_TIMEOUT="4", ASAN_OPTIONS="detect_leaks=0")
        ldd = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
        for line in ldd.splitlines():  # an ASan build needs its runtime loaded first
            if "libasan" in line and "=>" in line:
                env["LD_PRELOAD"] = line.split("=>")[1].split()[0]
        code = """
import ctypes, sys
sys.path.insert(0, %r)
import pair
lib = ctypes.CDLL(%r)
lib.kiln_model_preload.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
k = pair.Kiln(lib, %r, 1, True)
t = k.run(3)
out = list(k.outputs[0][1])
print(k.inputs[0][0], k.outputs[0][0], len(t), min(t) > 0, round(sum(out), 4), min(out) >= 0)
k.close()
""" % (os.path.dirname(COMPARE), lib, os.path.join(SRC, "models", "mnist.kiln"))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "[1, 1, 28, 28] [1, 10] 3 True 1.0 True")


def node(name, ts, dur, op="Conv", params=0, out=0):
    return {"cat": "Node", "name": name + "_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "parameter_size": str(4 * params), "output_size": str(4 * out)}}


class LayerPairTest(unittest.TestCase):
    def test_ort_runs_split_nodes_by_model_run(self):
        ev = [{"name": "model_run", "ts": 100, "dur": 50}, {"name": "model_run", "ts": 200, "dur": 50},
              node("b", 120, 3000, params=5, out=7), node("a", 105, 2000), node("x", 160, 9),
              node("c", 210, 1000, op="MaxPool"), {"cat": "Session", "name": "y", "ts": 110}]
        runs = layer_pair.ort_runs(ev)
        self.assertEqual(len(runs), 2)
        self.assertEqual([n[1] for n in runs[0]], ["a", "b"])  # in order of start; x is outside
        self.assertEqual(runs[0][1], ("Conv", "b", 3.0, 5, 7))
        self.assertEqual(runs[1], [("MaxPool", "c", 1.0, 0, 0)])

    def test_convs_pair_by_shape_not_by_order(self):
        # a bottleneck block with a projection shortcut: kiln runs conv3
        # then the shortcut (which adds), ORT the shortcut then conv3; the
        # two have the same shapes, so the first of kiln's takes the first
        # of ORT's; the strided shortcut of another shape finds its own
        kiln = [("Conv+relu", 10, 100), ("MaxPool", 0, 50), ("Conv+relu", 20, 100),
                ("Conv", 30, 400), ("Conv+add+relu", 30, 400), ("Conv+add+relu", 40, 200)]
        ort = [("Conv", "c1", 1, 10, 100), ("MaxPool", "p", 1, 0, 50), ("Conv", "c2", 1, 20, 100),
               ("Conv", "ds2", 1, 40, 200), ("Conv", "ds", 1, 30, 400), ("Conv", "c3", 1, 30, 400)]
        self.assertEqual(layer_pair.match_convs(kiln, ort), [(0, 0), (2, 2), (3, 4), (4, 5), (5, 3)])
        # a conv without a partner, or one left over on ORT's side: no pairing
        self.assertIsNone(layer_pair.match_convs(kiln[:5] + [("Conv", 41, 200)], ort))
        self.assertIsNone(layer_pair.match_convs(kiln[:5], ort))

    def test_groups_and_layers(self):
        names = ["/conv1/Conv", "/layer1/a", "/layer1/b"]
        rk = [[1.0, 2.0, 3.0], [1.0, 4.0, 3.0]]
        ro = [[("Conv", "s", 2.0, 0, 0), ("Conv", "a", 2.0, 0, 0), ("Conv", "b", 3.0, 0, 0)]] * 2
        rows, layers = layer_pair.summarise(names, rk, ro, [(0, 0), (1, 1), (2, 2)])
        by = {r["group"]: r for r in rows}
        self.assertAlmostEqual(by["conv1"]["ratio"], 0.5)
        self.assertAlmostEqual(by["layer1"]["kiln_ms"], 6.0)  # median of 5 and 7
        self.assertAlmostEqual(by["layer1"]["ort_ms"], 5.0)
        self.assertAlmostEqual(by["all convs"]["ratio"], (6 / 7 + 8 / 7) / 2)
        self.assertEqual(layers[0]["layer"], "/layer1/a")  # the most time lost first


if __name__ == "__main__":
    unittest.main(verbosity=2)
