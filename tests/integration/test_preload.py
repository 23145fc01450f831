#!/usr/bin/env python3
"""server.zygote_preload: the zygote preloads predict models; its workers
answer from the shared huge-page copy without mapping the file, and answer
exactly what a worker that maps the file answers."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import Server, worker_pids  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", ".")
MODEL = os.path.abspath(os.path.join(SRC, "models", "mnist.kiln"))
DIGIT = os.path.join(SRC, "bench", "scenarios", "payloads", "digit28.png")

CONFIG = """
server:
  listen: 127.0.0.1:0
  auth: false
  zygote_preload: %s
functions:
  - {name: mnist, kind: predict, model: %s, max_workers: 1, timeout: 60s}
"""


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")


def maps_file(pid, path):
    with open("/proc/%d/maps" % pid) as f:
        return any(path in line for line in f)


class Preload(unittest.TestCase):
    def predict(self, preload):
        s = Server(CONFIG % (preload, MODEL))
        try:
            with open(DIGIT, "rb") as f:
                img = f.read()
            st, h, body = s.request("POST", "/function/mnist", img, {"Content-Type": "image/png"})
            self.assertEqual(st, 200, body)
            worker = int(h["x-kiln-worker"])
            # The zygote is the server's child; its workers are its children
            # and, forked without exec, carry its command line too.
            with open("/proc/%d/task/%d/children" % (s.proc.pid, s.proc.pid)) as f:
                children = [int(x) for x in f.read().split()]
            zygotes = [p for p in children if b"--zygote" in cmdline(p)]
            self.assertEqual(len(zygotes), 1)
            self.assertIn(worker, worker_pids(zygotes[0]))
            preloading = MODEL.encode() in cmdline(zygotes[0])
            return json.loads(body), preloading, maps_file(worker, MODEL)
        finally:
            s.stop()
            s.cleanup()

    def test_preloaded_worker_does_not_map_the_file_and_answers_the_same(self):
        mapped_answer, preloading, mapped = self.predict("0")
        self.assertFalse(preloading)
        self.assertTrue(mapped)
        answer, preloading, mapped = self.predict("64MiB")
        self.assertTrue(preloading)
        self.assertFalse(mapped)
        self.assertEqual(answer, mapped_answer)

    def test_model_over_the_limit_is_mapped_as_before(self):
        answer, preloading, mapped = self.predict("1KiB")
        self.assertTrue(preloading)  # asked for, refused by the limit, logged
        self.assertTrue(mapped)
        self.assertIn("predictions", answer)


if __name__ == "__main__":
    unittest.main(verbosity=2)
