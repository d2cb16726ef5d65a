// Drives the 3D viewer page (/3d) in the machine's headless Chromium (playwright-core, WebGL through
// SwiftShader) for tests/test_viewer3d.py and prints one JSON report on standard output:
// {errors: [console errors, page errors, HTTP errors], requests: [URLs not served by the page's own origin],
//  tilesets, terrain: whether /terrain is used, screenshot: path, pick: {collection, properties} | null}.
// usage: node viewer3d.mjs URL SCREENSHOT.png [LON LAT HEIGHT]  (with a position: look straight down on it
// from HEIGHT metres above the ellipsoid, then pick the object at the centre of the canvas)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openPage } from "./chromium.mjs";

const [url, screenshot, lon, lat, height] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node viewer3d.mjs URL SCREENSHOT.png [LON LAT HEIGHT]");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "cim-chromium-"));
const { context, page, out } = await openPage(profile, {
  viewport: { width: 1024, height: 768 }, webgl: true,
  headers: JSON.parse(process.env.CIM_TEST_HEADERS || "{}"),  // credentials (cim.auth)
});
const report = { errors: [], requests: [], tilesets: null, terrain: null, pick: null, screenshot };
try {
  await page.goto(url, { waitUntil: "load", timeout: 120000 });
  await page.waitForFunction(() => window.cimViewer !== undefined, null, { timeout: 60000 });
  Object.assign(report, await page.evaluate(() => window.cimViewer.ready));
  if (lon !== undefined) {
    report.pick = await page.evaluate(async ([x, y, h]) => {
      const { viewer, settled, pickAt } = window.cimViewer;
      viewer.camera.setView({
        destination: Cesium.Cartesian3.fromDegrees(x, y, h),
        orientation: { heading: 0, pitch: -Cesium.Math.PI_OVER_TWO, roll: 0 },
      });
      await settled();
      const canvas = viewer.scene.canvas;
      const result = pickAt(canvas.clientWidth / 2, canvas.clientHeight / 2);
      window.cimViewer.show(result);
      return result;
    }, [Number(lon), Number(lat), Number(height)]);
  }
  await page.screenshot({ path: screenshot });
} catch (err) {
  report.errors.push(`driver: ${err && err.stack ? err.stack : err}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
const origin = new URL(url).origin;
report.errors.unshift(...out.console, ...out.failed.map((f) => `HTTP ${f}`));
report.requests = out.requests.filter((u) => !u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:"));
process.stdout.write(JSON.stringify(report));
