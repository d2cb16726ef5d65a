// The machine's headless Chromium as the browser tests start it (page.mjs, render-map.mjs, viewer3d.mjs): the flags the
// closed network needs, a fresh profile, and a report that collects console errors, failed requests (>= 400
// or network errors) and every URL asked for.
import { chromium } from "playwright-core";

const FLAGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
// WebGL without a GPU: ANGLE on SwiftShader (--disable-gpu would switch WebGL off)
const WEBGL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"];

// options: viewport, headers (extra HTTP headers on every request), webgl (a software WebGL, for the 3D
// viewer; otherwise the GPU is off), args (more Chromium flags)
export async function openPage(userDataDir, { viewport, headers = {}, webgl = false, args = [] } = {}) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport,
    extraHTTPHeaders: headers,
    args: [...FLAGS, ...(webgl ? WEBGL : ["--disable-gpu"]), ...args],
  });
  const out = { console: [], failed: [], requests: [] };
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => { if (m.type() === "error") out.console.push(m.text()); });
  page.on("pageerror", (e) => out.console.push(String(e)));
  page.on("requestfailed", (r) => out.failed.push(`${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => { if (r.status() >= 400) out.failed.push(`${r.url()} ${r.status()}`); });
  page.on("request", (r) => out.requests.push(r.url()));
  return { context, page, out };
}
