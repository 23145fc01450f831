#!/usr/bin/env node
// ort_pair.js with ONNX Runtime's profiler on, for bench/peers/layer_pair.py
// (which compares kiln's layers with ORT's nodes run by run):
//
//   node bench/peers/ort_layer_pair.js ONNX THREADS INPUT_NAME DIM,DIM,... PREFIX
//
// Prints "ready", then for each "run N" line runs N times and prints the N
// wall times in ms on one line; on "quit" (or end of input) it ends the
// profile, which ORT writes to PREFIX_<date>.json (one event per node per
// run), prints that file's name and exits. The input is ort_pair.js's.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const { loadOrt, timingOptions } = require('./ort_common');
const ort = loadOrt('ort_layer_pair');

async function main() {
  const [onnx, threadsArg, inputName, dimsArg, prefix] = process.argv.slice(2);
  if (!onnx || !threadsArg || !inputName || !dimsArg || !prefix) {
    console.error('usage: ort_layer_pair.js ONNX THREADS INPUT_NAME DIM,DIM,... PREFIX');
    process.exit(2);
  }
  const dims = dimsArg.split(',').map(Number);
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 255) / 255 - 0.5;
  const opts = Object.assign(timingOptions(parseInt(threadsArg, 10)), {
    enableProfiling: true,
    profileFilePrefix: prefix,
  });
  const sess = await ort.InferenceSession.create(onnx, opts);
  const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
  process.stdout.write('ready\n');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'run') break;
    const count = Math.max(1, parseInt(words[1] || '1', 10) || 1);
    const ms = [];
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint();
      await sess.run(feeds);
      ms.push((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(4));
    }
    process.stdout.write(ms.join(' ') + '\n');
  }
  sess.endProfiling();
  // the newest file ORT wrote under the prefix
  const dir = path.dirname(prefix), base = path.basename(prefix);
  const files = fs.readdirSync(dir).filter((f) => f.startsWith(base) && f.endsWith('.json'))
    .map((f) => path.join(dir, f)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  process.stdout.write((files[0] || '') + '\n');
  process.exit(0);
}

main().catch((e) => {
  console.error('ort_layer_pair: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
