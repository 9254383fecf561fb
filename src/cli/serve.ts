import type { Command } from './common.js';
import { MODEL_OPTIONS } from './common.js';
import { createServer, DEFAULT_MAX_BODY } from '../server/server.js';
import { modelLabel, openLibraryModel } from './model-flags.js';
import { checkSpeculativeFlag, SPECULATIVE_OPTION, speculativeFor } from './speculative-flag.js';
import { parseLoraSpec } from '../adapters/lora.js';
import { LutraError } from '../util/errors.js';

/** --adapter NAME=DIR[:W][,DIR[:W]...] (repeatable) as named blends. */
function adapterFlags(values: string[]): Record<string, { path: string; weight: number }[]> {
  const out: Record<string, { path: string; weight: number }[]> = {};
  for (const v of values) {
    const m = /^([\w.-]+)=(.+)$/.exec(v);
    if (!m) throw new LutraError(`--adapter ${JSON.stringify(v)}: expected NAME=DIR[:W][,DIR[:W]...] (NAME of letters, digits, "_", "." or "-")`);
    if (out[m[1]]) throw new LutraError(`--adapter ${m[1]}: given twice`);
    out[m[1]] = m[2].split(',').map((d) => parseLoraSpec(d, `--adapter ${m[1]}`)).map((l) => ({ path: l.dir, weight: l.weight }));
  }
  return out;
}

export const serveCommand: Command = {
  name: 'serve',
  summary: 'an OpenAI-compatible HTTP server (chat and text completions, streaming) and the in-browser chat page',
  usage: 'lutra serve [-m PATH] [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N] [--context N] [--lora DIR[:W]] [--adapter NAME=DIR[:W]] [--no-batch] [--speculative lookup|suffix|draft:MODEL] [--no-page] [--no-isolation]',
  options: {
    ...MODEL_OPTIONS,
    host: { type: 'string', arg: 'ADDR', help: 'address to listen on (0.0.0.0 for every interface)', default: '127.0.0.1' },
    port: { type: 'string', arg: 'N', help: 'TCP port (0 picks a free one)', default: '8080' },
    parallel: { type: 'string', arg: 'N', help: 'requests that generate at once, each in its own session (KV cache) over the one loaded model', default: '4' },
    queue: { type: 'string', arg: 'N', help: 'requests that may wait for a session; more get HTTP 429', default: '64' },
    adapter: { type: 'string', multiple: true, arg: 'NAME=DIR[:W][,DIR[:W]...]', help: 'load a LoRA adapter (or a blend) that requests choose with "model": NAME or "adapter": NAME; the base weights are held once (repeatable)' },
    'model-name': { type: 'string', arg: 'NAME', help: 'the model id /v1/models lists and requests may name', default: "the model folder's name" },
    'max-body': { type: 'string', arg: 'BYTES', help: 'largest request body; larger ones get HTTP 413', default: String(DEFAULT_MAX_BODY) },
    'no-batch': { type: 'boolean', help: 'run each request\'s decode steps in passes of their own (by default concurrent requests share one forward pass per token)' },
    speculative: { ...SPECULATIVE_OPTION.speculative, help: 'default speculative decoding of requests: lookup, suffix, draft:MODEL (loads MODEL as the draft) or off; a request\'s "speculative" field ("off", "lookup", "suffix", "draft") overrides it' },
    'no-page': { type: 'boolean', help: 'serve the API only: no chat page at / and no model files for it' },
    'no-isolation': { type: 'boolean', help: 'serve the chat page without the COOP/COEP headers (the page then runs the engine on one thread)' },
    quiet: { type: 'boolean', help: 'do not log requests on stderr' },
  },
  notes:
    'Endpoints: POST /v1/chat/completions, POST /v1/completions (stream: true for Server-Sent Events),\n' +
    'GET /v1/models, GET /health; the chat page at / (lutra in the browser: it downloads the model\n' +
    'and runs it in the page, on the visitor\'s CPU; served cross-origin isolated so it can use threads).\n' +
    'Requests beyond --parallel wait their turn; a follow-up turn of a\n' +
    'conversation reuses the cached prefix of the session that served the earlier one (usage.\n' +
    'prompt_tokens_details.cached_tokens). Concurrent requests\' decode steps share one forward pass\n' +
    '(GET /health: decode.tokens_per_pass; --no-batch turns this off). Sampling defaults to greedy\n' +
    '(temperature 0). Ctrl-C or SIGTERM stops accepting, lets running requests finish for up to 5 s,\n' +
    'then exits 0. --lora applies to every request; each --adapter NAME is listed by /v1/models as a model\n' +
    'of its own and chosen per request by "model": NAME or the "adapter": NAME field ("adapter": null runs\n' +
    'the base model).\n' +
    'Example: curl http://127.0.0.1:8080/v1/chat/completions -H "content-type: application/json" \\\n' +
    '           -d \'{"messages":[{"role":"user","content":"Tell me a fortune."}],"max_tokens":64}\'',
  async run(flags) {
    const path = flags.model();
    const port = flags.number('port', 8080, { integer: true, min: 0, max: 65535 });
    const parallel = flags.number('parallel', 4, { integer: true, min: 1, max: 256 });
    const queueLimit = flags.number('queue', 64, { integer: true, min: 0, max: 100000 });
    const maxBodyBytes = flags.number('max-body', DEFAULT_MAX_BODY, { integer: true, min: 1024 });
    const quiet = flags.bool('quiet');
    checkSpeculativeFlag(flags); // before the (slow) model load
    const adapters = adapterFlags(flags.strings('adapter'));
    const model = await openLibraryModel(flags, { announce: true, parallel, queueLimit, batchDecode: !flags.bool('no-batch'), adapters });
    const speculative = await speculativeFor(flags, model);
    const server = await createServer({
      model,
      speculative: speculative.draft ? 'draft' : (speculative.option as 'lookup' | 'suffix' | undefined),
      draft: speculative.draft,
      host: flags.string('host', '127.0.0.1'),
      port,
      modelName: flags.optionalString('model-name'),
      maxBodyBytes,
      browser: flags.bool('no-page') ? false : { isolation: !flags.bool('no-isolation') },
      onRequest: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    }).catch((e) => {
      model.dispose();
      throw e;
    });
    const i = model.info;
    process.stderr.write(
      `lutra serve: ${modelLabel(path)} (${i.backend}, ${i.threads} thread${i.threads === 1 ? '' : 's'}, context ${i.contextLength}, ${parallel} parallel${model.batcher ? ', batched decode' : ''}) listening on ${server.url}${flags.bool('no-page') ? '' : ` (chat page: ${server.url}/)`}\n`,
    );
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = () => {
        if (stopping) return;
        stopping = true;
        process.stderr.write('lutra serve: stopping (finishing running requests)\n');
        server.close(5000).then(() => {
          speculative.draft?.dispose();
          model.dispose();
          resolve();
        });
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
  },
};
