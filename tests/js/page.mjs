// Opens a page of the service in the machine's headless Chromium and reports, as JSON on stdout: console
// errors, failed requests (>= 400 or network errors), the final DOM, and the value of a JavaScript
// expression once it is truthy (the page's own "ready" report).
//
// usage: node page.mjs URL USER_DATA_DIR HEADERS_JSON [WAIT_EXPRESSION]
//   HEADERS_JSON: extra HTTP headers sent with every request (credentials: {"X-API-Key": "..."}), or {}.
//   WAIT_EXPRESSION: e.g. "window.cimDashboard && window.cimDashboard.ready && window.cimDashboard";
//   without it, the page is reported after the load event and network idle.
import { openPage } from "./chromium.mjs";

const [url, userDataDir, headersJson, waitFor] = process.argv.slice(2);

const { context, page, out } = await openPage(userDataDir, {
  viewport: { width: 1280, height: 900 }, headers: JSON.parse(headersJson || "{}"),
});
try {
  await page.goto(url, { waitUntil: "networkidle", timeout: 60000 });
  if (waitFor) {
    const handle = await page.waitForFunction(waitFor, null, { timeout: 60000 });
    out.report = await handle.jsonValue();
  }
  out.dom = await page.content();
} catch (e) {
  out.error = String(e && e.stack || e);
} finally {
  await context.close();
}
process.stdout.write(JSON.stringify(out));
