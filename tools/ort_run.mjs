#!/usr/bin/env node
// Runs an ONNX model in ONNX Runtime (npm onnxruntime-node, CPU) - the peer of gelan-infer.
//
//   node tools/ort_run.mjs --model F.onnx --in IN.safetensors --out OUT.safetensors [--threads N]
//   node tools/ort_run.mjs --model F.onnx --in x.bin --shape 1,3,640,640 --out OUT.safetensors
//   node tools/ort_run.mjs --model F.onnx --shape 1,3,640,640 --bench 20 --warmup 3 --threads 2 [--profile K]
//
// Input: the tensor `input` (or --name) of a safetensors file (F32), or a raw little-endian float32
// file with --shape; for --bench without --in, a fixed pseudo-random image of --shape. Every output of
// the model is written to OUT as `output.<name>` (F32), the naming of `gelan-infer run`.
// --bench N times N runs after --warmup (default 3) and prints
//   ort_ms median=... min=... max=... runs=N threads=T load=L
// --profile K also runs ORT's profiler over the timed runs and prints the time per op type and the
// K slowest nodes (ms per run). --opt disabled|basic|extended|all sets the graph optimization level
// (default all, ORT's default); --save-optimized F writes the model after ORT's fusions.
// --serve (for bench/ort_bench.c, which alternates runs with gelan-infer so both see the same machine
// load): after creating the session, reads lines "run K" on stdin, does K timed runs and answers
// "ms W1/C1 ... WK/CK" (wall and process CPU milliseconds of each); exits at "quit" or end of input.
// Threads: --threads sets intra-op threads (inter-op 1, sequential execution); default: ORT's (all cores).
// Install: `npm install --ignore-scripts` at the repository root (package.json pins the version; the CPU
// library ships inside the package, the skipped install script only fetches CUDA binaries).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let ort;
try {
    ort = require('onnxruntime-node');
} catch (e) {
    console.error(`ort_run: cannot load onnxruntime-node (${e.message.split('\n')[0]}); run \`npm install --ignore-scripts\` at the repository root`);
    process.exit(3);
}

function usage(msg) {
    if (msg) console.error(`ort_run: ${msg}`);
    console.error('usage: node tools/ort_run.mjs --model F.onnx [--in IN.safetensors|x.bin] [--name input] [--shape N,C,H,W]\n' +
        '       [--out OUT.safetensors] [--threads N] [--bench N --warmup N --profile K] [--serve] [--opt LEVEL] [--save-optimized F]');
    process.exit(2);
}

function parseArgs(argv) {
    const o = { name: 'input', warmup: 3, bench: 0, profile: 0, opt: 'all', serve: false };
    const keys = { '--model': 'model', '--in': 'in', '--name': 'name', '--shape': 'shape', '--out': 'out',
        '--threads': 'threads', '--bench': 'bench', '--warmup': 'warmup', '--profile': 'profile', '--opt': 'opt',
        '--save-optimized': 'saveOptimized' };
    for (let i = 0; i < argv.length; i++) {
        if (argv[i] === '--help' || argv[i] === '-h') usage();
        if (argv[i] === '--serve') {
            o.serve = true;
            continue;
        }
        const k = keys[argv[i]];
        if (!k) usage(`unknown option '${argv[i]}'`);
        if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
        o[k] = argv[++i];
    }
    for (const k of ['threads', 'bench', 'warmup', 'profile']) {
        if (o[k] === undefined) continue;
        const v = Number(o[k]);
        if (!Number.isInteger(v) || v < 0) usage(`--${k} must be a non-negative integer, got '${o[k]}'`);
        o[k] = v;
    }
    if (o.shape !== undefined) {
        o.shape = o.shape.split(',').map(Number);
        if (o.shape.some((d) => !Number.isInteger(d) || d < 1)) usage('--shape takes positive integers N,C,H,W');
    }
    if (!o.model) usage('--model is required');
    if (!o.out && !o.bench && !o.serve) usage('give --out, --bench or --serve');
    if (!o.in && !((o.bench || o.serve) && o.shape)) usage('give --in (or --shape with --bench or --serve)');
    if (!['disabled', 'basic', 'extended', 'all'].includes(o.opt)) usage(`--opt: unknown level '${o.opt}'`);
    return o;
}

// ---- safetensors ---------------------------------------------------------------------
function readSafetensors(file, name) {
    const buf = fs.readFileSync(file);
    if (buf.length < 8) throw new Error(`${file}: too short for a safetensors file`);
    const hlen = Number(buf.readBigUInt64LE(0));
    if (8 + hlen > buf.length) throw new Error(`${file}: header length ${hlen} past the end`);
    const header = JSON.parse(buf.toString('utf8', 8, 8 + hlen));
    const t = header[name];
    if (!t || name === '__metadata__') throw new Error(`${file}: no tensor '${name}'`);
    if (t.dtype !== 'F32') throw new Error(`${file}: '${name}' is ${t.dtype}, expected F32`);
    const [b, e] = t.data_offsets, n = t.shape.reduce((a, d) => a * d, 1);
    if (e - b !== 4 * n || 8 + hlen + e > buf.length) throw new Error(`${file}: '${name}' has a bad byte range`);
    const start = 8 + hlen + b;
    const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + start + 4 * n));
    return { data, shape: t.shape };
}

function writeSafetensors(file, tensors, metadata) {
    const header = { __metadata__: metadata };
    let offset = 0;
    for (const [name, t] of Object.entries(tensors)) {
        header[name] = { dtype: 'F32', shape: t.dims, data_offsets: [offset, offset + 4 * t.data.length] };
        offset += 4 * t.data.length;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8); // the data section starts 8-byte aligned
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    const parts = [head, Buffer.from(json, 'utf8')];
    for (const t of Object.values(tensors)) parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, 4 * t.data.length));
    const tmp = `${file}.tmp.${process.pid}`;
    fs.writeFileSync(tmp, Buffer.concat(parts));
    fs.renameSync(tmp, file);
}

function readInput(o) {
    if (o.in && o.in.endsWith('.safetensors') && !o.shape) return readSafetensors(o.in, o.name);
    const n = o.shape.reduce((a, d) => a * d, 1);
    if (o.in) {
        const buf = fs.readFileSync(o.in);
        if (buf.length !== 4 * n) throw new Error(`${o.in}: ${buf.length} bytes, --shape ${o.shape} needs ${4 * n}`);
        return { data: new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length)), shape: o.shape };
    }
    const data = new Float32Array(n); // any image: latency does not depend on the values
    let s = 12345;
    for (let i = 0; i < n; i++) {
        s = (Math.imul(s, 1103515245) + 12345) >>> 0;
        data[i] = ((s >>> 8) & 255) / 255;
    }
    return { data, shape: o.shape };
}

// ---- profile -----------------------------------------------------------------------
// ORT's profile is a Chrome trace: one "Node" event per node run (dur in us, args.op_name).
function summarizeProfile(file, runs, top) {
    const events = JSON.parse(fs.readFileSync(file, 'utf8'));
    const byOp = new Map(), byNode = new Map();
    let total = 0;
    for (const e of events) {
        if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
        const op = e.args.op_name, node = e.name.slice(0, -'_kernel_time'.length);
        byOp.set(op, (byOp.get(op) || 0) + e.dur);
        const prev = byNode.get(node) || { op, dur: 0 };
        prev.dur += e.dur;
        byNode.set(node, prev);
        total += e.dur;
    }
    const ms = (us) => (us / 1000 / runs).toFixed(3);
    console.log(`\nORT profile: ${ms(total)} ms per run in node kernels`);
    console.log('  op type            ms/run   share   nodes');
    const counts = new Map();
    for (const v of byNode.values()) counts.set(v.op, (counts.get(v.op) || 0) + 1);
    for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]))
        console.log(`  ${op.padEnd(16)} ${ms(us).padStart(8)} ${(100 * us / total).toFixed(1).padStart(6)}%  ${String(counts.get(op)).padStart(6)}`);
    console.log(`slowest nodes (ms per run):`);
    for (const [node, v] of [...byNode].sort((a, b) => b[1].dur - a[1].dur).slice(0, top))
        console.log(`  ${ms(v.dur).padStart(8)}  ${v.op.padEnd(12)} ${node}`);
}

// ---- main ----------------------------------------------------------------------------
async function main() {
    const o = parseArgs(process.argv.slice(2));
    const x = readInput(o);
    const so = { graphOptimizationLevel: o.opt, executionMode: 'sequential', interOpNumThreads: 1, logSeverityLevel: 3 };
    if (o.threads) so.intraOpNumThreads = o.threads;
    if (o.saveOptimized) so.optimizedModelFilePath = o.saveOptimized;
    if (o.profile) {
        so.enableProfiling = true;
        so.profileFilePrefix = path.join(os.tmpdir(), `ort_run_profile_${process.pid}`);
    }
    const session = await ort.InferenceSession.create(o.model, so);
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
    if (o.serve) {
        const readline = await import('node:readline');
        for await (const line of readline.createInterface({ input: process.stdin })) {
            const m = /^run (\d+)$/.exec(line.trim());
            if (!m) break;
            const times = [];
            for (let i = 0; i < Number(m[1]); i++) {
                const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
                await session.run(feeds);
                const wall = Number(process.hrtime.bigint() - t0) / 1e6, cpu = process.cpuUsage(c0);
                times.push(`${wall.toFixed(3)}/${((cpu.user + cpu.system) / 1000).toFixed(3)}`);
            }
            process.stdout.write(`ms ${times.join(' ')}\n`);
        }
        return;
    }
    if (o.bench) {
        // the profiler records from session creation: the warm-up runs are left out by running them on a
        // separate session when profiling
        const warm = o.profile ? await ort.InferenceSession.create(o.model, { ...so, enableProfiling: false }) : session;
        for (let i = 0; i < o.warmup; i++) await warm.run(feeds);
        const times = [];
        for (let i = 0; i < o.bench; i++) {
            const t0 = process.hrtime.bigint();
            await session.run(feeds);
            times.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        const sorted = [...times].sort((a, b) => a - b);
        const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
        console.log(`ort_ms median=${median.toFixed(2)} min=${sorted[0].toFixed(2)} max=${sorted[sorted.length - 1].toFixed(2)} ` +
            `runs=${o.bench} threads=${o.threads || 'default'} load=${os.loadavg()[0].toFixed(1)} ort=${ort.env.versions.node}`);
        if (o.profile) {
            session.endProfiling();
            const dir = os.tmpdir(), prefix = path.basename(so.profileFilePrefix);
            const files = fs.readdirSync(dir).filter((f) => f.startsWith(prefix) && f.endsWith('.json'));
            if (!files.length) throw new Error('ORT wrote no profile');
            for (const f of files) {
                summarizeProfile(path.join(dir, f), o.bench, o.profile);
                fs.unlinkSync(path.join(dir, f));
            }
        }
    }
    if (o.out) {
        const res = await session.run(feeds);
        const outs = {};
        for (const name of session.outputNames) outs[`output.${name}`] = res[name];
        writeSafetensors(o.out, outs, { producer: `onnxruntime-node ${ort.env.versions.node}`, model: path.basename(o.model) });
    }
}

main().catch((e) => {
    console.error(`ort_run: ${e.message}`);
    process.exit(1);
});
