// The LoRA blends a loaded model can run with: a default one (applied when a request names none)
// and named ones a request chooses. Each blend is prepared once on the backend; the base weights
// are shared by all of them.
import type { Backend } from '../backend/backend.js';
import type { TensorSpec } from '../arch/architecture.js';
import { parseLoraSpec, readLoraAdapter } from '../adapters/lora.js';
import { PreparedLora } from '../adapters/apply.js';
import { LutraError } from '../util/errors.js';

/** An adapter folder, "FOLDER:WEIGHT", or {path, weight}; a list blends several. */
export type LoraInput = string | { path: string; weight?: number };

/** Checked folder/weight pairs of a LoraInput or a list of them; `field` names the option in errors. */
export function loraSpecs(input: LoraInput | readonly LoraInput[], field: string): { dir: string; weight: number }[] {
  const list = Array.isArray(input) ? input : [input];
  if (list.length === 0) throw new LutraError(`${field}: expected an adapter folder or a list of them`);
  return list.map((x, i) => {
    const at = Array.isArray(input) ? `${field}[${i}]` : field;
    if (typeof x === 'string') return parseLoraSpec(x, at);
    if (typeof x !== 'object' || x === null || typeof x.path !== 'string' || x.path === '') {
      throw new LutraError(`${at}: expected a folder path, "PATH:WEIGHT" or {path, weight}`);
    }
    const weight = x.weight ?? 1;
    if (typeof weight !== 'number' || !Number.isFinite(weight)) throw new LutraError(`${at}.weight: expected a finite number, got ${JSON.stringify(weight)}`);
    return { dir: x.path, weight };
  });
}

export class AdapterRegistry {
  private readonly blends = new Map<string, PreparedLora>();

  constructor(
    private readonly backend: Backend,
    private readonly tensors: readonly TensorSpec[],
    /** Applied to requests that name no adapter (null: the base model). */
    readonly defaultBlend: PreparedLora | null,
  ) {}

  /** Read, check and prepare a blend under `name` (a request's `adapter`). */
  add(name: string, input: LoraInput | readonly LoraInput[]): PreparedLora {
    if (typeof name !== 'string' || !/^[\w.-]+$/.test(name)) throw new LutraError(`adapter name ${JSON.stringify(name)}: expected letters, digits, "_", "." or "-"`);
    if (this.blends.has(name)) throw new LutraError(`adapter "${name}" is already loaded`);
    const specs = loraSpecs(input, `adapters.${name}`);
    const blend = new PreparedLora(this.backend, specs.map((s) => ({ adapter: readLoraAdapter(s.dir, this.tensors), weight: s.weight })));
    this.blends.set(name, blend);
    return blend;
  }

  /** The blend a request asked for: undefined → the default, null → none, a name → that blend. */
  resolve(adapter: string | null | undefined, field = 'adapter'): PreparedLora | null {
    if (adapter === undefined) return this.defaultBlend;
    if (adapter === null) return null;
    const b = typeof adapter === 'string' ? this.blends.get(adapter) : undefined;
    if (!b) {
      const known = this.names();
      throw new LutraError(`${field} ${JSON.stringify(adapter)}: no such adapter; ${known.length ? `loaded: ${known.join(', ')}` : 'none is loaded'}`);
    }
    return b;
  }

  names(): string[] {
    return [...this.blends.keys()];
  }
}
