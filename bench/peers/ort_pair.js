#!/usr/bin/env node
// One ONNX Runtime session that runs once per line read on stdin, for
// bench/peers/pair.py (which alternates its runs with kiln's):
//
//   node bench/peers/ort_pair.js ONNX THREADS INPUT_NAME DIM,DIM,... [PREFIX]
//
// Prints "ready" once the session exists, then for each "run N" line runs
// N times back to back and prints the N wall times in ms on one line
// (process.hrtime around each sess.run), and exits on "quit" or end of
// input. The input holds ((i * 7919) % 255) / 255 - 0.5
// at element i, as pair.py gives kiln. The session is ort_bench.js's
// (ort_common.js, timingOptions). With PREFIX (bench/peers/layer_pair.py)
// ORT's profiler is on: at the end the profile (one event per node per
// run) goes to PREFIX_<date>.json, whose name is printed last.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const { loadOrt, timingOptions } = require('./ort_common');
const ort = loadOrt('ort_pair');

async function main() {
  const [onnx, threadsArg, inputName, dimsArg, prefix] = process.argv.slice(2);
  if (!onnx || !threadsArg || !inputName || !dimsArg) {
    console.error('usage: ort_pair.js ONNX THREADS INPUT_NAME DIM,DIM,... [PREFIX]');
    process.exit(2);
  }
  const threads = parseInt(threadsArg, 10);
  const dims = dimsArg.split(',').map(Number);
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 255) / 255 - 0.5;
  const opts = timingOptions(threads);
  if (prefix) Object.assign(opts, { enableProfiling: true, profileFilePrefix: prefix });
  const sess = await ort.InferenceSession.create(onnx, opts);
  const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
  process.stdout.write('ready\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'run') break;
    const n = Math.max(1, parseInt(words[1] || '1', 10) || 1);
    const ms = [];
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await sess.run(feeds);
      ms.push((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(4));
    }
    process.stdout.write(ms.join(' ') + '\n');
  }
  if (prefix) {
    sess.endProfiling();
    // the newest profile ORT wrote under the prefix
    const dir = path.dirname(prefix), base = path.basename(prefix);
    const files = fs.readdirSync(dir)
      .filter((f) => f.startsWith(base) && f.endsWith('.json'))
      .map((f) => path.join(dir, f))
      .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
    process.stdout.write((files[0] || '') + '\n');
  }
  process.exit(0);
}

main().catch((e) => {
  console.error('ort_pair: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
