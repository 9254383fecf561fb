import type { Command } from './common.js';
import { MODEL_OPTIONS } from './common.js';
import { loadModel } from '../api/model.js';
import { createServer, DEFAULT_MAX_BODY } from '../server/server.js';
import { activationsFlag, simdFlag } from './model-flags.js';
import { SPECULATIVE_OPTION, speculativeFlag } from './speculative-flag.js';

export const serveCommand: Command = {
  name: 'serve',
  summary: 'an OpenAI-compatible HTTP server (chat and text completions, streaming)',
  usage: 'lutra serve [--model DIR] [--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N] [--context N] [--speculative lookup|suffix|draft:MODEL]',
  options: {
    model: MODEL_OPTIONS.model,
    host: { type: 'string', arg: 'ADDR', help: 'address to listen on (0.0.0.0 for every interface)', default: '127.0.0.1' },
    port: { type: 'string', arg: 'N', help: 'TCP port (0 picks a free one)', default: '8080' },
    parallel: { type: 'string', arg: 'N', help: 'requests that generate at once, each in its own session (KV cache) over the one loaded model', default: '4' },
    queue: { type: 'string', arg: 'N', help: 'requests that may wait for a session; more get HTTP 429', default: '64' },
    'model-name': { type: 'string', arg: 'NAME', help: 'the model id /v1/models lists and requests may name', default: "the model folder's name" },
    'max-body': { type: 'string', arg: 'BYTES', help: 'largest request body; larger ones get HTTP 413', default: String(DEFAULT_MAX_BODY) },
    context: MODEL_OPTIONS.context,
    backend: MODEL_OPTIONS.backend,
    threads: MODEL_OPTIONS.threads,
    numerics: MODEL_OPTIONS.numerics,
    activations: MODEL_OPTIONS.activations,
    simd: MODEL_OPTIONS.simd,
    speculative: { ...SPECULATIVE_OPTION.speculative, help: 'default speculative decoding of requests: lookup, suffix, draft:MODEL (loads MODEL as the draft) or off; a request\'s "speculative" field ("off", "lookup", "suffix", "draft") overrides it' },
    quiet: { type: 'boolean', help: 'do not log requests on stderr' },
  },
  notes:
    'Endpoints: POST /v1/chat/completions, POST /v1/completions (stream: true for Server-Sent Events),\n' +
    'GET /v1/models, GET /health. Requests beyond --parallel wait their turn; a follow-up turn of a\n' +
    'conversation reuses the cached prefix of the session that served the earlier one (usage.\n' +
    'prompt_tokens_details.cached_tokens). Sampling defaults to greedy (temperature 0). Ctrl-C or\n' +
    'SIGTERM stops accepting, lets running requests finish for up to 5 s, then exits 0.\n' +
    'Example: curl http://127.0.0.1:8080/v1/chat/completions -H "content-type: application/json" \\\n' +
    '           -d \'{"messages":[{"role":"user","content":"Tell me a fortune."}],"max_tokens":64}\'',
  async run(flags) {
    const path = flags.model();
    const port = flags.number('port', 8080, { integer: true, min: 0, max: 65535 });
    const parallel = flags.number('parallel', 4, { integer: true, min: 1, max: 256 });
    const queueLimit = flags.number('queue', 64, { integer: true, min: 0, max: 100000 });
    const maxBodyBytes = flags.number('max-body', DEFAULT_MAX_BODY, { integer: true, min: 1024 });
    const threads = flags.has('threads') ? flags.number('threads', 1, { integer: true, min: 1, max: 256 }) : undefined;
    const contextLength = flags.has('context') ? flags.number('context', 4096, { integer: true, min: 2 }) : undefined;
    const backend = flags.string('backend', 'wasm');
    const quiet = flags.bool('quiet');
    process.stderr.write(`loading ${path}...\n`);
    const model = await loadModel(path, {
      backend: backend as 'wasm' | 'reference',
      threads,
      numerics: flags.optionalString('numerics'),
      activations: activationsFlag(flags),
      simd: simdFlag(flags),
      contextLength,
      parallel,
      queueLimit,
    });
    let speculative;
    try {
      speculative = await speculativeFlag(flags);
    } catch (e) {
      model.dispose();
      throw e;
    }
    const server = await createServer({
      model,
      speculative: speculative.draft ? 'draft' : (speculative.option as 'lookup' | 'suffix' | undefined),
      draft: speculative.draft,
      host: flags.string('host', '127.0.0.1'),
      port,
      modelName: flags.optionalString('model-name'),
      maxBodyBytes,
      onRequest: quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    });
    const i = model.info;
    process.stderr.write(
      `lutra serve: ${path} (${i.backend}, ${i.threads} threads, context ${i.contextLength}, ${parallel} parallel) listening on ${server.url}\n`,
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
