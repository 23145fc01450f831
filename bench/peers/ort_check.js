#!/usr/bin/env node
// Runs every case of kiln's ONNX conformance data (tests/data/onnx) through
// ONNX Runtime and compares its outputs with the expected ones: a check that
// the data itself is right, independent of torch, which computed it.
//
//   node bench/peers/ort_check.js [tests/data/onnx]
//
// Prints one line per case (name, rel_l2 per output, OK/FAIL) and exits 1
// if a file's sha256 differs from the manifest or an output's relative L2
// error exceeds the case's tolerance.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const ort = require('./ort_common').loadOrt('ort_check');

function readChecked(dir, f) {
  const buf = fs.readFileSync(path.join(dir, f.file));
  const sum = crypto.createHash('sha256').update(buf).digest('hex');
  if (buf.length !== f.bytes || sum !== f.sha256) throw new Error(`${f.file}: size or sha256 differs from the manifest`);
  return buf;
}

function floats(buf) {
  const copy = Buffer.from(buf);
  return new Float32Array(copy.buffer, copy.byteOffset, copy.length / 4);
}

async function main() {
  const dir = process.argv[2] || path.join(__dirname, '..', '..', 'tests', 'data', 'onnx');
  const man = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  let failed = 0;
  for (const c of man.cases) {
    try {
      let model = readChecked(dir, c.model);
      if (c.model.compression === 'gzip') model = zlib.gunzipSync(model);
      const sess = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
      const feeds = {};
      for (const t of c.inputs) feeds[t.name] = new ort.Tensor('float32', floats(readChecked(dir, t)), t.shape);
      const res = await sess.run(feeds);
      const errs = c.outputs.map((t) => {
        const want = floats(readChecked(dir, t));
        const got = res[t.name];
        if (got.dims.join(',') !== t.shape.join(',')) throw new Error(`${t.name}: shape ${got.dims} != ${t.shape}`);
        let num = 0, den = 0;
        for (let i = 0; i < want.length; i++) {
          num += (got.data[i] - want[i]) ** 2;
          den += want[i] ** 2;
        }
        return Math.sqrt(num / Math.max(den, 1e-30));
      });
      const ok = errs.every((e) => e <= c.tolerance.rel_l2);
      if (!ok) failed++;
      console.log(`${c.name.padEnd(28)} rel_l2 ${errs.map((e) => e.toExponential(2)).join(' ')}  ${ok ? 'OK' : 'FAIL'}`);
    } catch (e) {
      failed++;
      console.log(`${c.name.padEnd(28)} ERROR ${e.message}`);
    }
  }
  console.log(`${man.cases.length - failed}/${man.cases.length} cases agree with onnxruntime ${ort.env.versions.common}`);
  process.exit(failed ? 1 : 0);
}

main();
