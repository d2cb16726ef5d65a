// The Benxi CIM 3D viewer: our 3D Tiles (on demand from /collections/{id}/3dtiles/{level}/tileset.json) in
// CesiumJS, offline: no ion token, no imagery, geocoder or base layer picker; our quantized-mesh terrain
// (/terrain, the DEM with the same height conversion as the tiles), or the ellipsoid where there is none.
// Clicking an object lists its properties from the tile's property table (EXT_structural_metadata).
// window.cimViewer exposes the viewer, the tilesets and `ready` (a promise: every tileset loaded, with the
// names of the tilesets and whether our terrain is used) to tests.
(function () {
  "use strict";
  const cfg = window.CIM_VIEWER;
  const status = document.getElementById("status");
  const viewer = new Cesium.Viewer("viewer", {
    baseLayer: false,
    baseLayerPicker: false,
    geocoder: false,
    timeline: false,
    animation: false,
    sceneModePicker: false,
    navigationHelpButton: false,
    fullscreenButton: false,
    homeButton: true,
    infoBox: false,
    selectionIndicator: false,
    terrainProvider: new Cesium.EllipsoidTerrainProvider(),  // until ours has loaded (below)
  });
  viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString("#8a9a7b");
  // pipes lie under the ground: let them show through it
  viewer.scene.globe.depthTestAgainstTerrain = false;
  viewer.scene.globe.translucency.enabled = true;
  viewer.scene.globe.translucency.frontFaceAlpha = 0.6;

  const tilesetUrl = (collection, level) => `${cfg.baseUrl}/collections/${collection}/3dtiles/${level}/tileset.json`;
  const seeThrough = new Cesium.Cesium3DTileStyle({ color: "color('white', 0.35)" });
  const tilesets = {};

  async function add(name, collection, level) {
    const tileset = await Cesium.Cesium3DTileset.fromUrl(tilesetUrl(collection, level), { maximumScreenSpaceError: 8 });
    tileset.cimCollection = collection;
    tileset.tileFailed.addEventListener((e) => console.error(`tile failed: ${e.url}: ${e.message}`));
    viewer.scene.primitives.add(tileset);
    tilesets[name] = tileset;
    return tileset;
  }

  // Resolves once every tileset has loaded what the current view needs: nothing requested or processing,
  // every tileset reporting tilesLoaded, over several consecutive frames (right after a camera move a
  // tileset reports loaded before it has even asked for its new tiles).
  function settled(timeoutMs = 120000) {
    const started = performance.now();
    let calm = 0;
    return new Promise((resolve, reject) => {
      const off = viewer.scene.postRender.addEventListener(() => {
        const all = Object.values(tilesets);
        const idle = all.every((t) => t.tilesLoaded && t.statistics.numberOfPendingRequests === 0 &&
          t.statistics.numberOfTilesProcessing === 0);
        calm = idle ? calm + 1 : 0;
        if (calm >= 10) { off(); resolve(); }
        else if (performance.now() - started > timeoutMs) { off(); reject(new Error("tiles did not finish loading")); }
      });
    });
  }

  async function setInteriorLevel(level) {
    const old = tilesets.interior;
    const show = document.getElementById("show-interior").checked;
    const tileset = await add("interior", "building-components", level);
    tileset.show = show;
    if (old) viewer.scene.primitives.remove(old);
  }

  function bind(id, fn) { document.getElementById(id).addEventListener("change", (e) => fn(e.target)); }
  bind("show-buildings", (el) => { if (tilesets.buildings) tilesets.buildings.show = el.checked; });
  bind("show-interior", (el) => { if (tilesets.interior) tilesets.interior.show = el.checked; });
  bind("show-network", (el) => {
    for (const k of ["pipelines", "nodes"]) if (tilesets[k]) tilesets[k].show = el.checked;
  });
  bind("see-through", (el) => { if (tilesets.buildings) tilesets.buildings.style = el.checked ? seeThrough : undefined; });
  bind("interior-level", (el) => { setInteriorLevel(el.value); });

  // picking: the feature's properties, straight from its property table
  const table = document.querySelector("#picked tbody");
  const caption = document.querySelector("#picked caption");
  function properties(feature) {
    const out = {};
    for (const id of feature.getPropertyIds()) out[id] = feature.getProperty(id);
    return out;
  }
  function pickAt(x, y) {
    const picked = viewer.scene.pick(new Cesium.Cartesian2(x, y));
    if (!(picked instanceof Cesium.Cesium3DTileFeature)) return null;
    return { collection: picked.tileset.cimCollection, properties: properties(picked) };
  }
  function show(result) {
    table.replaceChildren();
    if (!result) { caption.textContent = "Click an object"; return; }
    caption.textContent = `${result.collection}: ${result.properties.uid}`;
    for (const [k, v] of Object.entries(result.properties)) {
      if (v === undefined || v === null || v === "") continue;
      const tr = document.createElement("tr");
      for (const text of [k, String(v)]) { const td = document.createElement("td"); td.textContent = text; tr.append(td); }
      table.append(tr);
    }
  }
  new Cesium.ScreenSpaceEventHandler(viewer.scene.canvas).setInputAction(
    (e) => show(pickAt(e.position.x, e.position.y)), Cesium.ScreenSpaceEventType.LEFT_CLICK);

  async function useTerrain() {
    try {
      viewer.terrainProvider = await Cesium.CesiumTerrainProvider.fromUrl(`${cfg.baseUrl}/terrain`,
        { requestVertexNormals: true });
      return true;
    } catch (err) {
      console.warn(`no terrain at ${cfg.baseUrl}/terrain (${err}): the ellipsoid instead`);
      return false;
    }
  }

  const ready = (async () => {
    const terrain = useTerrain();
    // the pipe network only for clients who may read it (cim.auth): /collections lists what this client may
    const readable = await fetch(`${cfg.baseUrl}/collections?f=json`)
      .then((r) => r.json()).then((d) => new Set(d.collections.map((c) => c.id))).catch(() => new Set());
    const results = await Promise.allSettled([
      add("buildings", "buildings", 3),
      setInteriorLevel(document.getElementById("interior-level").value),
      ...(readable.has("pipelines") ? [add("pipelines", "pipelines", 3)] : []),
      ...(readable.has("pipe-nodes") ? [add("nodes", "pipe-nodes", 3)] : []),
    ]);
    const withTerrain = await terrain;
    const failed = results.filter((r) => r.status === "rejected");
    for (const f of failed) console.error(`tileset failed to load: ${f.reason}`);
    if (tilesets.buildings) await viewer.zoomTo(tilesets.buildings);
    await settled();
    status.textContent = failed.length ? `${failed.length} tileset(s) failed to load` :
      `${Object.keys(tilesets).length} tilesets loaded`;
    return { tilesets: Object.keys(tilesets), terrain: withTerrain };
  })();

  window.cimViewer = { viewer, tilesets, ready, settled, pickAt, show };
})();
