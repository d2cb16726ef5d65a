// The command dashboard (数字本溪指挥决策系统): one panel per indicator the client may read (/indicators lists
// only those), one stacked bar chart per measure (areas along the axis, categories stacked). Credentials: an
// API key typed here is kept for the browser session and sent as X-API-Key. Refreshed every minute (the
// server answers 304 while the data is unchanged).
// window.cimDashboard reports what was drawn (tests read it).
(function () {
  "use strict";
  const state = { ready: false, by: "district", charts: [], errors: [], indicators: [] };
  window.cimDashboard = state;
  const COLOURS = ["#4e9de0", "#f2a541", "#59c48e", "#e0605e", "#a883e0", "#47c6cf", "#d4c04a", "#e07fc0",
    "#8fa9c7", "#b5653a", "#6cbf4a", "#c94f7c"];
  const MEASURE_NAMES = {
    count: "数量", floor_area_m2: "建筑面积 (m²)", count_by_decade: "建成年代 (栋)",
    length_km_by_kind: "长度 (km) · 按种类", length_km_by_material: "长度 (km) · 按材质",
    length_km_by_decade: "长度 (km) · 按埋设年代", manholes_per_km: "检查井 / km", manholes: "检查井 (座)",
    pipeline_km: "管线 (km)", length_km: "长度 (km)", area_m2: "面积 (m²)", open_by_type: "未结案件 · 按类型",
    open_by_age: "未结案件 · 按案龄", coverage_pct: "道路覆盖率 (%)", covered_km: "覆盖里程 (km)",
  };
  const charts = [];

  function headers() {
    const key = sessionStorage.getItem("cimApiKey");
    return key ? { "X-API-Key": key } : {};
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: headers(), cache: "no-cache" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function pivot(rows, measure) {
    const mine = rows.filter((r) => r.measure === measure);
    const areas = [...new Set(mine.map((r) => r.area))].sort();
    const cats = [...new Set(mine.map((r) => r.category))].sort();
    const datasets = cats.map((c, i) => ({
      label: c, backgroundColor: COLOURS[i % COLOURS.length], stack: "s",
      data: areas.map((a) => { const r = mine.find((x) => x.area === a && x.category === c); return r ? r.value : 0; }),
    }));
    return { labels: areas, datasets };
  }

  async function downloadCsv(id) {
    const r = await fetch(`/indicators/${id}?f=csv&by=${state.by}`, { headers: headers() });
    const url = URL.createObjectURL(await r.blob());
    const a = el("a", { href: url, download: `${id}-${state.by}.csv` });
    document.body.appendChild(a); a.click(); a.remove();
  }

  function panel(ind, doc) {
    const col = el("div", { class: "col-xl-6", "data-indicator": ind.id });
    const p = el("div", { class: "panel" });
    p.appendChild(el("h2", {}, ind.title));
    const changed = doc.data_changed_at ? new Date(doc.data_changed_at).toLocaleString("zh-CN") : "—";
    const stamp = el("div", { class: "stamp" },
      `数据更新于 ${changed} · 计算于 ${new Date(doc.computed_at).toLocaleString("zh-CN")} · `);
    const csv = el("a", { href: "#", "data-csv": ind.id }, "CSV");
    csv.addEventListener("click", (e) => { e.preventDefault(); downloadCsv(ind.id); });
    stamp.appendChild(csv);
    p.appendChild(stamp);
    const row = el("div", { class: "row" });
    for (const measure of Object.keys(doc.measures)) {
      const data = pivot(doc.rows, measure);
      const box = el("div", { class: "col-md-6" });
      box.appendChild(el("h3", {}, MEASURE_NAMES[measure] || measure));
      const holder = el("div", { class: "chart" });
      const canvas = el("canvas", { "data-measure": measure });
      holder.appendChild(canvas);
      box.appendChild(holder);
      row.appendChild(box);
      charts.push({ ind: ind.id, measure, canvas, data });
    }
    p.appendChild(row);
    col.appendChild(p);
    return col;
  }

  function draw() {
    for (const c of charts) {
      c.chart = new Chart(c.canvas, {
        type: "bar", data: c.data,
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          plugins: { legend: { labels: { color: "#dbe6f3", boxWidth: 10 } } },
          scales: {
            x: { stacked: true, ticks: { color: "#b8cbe0" }, grid: { color: "#22384f" } },
            y: { stacked: true, ticks: { color: "#b8cbe0" }, grid: { color: "#22384f" } },
          },
        },
      });
    }
  }

  function inked(canvas) {
    // share of the canvas's pixels that are drawn (not transparent): a chart that rendered is not empty
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    const px = ctx.getImageData(0, 0, width, height).data;
    let n = 0;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
    return n / (width * height);
  }

  async function load() {
    const status = document.getElementById("status");
    state.ready = false;
    charts.splice(0).forEach((c) => c.chart && c.chart.destroy());
    const panels = document.getElementById("panels");
    panels.replaceChildren();
    state.errors = [];
    try {
      const list = await getJSON("/indicators");
      state.indicators = list.indicators.map((i) => i.id);
      const docs = await Promise.all(list.indicators.map((i) =>
        getJSON(`/indicators/${i.id}?f=json&by=${state.by}`).then((d) => [i, d])));
      for (const [ind, doc] of docs) panels.appendChild(panel(ind, doc));
      draw();
      state.charts = charts.map((c) => ({
        indicator: c.ind, measure: c.measure, labels: c.data.labels,
        datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })), inked: inked(c.canvas),
      }));
      status.textContent = sessionStorage.getItem("cimApiKey") ? "已登录" : "匿名访问 (公开指标)";
    } catch (e) {
      state.errors.push(String(e));
      status.textContent = `加载失败: ${e.message}`;
    }
    state.ready = true;
  }

  document.getElementById("by").addEventListener("change", (e) => { state.by = e.target.value; load(); });
  document.getElementById("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = document.getElementById("key").value.trim();
    if (key) sessionStorage.setItem("cimApiKey", key); else sessionStorage.removeItem("cimApiKey");
    load();
  });
  load();
  setInterval(load, 60000);
})();
