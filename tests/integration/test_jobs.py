#!/usr/bin/env python3
"""Training jobs through the API on a real server: a small Fashion-MNIST job
runs to completion with visible progress, its model is registered and
predicts; bad bodies get 400 naming the field, no token 401; the queue,
cancel and 429; a job over server.jobs.timeout fails; a server SIGKILLed during a job marks it failed on restart,
starts the job still queued, and serves again."""
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import shutil
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnserver import Server, worker_pids  # noqa: E402
from test_shipped import FMNIST, fashion_test_images, png_gray  # noqa: E402

SRC = os.environ.get("KILN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = """
server:
  auth: true
  jobs: {max_running: 1, max_queued: 1, max_epochs: 5, threads: 1, timeout: 10m}
functions:
  - {name: fm, kind: predict, model: fm-small, max_workers: 1, idle_timeout: 2s, timeout: 30s}
  - {name: train, kind: train}
"""
# A few seconds of training: 600 Fashion-MNIST images, one epoch.
SMALL = {"arch": "models/small-cnn.yaml", "data": "fashion-mnist", "epochs": 1,
         "limit": 600, "test_limit": 200, "batch": 32, "optimizer": "adam", "lr": 0.001,
         "model": "fm-small"}
# Long enough to be caught running (it is cancelled or killed, never waited for).
LONG = dict(SMALL, limit=60000, epochs=3, model="fm-long")
FINAL = ("succeeded", "failed", "cancelled")


def token(data_dir):
    with open(os.path.join(data_dir, "token")) as f:
        return {"Authorization": "Bearer " + f.read().strip()}


def post_job(s, a, body, path="/v1/jobs"):
    return s.json("POST", path, json.dumps(body).encode(), dict(a, **{
        "Content-Type": "application/json"}))


def running(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(s, job_id, states, seen=None, timeout=300):
    """Polls the job until its state is in `states`; appends every body to `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, body = s.json("GET", "/v1/jobs/%d" % job_id)
        if st != 200:
            raise AssertionError("GET job %d: %d %s" % (job_id, st, body))
        if seen is not None:
            seen.append(body)
        if body["state"] in states:
            return body
        time.sleep(0.02)
    raise AssertionError("job %d never reached %s: %s" % (job_id, states, body))


@unittest.skipUnless(os.path.isdir(FMNIST), "needs Debian's dataset-fashion-mnist")
class Jobs(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kiln-jobs-")
        self.data = os.path.join(self.tmp, "var")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_job_runs_registers_and_predicts(self):
        with Server(CONFIG, args=["--data-dir", self.data], cwd=SRC) as s:
            a = token(self.data)
            st, body = post_job(s, {}, SMALL)
            self.assertEqual(st, 401, body)
            st, body = post_job(s, {"Authorization": "Bearer " + "0" * 64}, SMALL)
            self.assertEqual(st, 401, body)

            # Bad bodies: 400 with a message that starts with the field's name.
            bad = [
                (b"{not json", "body"),
                (b"[1, 2]", "body"),
                (dict(SMALL, model=None), "model"),
                (dict(SMALL, model="../x"), "model"),
                ({k: v for k, v in SMALL.items() if k != "model"}, "model"),
                (dict(SMALL, epochs=0), "epochs"),
                (dict(SMALL, epochs=6), "epochs"),  # over server.jobs.max_epochs
                (dict(SMALL, epochs="2"), "epochs"),
                (dict(SMALL, batch=-1), "batch"),
                (dict(SMALL, lr=0), "lr"),
                (dict(SMALL, lr="fast"), "lr"),
                (dict(SMALL, optimizer="rmsprop"), "optimizer"),
                (dict(SMALL, data="no-such-set"), "data"),
                (dict(SMALL, data="--help"), "data"),
                (dict(SMALL, arch="models/nope.yaml"), "arch"),
                (dict(SMALL, arch="/etc/passwd"), "arch"),
                (dict(SMALL, arch_yaml="x: 1"), "arch"),  # both arch and arch_yaml
                ({k: v for k, v in SMALL.items() if k != "arch"}, "arch"),
                (dict(SMALL, limit=-5), "limit"),
                (dict(SMALL, colour="red"), "colour"),
            ]
            for b, field in bad:
                raw = b if isinstance(b, bytes) else json.dumps(b).encode()
                st, body = s.json("POST", "/v1/jobs", raw, a)
                self.assertEqual(st, 400, (b, body))
                self.assertTrue(body["error"].startswith(field), (field, body))
            self.assertEqual(s.json("GET", "/v1/jobs")[1]["jobs"], [])

            st, h, raw = s.request("POST", "/v1/jobs", json.dumps(SMALL).encode(), a)
            self.assertEqual(st, 202, raw)
            job = json.loads(raw)
            self.assertEqual(h["location"], "/v1/jobs/%d" % job["id"])
            self.assertIn(job["state"], ("queued", "running"))
            self.assertEqual(job["params"]["model"], "fm-small")
            seen = []
            done = wait_for(s, job["id"], FINAL, seen)
            self.assertEqual(done["state"], "succeeded", done)
            running = [b for b in seen if b["state"] == "running" and "batch" in b["progress"]]
            self.assertTrue(running, "no progress seen while running: %s" % seen[:3])
            p = running[-1]["progress"]
            for k in ("epoch", "epochs", "batch", "batches", "loss", "accuracy",
                      "samples_per_s", "eta_s", "fraction"):
                self.assertIn(k, p)
            self.assertTrue(0 <= p["fraction"] <= 1 and 1 <= p["batch"] <= p["batches"], p)
            self.assertIn(p["batches"], (18, 19), p)  # 600 samples in batches of 32
            self.assertEqual(done["progress"]["fraction"], 1.0)
            r = done["result"]
            self.assertEqual((r["model"], r["version"]), ("fm-small", "1"))
            self.assertEqual(r["test"]["test_samples"], 200)
            self.assertTrue(0 <= r["test_accuracy"] <= 1)
            self.assertIsNone(done["error"])

            # Registered like an upload, and the predict function serves it.
            st, m = s.json("GET", "/v1/models/fm-small")
            self.assertEqual(st, 200, m)
            self.assertEqual([v["version"] for v in m["versions"]], ["1"])
            self.assertEqual(m["versions"][0]["metadata"]["job"], job["id"])
            pixels, _ = fashion_test_images(1)[0]
            st, h, out = s.request("POST", "/function/fm?top_k=3", png_gray(pixels, 28, 28),
                                   {"Content-Type": "image/png"})
            self.assertEqual(st, 200, out)
            preds = json.loads(out)["predictions"]
            self.assertEqual(len(preds), 3)
            self.assertIn(preds[0]["label"], ("T-shirt/top", "Trouser", "Pullover", "Dress",
                                              "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                                              "Ankle boot"))
            st, h, out = s.request("POST", "/v2/models/fm-small/infer", json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                             "data": [0.25] * 784}]}).encode(),
                {"Content-Type": "application/json"})
            self.assertEqual(st, 200, out)
            self.assertEqual(len(json.loads(out)["outputs"][0]["data"]), 10)

            # The train function starts jobs the same way (inline YAML here);
            # one runs, one waits (max_queued 1), the next is refused.
            with open(os.path.join(SRC, "models", "lenet-mnist.yaml")) as f:
                yaml = f.read()
            inline = {k: v for k, v in LONG.items() if k != "arch"}
            inline["arch_yaml"] = yaml
            st, long_job = post_job(s, a, inline, "/function/train")
            self.assertEqual(st, 202, long_job)
            self.assertEqual(s.request("GET", "/function/train")[0], 405)
            self.assertEqual(post_job(s, {}, SMALL, "/function/train")[0], 401)
            wait_for(s, long_job["id"], ("running",) + FINAL)
            st, queued = post_job(s, a, SMALL)
            self.assertEqual(st, 202, queued)
            st, body = post_job(s, a, SMALL)
            self.assertEqual(st, 429, body)
            self.assertEqual(s.json("GET", "/v1/jobs/%d" % queued["id"])[1]["state"], "queued")
            st, h, text = s.request("GET", "/metrics")
            self.assertIn(b'kiln_jobs{state="running"} 1', text)
            self.assertIn(b'kiln_jobs{state="queued"} 1', text)
            # the train function's three invocations (202, 405, 401), run
            # by the server itself
            self.assertIn(b'gateway_function_invocation_total{function_name="train",code="202"} 1',
                          text)
            self.assertIn(b'gateway_function_invocation_total{function_name="train",code="405"} 1',
                          text)
            st, h, _ = s.request("GET", "/function/train/x")
            self.assertEqual((st, h["x-kiln-start"]), (404, "none"))
            self.check_metrics(s)
            st, body = s.json("GET", "/v1/jobs?state=queued")
            self.assertEqual([j["id"] for j in body["jobs"]], [queued["id"]])
            self.assertEqual(s.json("GET", "/v1/jobs?state=bogus")[0], 400)

            # Cancelling: the queued one at once, the running one when it exits.
            self.assertEqual(s.request("DELETE", "/v1/jobs/%d" % queued["id"])[0], 401)
            st, body = s.json("DELETE", "/v1/jobs/%d" % queued["id"], None, a)
            self.assertEqual((st, body["state"]), (200, "cancelled"), body)
            st, body = s.json("DELETE", "/v1/jobs/%d" % long_job["id"], None, a)
            self.assertEqual(st, 202, body)
            self.assertTrue(body["cancel_requested"], body)
            body = wait_for(s, long_job["id"], FINAL, timeout=30)
            self.assertEqual(body["state"], "cancelled", body)
            self.assertEqual(s.json("GET", "/v1/models/fm-long")[0], 404)
            st, body = s.json("DELETE", "/v1/jobs/%d" % job["id"], None, a)
            self.assertEqual(st, 409, body)
            self.assertEqual(s.json("GET", "/v1/jobs/99999")[0], 404)
            self.assertEqual(s.json("GET", "/v1/jobs/abc")[0], 404)
            st, body = s.json("GET", "/v1/jobs")
            self.assertEqual([j["state"] for j in body["jobs"]],
                             ["cancelled", "cancelled", "succeeded"])
            self.assertEqual(os.listdir(os.path.join(self.data, "jobs")), [])

            st, h, text = s.request("GET", "/metrics")
            self.assertIn(b'kiln_jobs{state="running"} 0', text)
            self.check_metrics(s)

    def check_metrics(self, s):
        """/metrics passes `promtool check metrics` (scripts/deps installs it)."""
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found: install Debian's prometheus "
                                       "(scripts/deps)")
        st, h, text = s.request("GET", "/metrics")
        self.assertEqual(st, 200)
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, (r.stdout + r.stderr).decode(errors="replace"))

    def test_job_over_its_timeout_fails(self):
        with Server(CONFIG.replace("timeout: 10m", "timeout: 1s"), args=["--data-dir", self.data],
                    cwd=SRC) as s:
            st, job = post_job(s, token(self.data), LONG)
            self.assertEqual(st, 202, job)
            body = wait_for(s, job["id"], FINAL, timeout=60)
            self.assertEqual(body["state"], "failed", body)
            self.assertIn("timed out", body["error"])
            self.assertEqual(s.json("GET", "/v1/models/fm-long")[0], 404)
            self.assertEqual(s.json("GET", "/healthz")[0], 200)

    @unittest.skipUnless(os.geteuid() == 0, "server.user applies only to a server started as root")
    def test_job_runs_as_server_user(self):
        cfg = CONFIG.replace("  auth: true\n", "  auth: true\n  user: nobody\n")
        os.chmod(self.tmp, 0o755)  # nobody reads the architecture and writes nothing here
        with Server(cfg, args=["--data-dir", self.data], cwd=SRC) as s:
            st, job = post_job(s, token(self.data), LONG)
            self.assertEqual(st, 202, job)
            wait_for(s, job["id"], ("running",))
            uids = set()  # of the `kiln train` processes (the zygote stays root by design)
            for pid in worker_pids(s.proc.pid):
                try:
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        if f.read().split(b"\0")[1:2] != [b"train"]:
                            continue
                    with open("/proc/%d/status" % pid) as f:
                        uids |= {ln.split()[1] for ln in f if ln.startswith("Uid:")}
                except (OSError, IndexError):
                    pass
            self.assertEqual(uids, {str(pwd.getpwnam("nobody").pw_uid)})
            st, body = s.json("DELETE", "/v1/jobs/%d" % job["id"], None, token(self.data))
            self.assertEqual(st, 202, body)
            st, job = post_job(s, token(self.data), SMALL)
            body = wait_for(s, job["id"], FINAL)
            self.assertEqual(body["state"], "succeeded", body)

    def test_server_killed_during_a_job(self):
        s = Server(CONFIG, args=["--data-dir", self.data], cwd=SRC)
        try:
            a = token(self.data)
            st, long_job = post_job(s, a, LONG)
            self.assertEqual(st, 202, long_job)
            wait_for(s, long_job["id"], ("running",))
            st, queued = post_job(s, a, SMALL)
            self.assertEqual(st, 202, queued)
            children = worker_pids(s.proc.pid)
            self.assertTrue(children)
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait()
        finally:
            s.stop()
        # The training process does not outlive its server.
        deadline = time.monotonic() + 10
        alive = children
        while alive and time.monotonic() < deadline:
            alive = [p for p in children if running(p)]
            time.sleep(0.05)
        self.assertEqual(alive, [])

        with Server(CONFIG, args=["--data-dir", self.data], cwd=SRC) as s:
            self.assertEqual(s.json("GET", "/healthz")[0], 200)
            st, body = s.json("GET", "/v1/jobs/%d" % long_job["id"])
            self.assertEqual(body["state"], "failed", body)
            self.assertIn("interrupted", body["error"])
            self.assertIsNotNone(body["finished"])
            # The job that was still queued runs on the new server.
            body = wait_for(s, queued["id"], FINAL)
            self.assertEqual(body["state"], "succeeded", body)
            self.assertEqual(s.json("GET", "/v1/models/fm-small")[1]["latest"], "1")
            self.assertEqual(s.json("GET", "/v1/models/fm-long")[0], 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
