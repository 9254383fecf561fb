// Headless Chromium for the browser tests: the browser comes from @sparticuz/chromium (a
// devDependency, so `npm install` brings it), or LUTRA_CHROMIUM names another; none found is an
// error, never a skip. Pages are served by lutra's own server on 127.0.0.1.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

/** The Chromium binary: $LUTRA_CHROMIUM, else @sparticuz/chromium's (unpacked on first use), else Debian's. */
export async function chromiumPath(): Promise<string> {
  const env = process.env.LUTRA_CHROMIUM;
  if (env) {
    if (!existsSync(env)) throw new Error(`LUTRA_CHROMIUM=${env}: no such file`);
    return env;
  }
  try {
    const mod = (await import('@sparticuz/chromium')) as unknown as { default: { executablePath(): Promise<string> } };
    return await mod.default.executablePath();
  } catch (e) {
    if (existsSync('/usr/bin/chromium')) return '/usr/bin/chromium';
    throw new Error(`no Chromium for the browser tests: @sparticuz/chromium failed (${(e as Error).message}) and /usr/bin/chromium is missing; run npm install, or set LUTRA_CHROMIUM`);
  }
}

export interface RunningBrowser {
  browser: Browser;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<RunningBrowser> {
  const browser = await chromium.launch({
    executablePath: await chromiumPath(),
    headless: true,
    args: [
      '--no-sandbox',
      '--no-zygote',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  return {
    browser,
    async close() {
      await browser.close();
    },
  };
}

/** A new page whose console errors and page errors are collected (and printed on failure by the caller). */
export async function newPage(b: RunningBrowser): Promise<{ page: Page; errors: string[] }> {
  const ctx = await b.browser.newContext();
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return { page, errors };
}

/** Pixels that differ between two PNG screenshots (decoded by the page's own canvas), or null when their sizes differ. */
export async function pixelsDiffering(page: Page, a: Buffer, b: Buffer): Promise<{ differing: number; total: number } | null> {
  return page.evaluate(
    async ([a64, b64]) => {
      const decode = async (s: string) => {
        const img = await createImageBitmap(await (await fetch(`data:image/png;base64,${s}`)).blob());
        const c = new OffscreenCanvas(img.width, img.height);
        const g = c.getContext('2d')!;
        g.drawImage(img, 0, 0);
        return g.getImageData(0, 0, img.width, img.height);
      };
      const [x, y] = await Promise.all([decode(a64), decode(b64)]);
      if (x.width !== y.width || x.height !== y.height) return null;
      let differing = 0;
      for (let i = 0; i < x.data.length; i += 4) {
        if (x.data[i] !== y.data[i] || x.data[i + 1] !== y.data[i + 1] || x.data[i + 2] !== y.data[i + 2]) differing++;
      }
      return { differing, total: x.width * x.height };
    },
    [a.toString('base64'), b.toString('base64')] as const,
  );
}

/**
 * Peak resident memory (VmHWM) of the busiest Chromium renderer process now alive: with one page
 * open, that page's main thread, its workers, their JS heaps and wasm memories. Linux only (0 elsewhere).
 */
export function rendererPeakBytes(): number {
  let peak = 0;
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return 0;
  }
  for (const pid of pids) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--type=renderer')) continue;
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]) * 1024);
    } catch {
      /* the process ended meanwhile */
    }
  }
  return peak;
}
