// The chapter's greedy loop in the browser: an 8-token prompt through the prefill graph, then one token at a
// time through the decode graph, the KV cache passed from each step's outputs to the next step's inputs (as
// kernels/web/__init__.py does natively). onnxruntime-web's WebAssembly build, served from 127.0.0.1: no CDN.
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';

const q = new URLSearchParams(location.search);
const model = q.get('model');
const threads = Number(q.get('threads') || 1);
const steps = Number(q.get('steps') || 128);
const repeats = Number(q.get('repeats') || 3);
const prompt = (q.get('prompt') || '').split(',').filter(s => s.length).map(Number);

ort.env.wasm.numThreads = threads;   // more than 1 needs crossOriginIsolated (COOP/COEP headers)
ort.env.logLevel = 'error';

function argmaxLast(t) {             // first index of the largest logit of the last position, as numpy/torch
  const v = t.dims[t.dims.length - 1];
  const d = t.data;
  const off = d.length - v;
  let best = 0;
  for (let i = 1; i < v; i++) if (d[off + i] > d[off + best]) best = i;
  return best;
}

async function main() {
  const t0 = performance.now();
  const opts = {executionProviders: ['wasm'], graphOptimizationLevel: 'all'};
  const prefill = await ort.InferenceSession.create(`models/${model}/prefill.onnx`, opts);
  const decode = await ort.InferenceSession.create(`models/${model}/decode.onnx`, opts);
  const sessionS = (performance.now() - t0) / 1000;
  const kvNames = prefill.outputNames.slice(1);

  async function greedy() {
    const ids64 = BigInt64Array.from(prompt.map(BigInt));
    let out = await prefill.run({input_ids: new ort.Tensor('int64', ids64, [1, prompt.length])});
    const ids = [];
    for (;;) {
      const next = argmaxLast(out.logits);
      ids.push(next);
      if (ids.length === steps) break;
      const feed = {input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(next)]), [1, 1])};
      for (const name of kvNames) feed[name.replace('present', 'past')] = out[name];
      out = await decode.run(feed);
    }
    return ids;
  }

  const ids = await greedy();        // warm-up, and the ids compared with native onnxruntime
  const rates = [];
  for (let r = 0; r < repeats; r++) {
    const t = performance.now();
    await greedy();
    rates.push(steps / ((performance.now() - t) / 1000));
  }
  document.getElementById('log').textContent = `${model}, ${threads} thread(s): ${rates.map(r => r.toFixed(0)).join(', ')} tokens/s`;
  window.RESULT = {model, threads, ids, tok_s: rates, numThreads: ort.env.wasm.numThreads,
                   crossOriginIsolated: self.crossOriginIsolated, session_s: sessionS, userAgent: navigator.userAgent};
}

main().catch(e => { window.RESULT = {model, threads, error: String((e && e.stack) || e)}; });
