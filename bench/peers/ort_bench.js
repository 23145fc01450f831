#!/usr/bin/env node
// Times ONNX Runtime (CPU execution provider) on the models and conv layers
// that export_models.py wrote, and prints one JSON object per line:
//   {"peer":"onnxruntime", "model"|"layer":..., "threads":N, "batch":B,
//    "median_ms":..., "p90_ms":..., "gflops":..., ...}
//
//   node bench/peers/ort_bench.js [--dir bench/peers/out] [--threads 1,2]
//       [--batch 1] [--warmup 5] [--runs 20] [--models resnet50,...|none]
//       [--layers all|none|NAME,...] [--layer-runs 10]
//
// Sessions use intraOpNumThreads = N, interOpNumThreads = 1, sequential
// execution and all graph optimisations (ORT's defaults for a server).
// Before timing a model at batch 1 its output is compared with torch's
// (rel_l2 in the output), so a wrong export cannot pass unnoticed.
'use strict';

const fs = require('fs');
const path = require('path');
const { loadOrt, timingOptions } = require('./ort_common');
const ort = loadOrt('ort_bench');

function parseArgs(argv) {
  const a = {
    dir: path.join(__dirname, 'out'), threads: '1,2', batch: '1', warmup: 5, runs: 20,
    models: 'all', layers: 'none', 'layer-runs': 10, 'layer-warmup': 3,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--help' || k === '-h') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 16).join('\n'));
      process.exit(0);
    }
    if (!k.startsWith('--') || i + 1 >= argv.length) {
      console.error(`ort_bench: bad argument ${k} (see --help)`);
      process.exit(2);
    }
    const name = k.slice(2);
    if (!(name in a)) {
      console.error(`ort_bench: unknown option ${k}`);
      process.exit(2);
    }
    a[name] = argv[++i];
  }
  for (const n of ['warmup', 'runs', 'layer-runs', 'layer-warmup']) {
    a[n] = parseInt(a[n], 10);
    if (!(a[n] >= 0)) {
      console.error(`ort_bench: --${n} must be a number`);
      process.exit(2);
    }
  }
  a.threads = a.threads.split(',').map(Number);
  a.batch = a.batch.split(',').map(Number);
  return a;
}

// NumPy .npy (format 1.0/2.0), little-endian float32, C order.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header))
    throw new Error(`${file}: want little-endian float32 in C order: ${header}`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
  const off = hstart + hlen;
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length));
  return { shape, data };
}

// Deterministic pseudo-random floats in [-1, 1) (xorshift32).
function randomData(n, seed) {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}

// Nearest-rank percentile of sorted times.
function percentile(sorted, p) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function relL2(a, b) {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

async function timeSession(sess, feeds, warmup, runs) {
  for (let i = 0; i < warmup; i++) await sess.run(feeds);
  const t = [];
  const cpu0 = process.cpuUsage(); // user + system of every thread, in us
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const cpu = process.cpuUsage(cpu0);
  t.sort((x, y) => x - y);
  return { median: percentile(t, 50), p90: percentile(t, 90), min: t[0],
    cpu: (cpu.user + cpu.system) / 1e3 / runs };
}

function round(x, d) {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

async function bench(item, kind, a, threads, batch) {
  const sess = await ort.InferenceSession.create(path.join(a.dir, item.onnx), timingOptions(threads));
  const shape = item.input_shape.slice();
  shape[0] = batch;
  const n = shape.reduce((x, y) => x * y, 1);
  const rec = { peer: 'onnxruntime', version: ort.env.versions.common };
  rec[kind] = item.name;
  Object.assign(rec, { threads, batch });
  let data;
  if (kind === 'model' && batch === 1 && item.input) {
    const inp = readNpy(path.join(a.dir, item.input));
    data = inp.data;
    const want = readNpy(path.join(a.dir, item.output)).data;
    const out = await sess.run({ [item.input_name]: new ort.Tensor('float32', data, shape) });
    rec.rel_l2 = Number(relL2(out[item.output_name].data, want).toExponential(2));
  } else {
    data = randomData(n, 12345 + batch);
  }
  const feeds = { [item.input_name]: new ort.Tensor('float32', data, shape) };
  const warm = kind === 'model' ? a.warmup : a['layer-warmup'];
  const runs = kind === 'model' ? a.runs : a['layer-runs'];
  const t = await timeSession(sess, feeds, warm, Math.max(1, runs));
  const flops = item.flops * batch;
  Object.assign(rec, {
    median_ms: round(t.median, 3), p90_ms: round(t.p90, 3), min_ms: round(t.min, 3),
    cpu_ms: round(t.cpu, 3),
    gflops: round(flops / (t.median * 1e6), 2), flops, runs,
  });
  if (kind === 'layer') rec.count = item.count;
  console.log(JSON.stringify(rec));
  if (sess.release) await sess.release();
}

function select(list, spec, what) {
  if (spec === 'none') return [];
  if (spec === 'all') return list;
  const want = spec.split(',');
  for (const w of want) {
    if (!list.some((x) => x.name === w)) {
      console.error(`ort_bench: no ${what} named ${w} in the manifest`);
      process.exit(2);
    }
  }
  return list.filter((x) => want.includes(x.name));
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const mpath = path.join(a.dir, 'manifest.json');
  if (!fs.existsSync(mpath)) {
    console.error(`ort_bench: ${mpath} missing; run bench/peers/export_models.py first`);
    process.exit(1);
  }
  const man = JSON.parse(fs.readFileSync(mpath, 'utf8'));
  const models = select(man.models, a.models, 'model');
  const layers = select(man.layers || [], a.layers, 'layer');
  for (const th of a.threads) {
    for (const b of a.batch) {
      for (const m of models) await bench(m, 'model', a, th, b);
      for (const l of layers) await bench(l, 'layer', a, th, b);
    }
  }
}

main().catch((e) => {
  console.error(`ort_bench: ${e.message}`);
  process.exit(1);
});
