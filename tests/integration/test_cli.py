#!/usr/bin/env python3
"""The kiln binary as a user meets it: exit codes, --help, info and KILN_ISA."""
import json
import os
import platform
import subprocess
import sys
import unittest

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")


def kiln(*args, env=None):
    e = dict(os.environ)
    e.pop("KILN_ISA", None)
    if env:
        e.update(env)
    return subprocess.run([KILN, *args], capture_output=True, text=True, env=e, timeout=60)


def cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class Cli(unittest.TestCase):
    def test_no_arguments_is_usage_error(self):
        r = kiln()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: kiln", r.stderr)

    def test_unknown_command_is_usage_error_on_one_line(self):
        r = kiln("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertIn("frobnicate", r.stderr)

    def test_help_lists_info(self):
        r = kiln("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("info", r.stdout)

    def test_info_json(self):
        r = kiln("info", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        for key in ("version", "build", "cpu", "kernels", "openblas"):
            self.assertIn(key, info)
        self.assertIn(info["kernels"]["isa"], info["build"]["kernel_isas"])
        self.assertTrue(info["openblas"]["version"][0].isdigit())
        self.assertGreaterEqual(info["openblas"]["threads"], 1)
        flags = cpuinfo_flags()
        if info["cpu"]["arch"] == "x86_64" and flags and info["build"]["simd"] == "auto":
            want = "avx512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags else (
                "avx2" if {"avx2", "fma"} <= flags else "ref")
            self.assertEqual(info["kernels"]["isa"], want)
            self.assertEqual("avx512f" in info["cpu"]["features"], "avx512f" in flags)

    def test_openblas_core_uses_avx2(self):
        # OpenBLAS 0.3.21 falls back to its SSE3 Prescott kernels on CPUs
        # newer than its table (Intel Emerald Rapids: SGEMM 34 GFLOP/s
        # against 186 with SkylakeX); kiln re-executes itself with
        # OPENBLAS_CORETYPE set to the newest core the CPU runs.
        flags = cpuinfo_flags()
        if platform.machine() != "x86_64" or not flags or not {"avx2", "fma"} <= flags:
            self.skipTest("needs an x86-64 CPU with AVX2 and FMA")
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        r = subprocess.run([KILN, "info", "--json"], capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        core = json.loads(r.stdout)["openblas"]["core"].lower()
        self.assertIn(core, ("haswell", "zen", "skylakex", "cooperlake", "sapphirerapids",
                             "excavator"))
        # The user's choice is kept.
        r = kiln("info", "--json", env={"OPENBLAS_CORETYPE": "Prescott"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["openblas"]["core"].lower(), "prescott")

    def test_info_text(self):
        r = kiln("info")
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("cpu:", "kernels:", "openblas:"):
            self.assertIn(word, r.stdout)

    def test_kiln_isa_override(self):
        r = kiln("info", "--json", env={"KILN_ISA": "ref"})
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual(info["kernels"]["isa"], "ref")
        self.assertTrue(info["kernels"]["forced"])

    def test_kiln_isa_missing_on_this_cpu_is_a_clear_error(self):
        arch = json.loads(kiln("info", "--json").stdout)["cpu"]["arch"]
        foreign = "neon" if arch == "x86_64" else "avx512"
        r = kiln("info", env={"KILN_ISA": foreign})
        self.assertEqual(r.returncode, 1)
        self.assertIn("lacks", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)

    def test_kiln_isa_unknown_name(self):
        r = kiln("info", env={"KILN_ISA": "sse9"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("sse9", r.stderr)

    def test_info_rejects_stray_arguments(self):
        self.assertEqual(kiln("info", "extra").returncode, 2)
        self.assertEqual(kiln("info", "--bogus").returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
