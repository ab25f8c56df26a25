// What every browser check shares: its --name value arguments and Debian's Chromium, headless, with
// WebGL through SwiftShader and none of the background traffic this closed network refuses.
import { chromium } from 'playwright-core';

/** `--name value` pairs of the command line as an object. */
export function cliArgs(argv = process.argv.slice(2)) {
  return Object.fromEntries(argv.reduce((acc, a, i, all) => {
    if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []));
}

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-angle=swiftshader', '--use-gl=angle', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'];

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

/** A headless browser (one context per page set). */
export function launchBrowser() {
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
}

/** A persistent context on `profile` (a fresh profile per run: the map stores its view). */
export function launchPersistent(profile, options = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath, headless: true, deviceScaleFactor: 1, locale: 'zh-CN', args: CHROMIUM_ARGS, ...options,
  });
}
