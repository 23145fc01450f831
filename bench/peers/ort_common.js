// What the ONNX Runtime peers (ort_bench.js, ort_pair.js, ort_check.js)
// share: the binding bench/peers/setup installs, and the options of the
// sessions that are timed, so that every ORT timing runs the same session.
'use strict';

const path = require('path');

// onnxruntime-node from bench/peers/node, or exit 1 with a one-line
// reason that names the calling tool.
function loadOrt(tool) {
  try {
    return require(path.join(__dirname, 'node', 'node_modules', 'onnxruntime-node'));
  } catch (e) {
    console.error(`${tool}: onnxruntime-node is not installed; run bench/peers/setup`);
    process.exit(1);
  }
}

// A timed session: `threads` intra-op threads, one inter-op thread,
// sequential execution, all graph optimisations, the CPU provider.
function timingOptions(threads) {
  return {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all',
  };
}

module.exports = { loadOrt, timingOptions };
