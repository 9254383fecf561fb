// `lutra clean DIR`: remove what killed lutra runs left in DIR (temporary outputs whose process is gone).
import { statSync } from 'node:fs';
import type { Command } from './common.js';
import { sweepStale } from '../util/atomic-output.js';
import { LutraError } from '../util/errors.js';

export const cleanCommand: Command = {
  name: 'clean',
  summary: 'remove the partial outputs that killed lutra runs left in a folder',
  positionals: true,
  usage: 'lutra clean DIR',
  options: {},
  notes:
    'lutra writes every output under a temporary name next to it (.NAME.lutra-tmp-PID) and renames it when complete.\n' +
    'Ctrl-C or SIGTERM removes the temporary; a run killed outright (SIGKILL, power loss) leaves it. This removes\n' +
    'those whose process is no longer running (and the .NAME.tmp-PID style names of earlier lutra versions); the\n' +
    'next lutra run writing into the same folder removes them too. An output whose replacement (--force) was cut\n' +
    'short between its two renames is put back.',
  run(_flags, positionals) {
    if (positionals.length !== 1) throw new LutraError(`lutra clean: expected one folder, got ${positionals.length ? positionals.join(' ') : 'none'}`);
    const dir = positionals[0];
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch (e) {
      throw new LutraError(`${dir}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected a folder`);
    }
    if (!isDir) throw new LutraError(`${dir}: not a folder`);
    const done = sweepStale(dir, { legacy: true });
    for (const d of done) process.stdout.write(`${d.action} ${d.path}\n`);
    process.stderr.write(done.length ? `lutra clean: ${done.length} leftover(s) in ${dir}\n` : `lutra clean: nothing to remove in ${dir}\n`);
  },
};
