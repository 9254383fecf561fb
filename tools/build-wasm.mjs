// Compile the AssemblyScript kernels (kernels/) into build/: per SIMD level a shared-memory build
// (threads on a worker pool) and an unshared "-st" build (one thread, for pages without
// cross-origin isolation), plus the bandwidth probe and the compute-peak probe.
import { execFileSync } from 'node:child_process';

const common = ['--importMemory', '--initialMemory', '17', '--maximumMemory', '65536', '-O3', '--runtime', 'stub', '--noAssert', '--use', 'abort='];
const shared = ['--enable', 'threads', '--sharedMemory'];
const builds = [
  ['kernels/index.ts', 'build/kernels.wasm', ['--enable', 'simd', ...shared]],
  ['kernels/index.ts', 'build/kernels-relaxed.wasm', ['--enable', 'simd', '--enable', 'relaxed-simd', ...shared]],
  ['kernels/index.ts', 'build/kernels-st.wasm', ['--enable', 'simd']],
  ['kernels/index.ts', 'build/kernels-relaxed-st.wasm', ['--enable', 'simd', '--enable', 'relaxed-simd']],
  ['kernels/probe.ts', 'build/probe.wasm', ['--enable', 'simd', ...shared, '--initialMemory', '1']],
  ['kernels/peak.ts', 'build/peak-relaxed.wasm', ['--enable', 'simd', '--enable', 'relaxed-simd', '--initialMemory', '1']],
];
for (const [src, out, flags] of builds) {
  const args = [src, '-o', out, ...common, ...flags];
  // --initialMemory given twice: the later one (the probe's 1 page) wins.
  execFileSync(process.execPath, ['node_modules/assemblyscript/bin/asc.js', ...args], { stdio: 'inherit' });
}
