// Drives the 3D viewer page (/3d) in the machine's headless Chromium (playwright-core, WebGL through
// SwiftShader) for tests/test_viewer3d.py and prints one JSON report on standard output:
// {errors: [console errors, page errors, HTTP errors], requests: [URLs not served by the page's own origin],
//  tilesets, terrain: whether /terrain is used, screenshot: path, pick: {collection, properties} | null}.
// usage: node viewer3d.mjs URL SCREENSHOT.png [LON LAT HEIGHT]  (with a position: look straight down on it
// from HEIGHT metres above the ellipsoid, then pick the object at the centre of the canvas)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot, lon, lat, height] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node viewer3d.mjs URL SCREENSHOT.png [LON LAT HEIGHT]");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "cim-chromium-"));
// a fresh profile (playwright passes it as --user-data-dir)
const browser = await chromium.launchPersistentContext(profile, {
  extraHTTPHeaders: JSON.parse(process.env.CIM_TEST_HEADERS || "{}"),  // credentials (cim.auth)
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  viewport: { width: 1024, height: 768 },
  args: ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    // WebGL without a GPU: ANGLE on SwiftShader (--disable-gpu would switch WebGL off)
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
});
const report = { errors: [], requests: [], tilesets: null, terrain: null, pick: null, screenshot };
try {
  const page = browser.pages()[0] || await browser.newPage();
  const origin = new URL(url).origin;
  page.on("console", (m) => { if (m.type() === "error") report.errors.push(m.text()); });
  page.on("pageerror", (e) => report.errors.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400) report.errors.push(`HTTP ${r.status()} ${r.url()}`); });
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith("data:") && !u.startsWith("blob:")) report.requests.push(u);
  });
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
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report));
