// Copy MapLibre GL JS from node_modules into app/static/vendor/maplibre-gl (committed).
// Run after changing the version in package.json:  cd web && npm ci && npm run build
// The ESM bundle loads its worker from the sibling maplibre-gl-worker.mjs (import.meta.url).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'node_modules', 'maplibre-gl');
const out = join(here, '..', 'app', 'static', 'vendor', 'maplibre-gl');
const version = JSON.parse(readFileSync(join(src, 'package.json'), 'utf8')).version;

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const f of ['maplibre-gl.mjs', 'maplibre-gl-worker.mjs']) {
  // Drop the source-map comment: the maps (8 MB) are not shipped.
  const js = readFileSync(join(src, 'dist', f), 'utf8').replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
  writeFileSync(join(out, f), js);
}
copyFileSync(join(src, 'dist', 'maplibre-gl.css'), join(out, 'maplibre-gl.css'));
copyFileSync(join(src, 'LICENSE.txt'), join(out, 'LICENSE.txt'));
writeFileSync(join(out, 'VERSION'), `maplibre-gl ${version} (npm), copied by web/build.mjs\n`);
console.log(`maplibre-gl ${version} -> ${out}`);
