// How lutra writes outputs: every file or folder is written under a recognisable temporary name
// next to its final path (`.NAME.lutra-tmp-PID`) and renamed into place when complete. Live
// temporary paths are kept in a registry; on SIGINT, SIGTERM or SIGHUP the handler removes them
// synchronously, restores the terminal (progress bars stopped, cursor shown), prints one line and
// exits 130 / 143 / 129. A run killed outright (SIGKILL) leaves its temporaries behind: the next
// run that writes into the same folder, or `lutra clean DIR`, removes those whose PID is dead.
import { existsSync, linkSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { LutraError } from './errors.js';

/** `.NAME.lutra-tmp-PID` (being written) or `.NAME.lutra-old-PID` (an output being replaced). */
const TEMP_NAME = /^\.(.+)\.lutra-(tmp|old)-(\d+)$/;
/** Temporary names of earlier lutra versions, recognised by `lutra clean` only. */
const LEGACY_NAMES = [
  /^\.(.+)\.tmp-(\d+)$/, // package and fixture folders
  /^\.(.+)\.peak-(\d+)$/, // fp16 overflow fixtures
  /^\.(.+\.gguf)\.(\d+)\.\d+\.tmp$/, // GGUF files
  /^\.packages-(\d+)$/, // sweep packages
  /^(.+\.(?:safetensors|md|json|jsonl|html))\.tmp-(\d+)$/, // weight files, tables and reports
];

const live = new Set<string>();
const restorers = new Set<() => void>();

/** The temporary name an output is written under (next to it, so the final rename stays on one file system). */
export function tempPathFor(out: string, kind: 'tmp' | 'old' = 'tmp'): string {
  return join(dirname(out), `.${basename(out)}.lutra-${kind}-${process.pid}`);
}

/** Registers a temporary path: it is removed if the process is interrupted before release(). */
export function registerTemp(path: string): void {
  installSignalHandlers();
  live.add(path);
}

/** The path is no longer temporary (renamed into place) or already removed. */
export function releaseTemp(path: string): void {
  live.delete(path);
}

/** Removes a temporary file or folder and forgets it. */
export function removeTemp(path: string): void {
  rmSync(path, { recursive: true, force: true });
  live.delete(path);
}

/** Temporary paths of this process not yet renamed or removed (for tests and diagnostics). */
export function liveTemps(): string[] {
  return [...live];
}

/** Runs `fn` if the process is interrupted (stop a progress bar, show the cursor); returns the unregister function. */
export function onInterrupt(fn: () => void): () => void {
  installSignalHandlers();
  restorers.add(fn);
  return () => restorers.delete(fn);
}

/** Lets pending events (a signal) run: awaited between tensors and chunks of long synchronous work. */
export function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

const EXIT_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
let installed = false;

/**
 * Installs the SIGINT/SIGTERM/SIGHUP handler (idempotent). It is installed by the first
 * registerTemp or onInterrupt, so commands that write nothing (chat) keep Node's default or their own.
 */
export function installSignalHandlers(): void {
  if (installed) return;
  installed = true;
  for (const signal of Object.keys(EXIT_CODES)) process.on(signal, () => interrupted(signal));
}

function interrupted(signal: string): never {
  for (const fn of [...restorers]) {
    try {
      fn();
    } catch {
      // The terminal is restored below whatever a progress bar does.
    }
  }
  // Show the cursor; a stopped bar ended its line, else the line holds the echoed ^C.
  if (process.stderr.isTTY) writeQuietly(restorers.size > 0 ? '\x1b[?25h' : '\x1b[?25h\n');
  const partial = live.size;
  const failed = removeLiveTemps();
  const what = failed > 0 ? `; could not remove ${failed} partial output(s): run lutra clean on their folder` : partial > 0 ? '; removed the partial output' : '';
  writeQuietly(`lutra: interrupted (${signal})${what}\n`);
  process.exit(EXIT_CODES[signal] ?? 1);
}

/**
 * Removes every live temporary path (for an exit that skips the writers' own clean-up: a signal,
 * a closed stdout); returns how many could not be removed.
 */
export function removeLiveTemps(): number {
  let failed = 0;
  for (const path of [...live]) {
    try {
      rmSync(path, { recursive: true, force: true });
      live.delete(path);
    } catch {
      // Left for the next run's stale sweep or `lutra clean`.
      failed++;
    }
  }
  return failed;
}

function writeQuietly(text: string): void {
  try {
    writeSync(2, text);
  } catch {
    // stderr closed (SIGHUP of a terminal): nothing to tell.
  }
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export interface StaleEntry {
  path: string;
  /** 'removed', or 'restored' for an output whose replacement was interrupted between its two renames. */
  action: 'removed' | 'restored';
}

/**
 * Removes leftovers of killed lutra runs in `dir`: temporary names whose PID is no longer alive.
 * An `.NAME.lutra-old-PID` whose NAME is missing is renamed back (the run was killed mid-swap).
 * `legacy` also matches the temporary names of earlier lutra versions.
 */
export function sweepStale(dir: string, { legacy = false } = {}): StaleEntry[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const done: StaleEntry[] = [];
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    let pid: number;
    let kind = 'tmp';
    if (m) {
      pid = Number(m[3]);
      kind = m[2];
    } else if (legacy) {
      const l = LEGACY_NAMES.map((re) => re.exec(name)).find((x) => x);
      if (!l) continue;
      pid = Number(l[l.length - 1]);
    } else continue;
    if (!Number.isSafeInteger(pid) || pidAlive(pid)) continue;
    const path = join(dir, name);
    if (kind === 'old' && m && !existsSync(join(dir, m[1]))) {
      renameSync(path, join(dir, m[1]));
      done.push({ path: join(dir, m[1]), action: 'restored' });
      continue;
    }
    rmSync(path, { recursive: true, force: true });
    done.push({ path, action: 'removed' });
  }
  return done;
}

export interface OutputOptions {
  /** Replace an existing output (once the new one is complete) instead of refusing. */
  force?: boolean;
  /** The option the path came from, named in errors (e.g. --out). */
  flag?: string;
  /** The command has --force: errors suggest it. */
  forceFlag?: boolean;
  kind: 'file' | 'dir';
}

/** A file or folder being written under its temporary name; commit() puts it in place. */
export class PendingOutput {
  readonly path: string;
  private open = true;

  /** `out` must not exist unless opts.force (then it is replaced when the new output is complete). */
  constructor(readonly out: string, private opts: OutputOptions) {
    const where = opts.flag ? `${opts.flag} ${out}` : out;
    if (!opts.force && existsSync(out)) {
      throw new LutraError(`${where}: already exists; choose a new path${opts.forceFlag ? ' or pass --force to replace it' : ''}`);
    }
    ensureParentDir(out, where);
    sweepStale(dirname(out));
    this.path = tempPathFor(out);
    registerTemp(this.path);
    rmSync(this.path, { recursive: true, force: true });
  }

  /** Moves the complete output into place. Without force, an output that appeared meanwhile is never overwritten. */
  commit(): void {
    if (!this.open) throw new Error(`internal: ${this.out} committed twice`);
    const where = this.opts.flag ? `${this.opts.flag} ${this.out}` : this.out;
    try {
      if (!this.opts.force) {
        if (this.opts.kind === 'file') {
          // link() fails with EEXIST instead of replacing, as rename() would.
          linkSync(this.path, this.out);
          unlinkSync(this.path);
        } else {
          renameSync(this.path, this.out);
        }
      } else if (this.opts.kind === 'file' || !existsSync(this.out)) {
        renameSync(this.path, this.out);
      } else {
        // A folder cannot be swapped in one rename: the old one steps aside only now that the new one is complete.
        const old = tempPathFor(this.out, 'old');
        registerTemp(old);
        renameSync(this.out, old);
        try {
          renameSync(this.path, this.out);
        } catch (e) {
          renameSync(old, this.out);
          releaseTemp(old);
          throw e;
        }
        removeTemp(old);
      }
    } catch (e) {
      this.abort();
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        throw new LutraError(`${where}: another run wrote it while this one was working; this output was discarded${this.opts.forceFlag ? ' (pass --force to replace it)' : ''}`);
      }
      throw new LutraError(`${where}: cannot put the output in place (${code ?? (e as Error).message})`);
    }
    releaseTemp(this.path);
    this.open = false;
  }

  /** Removes the partial output (safe to call after commit: then a no-op). */
  abort(): void {
    if (!this.open) return;
    this.open = false;
    removeTemp(this.path);
  }
}

/**
 * Creates the folder an output goes into (as `mkdir -p`), so every command treats a new folder
 * alike; `where` names the output in the error when that is impossible (a file in the way, no
 * permission). Commands call it before long work, so a bad path fails at once, not at the end.
 */
export function ensureParentDir(out: string, where = out): void {
  const dir = dirname(out);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a file is in the way' : code ?? (e as Error).message;
    throw new LutraError(`${where}: cannot create its folder ${dir} (${why})`);
  }
  if (!statSync(dir).isDirectory()) throw new LutraError(`${where}: ${dir} is not a folder`);
}

/**
 * ensureParentDir's check without creating anything (before a command's slow part, so a failure
 * there leaves no empty folders): the nearest existing ancestor must be a folder.
 */
export function checkParentDir(out: string, where = out): void {
  let dir = dirname(out);
  while (!existsSync(dir)) {
    const up = dirname(dir);
    if (up === dir) return;
    dir = up;
  }
  if (!statSync(dir).isDirectory()) throw new LutraError(`${where}: cannot create its folder ${dirname(out)} (a file is in the way)`);
}

/** Runs `write(tempPath)` and commits its output, or removes the temporary on any error. */
export async function writeOutput<T>(
  out: string,
  opts: OutputOptions,
  write: (tmp: string) => Promise<T> | T,
): Promise<T> {
  const pending = new PendingOutput(out, opts);
  try {
    let result: T;
    try {
      result = await write(pending.path);
    } catch (e) {
      // An error about the temporary (a full disk, said by this writer or a nested one) names the
      // output instead; errors about anything else (a source being read) pass unchanged.
      const where = opts.flag ? `${opts.flag} ${out}` : out;
      if (e instanceof LutraError) {
        if (e.message.includes(pending.path)) throw new LutraError(e.message.split(pending.path).join(out), e.code);
        throw e;
      }
      const err = e as NodeJS.ErrnoException;
      if (typeof err.code === 'string' && typeof err.path === 'string' && err.path.startsWith(pending.path)) throw new LutraError(`${where}: cannot write (${err.code})`);
      throw e;
    }
    pending.commit();
    return result;
  } finally {
    pending.abort();
  }
}

/** Writes a small text file atomically, replacing an existing one. */
export function writeFileAtomic(path: string, text: string | Uint8Array): void {
  const pending = new PendingOutput(path, { force: true, kind: 'file' });
  try {
    try {
      writeFileSync(pending.path, text);
    } catch (e) {
      throw new LutraError(`${path}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    pending.commit();
  } finally {
    pending.abort();
  }
}
