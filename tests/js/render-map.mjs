// Opens the /map page in the machine's headless Chromium (WebGL through SwiftShader) and reports, as JSON
// on stdout, what it drew: console errors, failed requests, the share of the canvas that differs from the
// background, and the features MapLibre's queryRenderedFeatures finds at given points.
//
// usage: node render-map.mjs URL USER_DATA_DIR SCREENSHOT.png POINTS_JSON
//   POINTS_JSON: [[lon, lat], ...]; the map is jumped to each point (centre, zoom 17, no pitch) and
//   queried at the pixel where the point lands.
import { openPage } from "./chromium.mjs";

const [url, userDataDir, screenshot, pointsJson] = process.argv.slice(2);
const points = JSON.parse(pointsJson);

const { context, page, out } = await openPage(userDataDir, {
  viewport: { width: 800, height: 600 }, args: ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
});
try {
  await page.goto(url, { waitUntil: "load" });
  const idle = () => page.evaluate(() => new Promise((resolve, reject) => {
    const map = window.cimMap;
    const timer = setTimeout(() => reject(new Error("map not idle after 60 s")), 60000);
    const done = () => { clearTimeout(timer); resolve(); };
    if (map.loaded() && map.areTilesLoaded()) done(); else map.once("idle", done);
  }));
  await page.waitForFunction(() => window.cimMap !== undefined, null, { timeout: 30000 });
  await idle();
  await page.screenshot({ path: screenshot });
  // the canvas itself: how much of it is not the background colour
  out.drawn = await page.evaluate(() => {
    const map = window.cimMap;
    const gl = map.getCanvas().getContext("webgl2") || map.getCanvas().getContext("webgl");
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const bg = map.getStyle().layers.find((l) => l.id === "background").paint["background-color"];
    const c = [parseInt(bg.slice(1, 3), 16), parseInt(bg.slice(3, 5), 16), parseInt(bg.slice(5, 7), 16)];
    let differs = 0;
    const colours = new Set();
    for (let i = 0; i < px.length; i += 4) {
      if (Math.abs(px[i] - c[0]) + Math.abs(px[i + 1] - c[1]) + Math.abs(px[i + 2] - c[2]) > 12) differs++;
      if (i % 64 === 0) colours.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
    }
    return { share: differs / (w * h), colours: colours.size };
  });
  out.queries = [];
  for (const [lon, lat] of points) {
    await page.evaluate(([lon, lat]) => window.cimMap.jumpTo({ center: [lon, lat], zoom: 17, pitch: 0, bearing: 0 }),
      [lon, lat]);
    await idle();
    out.queries.push(await page.evaluate(([lon, lat]) => {
      const map = window.cimMap;
      return map.queryRenderedFeatures(map.project([lon, lat]))
        .map((f) => ({ layer: f.layer.id, sourceLayer: f.sourceLayer, id: f.properties.id }));
    }, [lon, lat]));
  }
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(out));
