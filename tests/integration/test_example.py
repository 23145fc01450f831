#!/usr/bin/env python3
"""examples/classify.c builds against an installed libkiln through
pkg-config alone and classifies a JPEG."""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import unittest

KILN = os.environ.get("KILN_BIN", "build/src/cli/kiln")
SRC = os.environ.get("KILN_SOURCE_DIR", ".")
BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(KILN))))
# darknet's sample photo: Debian's package if installed, else the copy
# scripts/deps unpacked (KILN_PHOTOS, set by tests/meson.build).
DOG = next((p for p in ("/usr/share/darknet/data/dog.jpg",
                        os.path.join(os.environ.get("KILN_PHOTOS", "datasets/photos"), "dog.jpg"))
            if os.path.exists(p)), "/usr/share/darknet/data/dog.jpg")


def sanitized_build():
    try:
        with open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
    except (OSError, ValueError, KeyError):
        return False
    return opts.get("b_sanitize", "none") != "none"


@unittest.skipUnless(shutil.which("cc") and shutil.which("pkg-config") and shutil.which("meson"),
                     "needs cc, pkg-config and meson")
class Example(unittest.TestCase):
    def test_classify_builds_with_pkg_config_and_runs(self):
        if not os.path.exists(DOG):
            self.skipTest("no " + DOG)
        if sanitized_build():
            self.skipTest("a sanitizer build's libkiln needs the sanitizer runtime to link")
        tmp = tempfile.mkdtemp(prefix="kiln-example-")
        try:
            dest = os.path.join(tmp, "root")
            r = subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest,
                                "--no-rebuild"], capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            pcs = glob.glob(os.path.join(dest, "**", "kiln.pc"), recursive=True)
            self.assertEqual(len(pcs), 1)
            env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]),
                       PKG_CONFIG_SYSROOT_DIR=dest)
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "kiln"], env=env,
                                   capture_output=True, text=True, check=True).stdout.split()
            exe = os.path.join(tmp, "classify")
            r = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror",
                                os.path.join(SRC, "examples/classify.c"), *flags, "-lm",
                                "-o", exe], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            model = os.path.join(tmp, "cifar.kiln")
            r = subprocess.run([KILN, "import", os.path.join(SRC, "models/cifar10-cnn.yaml"),
                                "-o", model], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            libdir = os.path.dirname(os.path.dirname(pcs[0]))
            r = subprocess.run([exe, model, DOG], capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, LD_LIBRARY_PATH=libdir))
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = r.stdout.strip().splitlines()
            self.assertEqual(len(lines), 5)
            labels = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck"}
            for line in lines:
                self.assertIn(line.split()[-1], labels)
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    unittest.main(verbosity=2)
