// mcsa review: one page, plain JavaScript, every view has its own URL (shareable). Data from the JSON API (/api).
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const params = () => new URLSearchParams(location.search);
const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
const ACTION_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#808000", "#000075"];
let RUNS = [];
let RUN = null;
const actionColour = (name) => {
  const names = (RUN && RUN.action_names && RUN.action_names.length) ? RUN.action_names : ["standing", "walking", "running"];
  let i = names.indexOf(name);
  if (i < 0) { i = 0; for (const ch of String(name)) i = (i * 31 + ch.charCodeAt(0)) >>> 0; }
  return ACTION_COLOURS[i % ACTION_COLOURS.length];
};

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const detail = body && body.detail !== undefined ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : r.statusText;
    throw new Error(`${detail} (HTTP ${r.status})`);
  }
  return body;
}
function showError(err) { const e = $("#error"); e.textContent = "Error: " + (err && err.message ? err.message : String(err)); e.hidden = false; }
function clearError() { const e = $("#error"); e.hidden = true; e.textContent = ""; }

// ---- times: live cameras carry unix seconds (shown in local time with the zone); files carry video seconds --------
function fmtWall(unix) { return unix == null ? "-" : new Date(unix * 1000).toLocaleString(undefined, { timeZoneName: "short" }); }
function fmtClock(s) { const t = Math.round(s * 10) / 10; const m = Math.floor(t / 60); return `${m}:${(t - 60 * m).toFixed(1).padStart(4, "0")}`; }
function fmtTime(ts) { return ts == null ? "-" : (ts > 1e9 ? fmtWall(ts) : fmtClock(ts)); }
function fmtDur(s) { return s == null ? "-" : (s >= 90 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`); }
function parseTimeInput(text) {
  if (!text) return null;
  if (/^-?\d+(\.\d+)?$/.test(text.trim())) return parseFloat(text);
  const parts = text.trim().match(/^(\d+):(\d+(\.\d+)?)$/);
  if (parts) return parseInt(parts[1], 10) * 60 + parseFloat(parts[2]);
  const d = new Date(text);
  if (isNaN(d.getTime())) throw new Error(`time ${text}: use seconds, m:ss or a date-time`);
  return d.getTime() / 1000;
}

function link(path, extra) {
  const q = new URLSearchParams(extra || {});
  if (RUN) q.set("run", RUN.id);
  return `${path}?${q.toString()}`;
}
function navigate(url) { history.pushState(null, "", url); route(); }
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || a.target || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/docs")) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);

async function loadRuns() {
  RUNS = await api("/api/runs");
  const sel = $("#run-select");
  sel.innerHTML = RUNS.map((r) => `<option value="${r.id}">${r.id} · ${esc(r.status)} · ${esc(fmtWall(r.started_at))}</option>`).join("");
  sel.onchange = () => { const q = params(); q.set("run", sel.value); q.delete("page"); navigate(`${location.pathname}?${q}`); };
}
async function selectRun() {
  const wanted = params().get("run") || (RUNS[0] && RUNS[0].id);
  if (wanted == null) throw new Error("the store holds no runs yet: run the pipeline first");
  RUN = await api(`/api/runs/${encodeURIComponent(wanted)}`);
  $("#run-select").value = String(RUN.id);
  const live = RUN.cameras.some((c) => (c.source || "").match(/^(rtsp|http|udp|rtmp)s?:|^\d+$/));
  $("#clock-note").textContent = live ? `times: local (${ZONE})` : `times: video time m:ss from the start of the recording; run started ${fmtWall(RUN.started_at)}`;
}

function cardHtml(c, runId) {
  const thumb = c.thumbnail
    ? `<img src="/api/runs/${runId}/thumbnails/${encodeURIComponent(c.thumbnail.camera_id)}/${c.thumbnail.track_id}.jpg" alt="best view of identity ${esc(c.label)}" loading="lazy">`
    : `<div class="nothumb">no thumbnail</div>`;
  const acts = Object.entries(c.actions || {}).map(([a, n]) => `<span class="chip" style="border-color:${actionColour(a)}">${esc(a)} ${n}</span>`).join(" ");
  const title = c.global_id != null ? `Identity ${esc(c.label)}` : `Track ${esc(c.label)} (not linked)`;
  return `<a class="card" href="${link("/identity/" + encodeURIComponent(c.label))}" data-label="${esc(c.label)}" data-cameras="${esc(c.cameras.join(","))}">
    ${thumb}<div class="card-body"><b>${title}</b>
    <div>${c.cameras.map((x) => `<span class="cam">${esc(x)}</span>`).join(" ")} · ${c.n_tracks} track${c.n_tracks === 1 ? "" : "s"}</div>
    <div class="muted">${esc(fmtTime(c.first_ts))} – ${esc(fmtTime(c.last_ts))}</div>
    <div class="muted">on camera ${esc(fmtDur(c.seconds))}</div><div>${acts}</div></div></a>`;
}

// ---- pages --------------------------------------------------------------------------------------------------------
async function runsPage(main) {
  const cams = RUN.cameras.map((c) => `<tr data-camera="${esc(c.camera_id)}"><td>${esc(c.camera_id)}</td><td class="st-${esc(c.status)}">${esc(c.status)}</td>
    <td>${c.frames ?? "-"}</td><td>${c.fps ? c.fps.toFixed(1) : "-"}</td><td>${c.width && c.height ? c.width + "×" + c.height : "-"}</td>
    <td>${c.dropped ?? 0}</td><td>${c.tracks}</td><td class="src">${esc(c.source)}</td><td class="err">${esc(c.error || "")}</td></tr>`).join("");
  const runs = RUNS.map((r) => `<tr><td><a href="/runs?run=${r.id}">${r.id}</a></td><td class="st-${esc(r.status)}">${esc(r.status)}</td>
    <td>${esc(fmtWall(r.started_at))}</td><td>${esc(fmtWall(r.ended_at))}</td><td>${r.cameras}</td><td>${r.frames}</td><td class="src">${esc(r.output_dir || "")}</td></tr>`).join("");
  main.innerHTML = `<h1>Run ${RUN.id} <span class="st-${esc(RUN.status)}">${esc(RUN.status)}</span></h1>
    <p class="muted">started ${esc(fmtWall(RUN.started_at))}, ended ${esc(fmtWall(RUN.ended_at))}${RUN.action_names.length ? " · actions: " + RUN.action_names.map(esc).join(", ") : ""}</p>
    <table id="cameras"><thead><tr><th>camera</th><th>status</th><th>frames</th><th>fps</th><th>size</th><th>dropped</th><th>tracks</th><th>source</th><th>error</th></tr></thead><tbody>${cams}</tbody></table>
    <h2>All runs</h2><table><thead><tr><th>run</th><th>status</th><th>started</th><th>ended</th><th>cameras</th><th>frames</th><th>output</th></tr></thead><tbody>${runs}</tbody></table>`;
}

async function identitiesPage(main) {
  const q = params();
  const sort = q.get("sort") || "first_seen";
  const page = parseInt(q.get("page") || "1", 10);
  const multi = q.get("min_cameras") === "2";
  const camera = q.get("camera") || "";
  const apiQ = new URLSearchParams({ sort, page, per_page: 48, min_cameras: multi ? 2 : 1 });
  if (camera) apiQ.set("camera", camera);
  const data = await api(`/api/runs/${RUN.id}/identities?${apiQ}`);
  const sorts = { first_seen: "first seen", last_seen: "last seen", time_on_camera: "time on camera", cameras: "cameras", tracks: "tracks", identity: "identity" };
  const camOpts = [`<option value="">all cameras</option>`].concat(RUN.cameras.map((c) => `<option ${c.camera_id === camera ? "selected" : ""}>${esc(c.camera_id)}</option>`)).join("");
  main.innerHTML = `<h1>Identities <span class="muted">${data.total} in run ${data.run_id}${data.status === "running" ? " (still recording)" : ""}</span></h1>
    <form id="id-filter" class="filters">sort <select name="sort">${Object.entries(sorts).map(([k, v]) => `<option value="${k}" ${k === sort ? "selected" : ""}>${v}</option>`).join("")}</select>
    <select name="camera">${camOpts}</select>
    <label><input type="checkbox" name="min_cameras" value="2" ${multi ? "checked" : ""}> seen by 2+ cameras</label></form>
    <div id="grid" class="grid">${data.items.map((c) => cardHtml(c, data.run_id)).join("") || '<p class="muted">No identities match.</p>'}</div>
    ${pager(data)}`;
  $("#id-filter").onchange = (ev) => {
    const f = new FormData(ev.currentTarget);
    const nq = new URLSearchParams({ run: RUN.id, sort: f.get("sort") });
    if (f.get("camera")) nq.set("camera", f.get("camera"));
    if (f.get("min_cameras")) nq.set("min_cameras", "2");
    navigate(`/identities?${nq}`);
  };
}

function pager(data) {
  if (data.pages <= 1) return "";
  const at = (p) => { const q = params(); q.set("page", p); return `${location.pathname}?${q}`; };
  return `<nav class="pager">${data.page > 1 ? `<a href="${at(data.page - 1)}">‹ previous</a>` : ""}
    <span>page ${data.page} of ${data.pages}</span>${data.page < data.pages ? `<a href="${at(data.page + 1)}">next ›</a>` : ""}</nav>`;
}

function timelineSvg(d, opts) {
  opts = opts || {};
  const cams = d.cameras;
  let t0 = d.first_ts, t1 = d.last_ts;
  if (!(t1 > t0)) t1 = t0 + 1;
  const W = opts.width || 960, left = 70, right = 12, laneH = opts.laneH || 30, top = 6, axis = 22;
  const H = top + cams.length * laneH + axis;
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
  let s = `<svg class="timeline" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="timeline of identity ${esc(d.label)}">`;
  cams.forEach((cam, i) => {
    const y = top + i * laneH;
    s += `<g class="lane" data-camera="${esc(cam)}"><text x="4" y="${y + laneH / 2 + 4}">${esc(cam)}</text>
      <rect class="lane-bg" x="${left}" y="${y + 2}" width="${W - left - right}" height="${laneH - 4}"></rect>`;
    for (const t of d.tracks.filter((t) => t.camera_id === cam)) {
      const w = Math.max(2, x(t.last_ts) - x(t.first_ts));
      s += `<rect class="span" x="${x(t.first_ts)}" y="${y + 4}" width="${w}" height="${laneH - 8}"><title>${esc(cam)} track ${t.track_id}: ${esc(fmtTime(t.first_ts))} – ${esc(fmtTime(t.last_ts))} (${esc(fmtDur(t.last_ts - t.first_ts))}), ${t.n_boxes} boxes</title></rect>`;
    }
    for (const e of (d.events || []).filter((e) => e.camera_id === cam)) {
      const w = Math.max(2, x(e.end_ts) - x(e.start_ts));
      s += `<rect class="ev" x="${x(e.start_ts)}" y="${y + laneH / 2 - 4}" width="${w}" height="8" fill="${actionColour(e.action)}"><title>${esc(e.action)} (${esc(e.source)}): ${esc(fmtTime(e.start_ts))} – ${esc(fmtTime(e.end_ts))} (${esc(fmtDur(e.end_ts - e.start_ts))}), peak ${e.peak_conf.toFixed(2)}</title></rect>`;
    }
    s += `</g>`;
  });
  const yA = top + cams.length * laneH;
  for (let k = 0; k <= 4; k++) {
    const t = t0 + (k / 4) * (t1 - t0);
    s += `<line class="tick" x1="${x(t)}" x2="${x(t)}" y1="${top}" y2="${yA + 4}"></line><text class="ticklabel" x="${x(t)}" y="${yA + 16}" text-anchor="${k === 0 ? "start" : k === 4 ? "end" : "middle"}">${esc(fmtTime(t))}</text>`;
  }
  return s + `</svg>`;
}

// a floor plan in metres: 1 m grid (every 5 m darker, labelled) over [x0, x1] x [y0, y1]; X(), Y() map metres to
// the SVG's units, M() maps SVG units back to metres (for clicks)
function floorFrame(x0, x1, y0, y1, cls, label, size) {
  const pad = 30, scale = (size || 520) / Math.max(x1 - x0, y1 - y0, 1);
  const W = (x1 - x0) * scale + 2 * pad, H = (y1 - y0) * scale + 2 * pad;
  const X = (x) => (pad + (x - x0) * scale).toFixed(1), Y = (y) => (pad + (y - y0) * scale).toFixed(1);
  const M = (sx, sy) => [x0 + (sx - pad) / scale, y0 + (sy - pad) / scale];
  const width = Math.min(W, (size || 520) + 120);
  let s = `<svg class="${cls}" viewBox="0 0 ${W.toFixed(0)} ${H.toFixed(0)}" width="${width.toFixed(0)}" role="img" aria-label="${esc(label)}">`;
  // every 5th metre labelled, and the first line when no labelled one is within 2 m of it
  const labelled = (m, m0) => m % 5 === 0 || (m === m0 && ((m % 5) + 5) % 5 <= 2);
  for (let m = x0; m <= x1; m++) s += `<line class="grid${m % 5 === 0 ? " major" : ""}" x1="${X(m)}" x2="${X(m)}" y1="${Y(y0)}" y2="${Y(y1)}"></line>` + (labelled(m, x0) ? `<text class="ticklabel" x="${X(m)}" y="${(H - 10).toFixed(0)}" text-anchor="middle">${m} m</text>` : "");
  for (let m = y0; m <= y1; m++) s += `<line class="grid${m % 5 === 0 ? " major" : ""}" x1="${X(x0)}" x2="${X(x1)}" y1="${Y(m)}" y2="${Y(m)}"></line>` + (labelled(m, y0) ? `<text class="ticklabel" x="4" y="${Y(m)}">${m} m</text>` : "");
  return { s, X, Y, M, width };
}

// a floor position placed less surely than this (sigma, m) is approximate: dashed, and not counted in metres walked
// (the run's `reliable_sigma_m`, core/geometry.py RELIABLE_SIGMA_M; unknown sigma, a store before schema v5, counts
// as placed)
const reliableSigma = () => (RUN && RUN.reliable_sigma_m) || 1.0;
const approximate = (p) => p[3] != null && p[3] > reliableSigma();

// polylines of a path [[t, x, y, sigma], ...], broken where it was not placed for more than 2 s; approximate
// stretches (class "approx") are drawn dashed, joined to the placed ones around them
function pathLines(pts, X, Y, attrs) {
  let s = "", seg = [], approx = false;
  const flush = () => { if (seg.length > 1) s += `<polyline class="floor-path${approx ? " approx" : ""}" ${attrs || ""} points="${seg.join(" ")}"></polyline>`; seg = []; };
  pts.forEach((p, i) => {
    const xy = `${X(p[1])},${Y(p[2])}`;
    if (i && p[0] - pts[i - 1][0] > 2) flush();
    else if (i && approximate(p) !== approx) { const last = seg[seg.length - 1]; flush(); if (last) seg.push(last); }
    approx = approximate(p);
    seg.push(xy);
  });
  flush();
  return s;
}

function floorSvg(d) {
  const pts = d.ground || [];
  if (!pts.length) return "";
  const xs = pts.map((p) => p[1]), ys = pts.map((p) => p[2]);
  const f = floorFrame(Math.floor(Math.min(...xs) - 1), Math.ceil(Math.max(...xs) + 1), Math.floor(Math.min(...ys) - 1), Math.ceil(Math.max(...ys) + 1),
    "floor", `where identity ${d.label} walked on the floor`);
  const { X, Y } = f;
  let s = f.s + pathLines(pts, X, Y);
  const a = pts[0], b = pts[pts.length - 1];
  s += `<circle class="start" cx="${X(a[1])}" cy="${Y(a[2])}" r="5"><title>first placed ${esc(fmtTime(a[0]))} at (${a[1].toFixed(2)}, ${a[2].toFixed(2)}) m</title></circle>`;
  s += `<circle class="end" cx="${X(b[1])}" cy="${Y(b[2])}" r="5"><title>last placed ${esc(fmtTime(b[0]))} at (${b[1].toFixed(2)}, ${b[2].toFixed(2)}) m</title></circle>`;
  return s + `</svg>`;
}

const identColour = (id) => ACTION_COLOURS[((id % ACTION_COLOURS.length) + ACTION_COLOURS.length) % ACTION_COLOURS.length];

// the whole run on the floor: every placed identity's path (a link to its page), and who came near a clicked point
async function floorPage(main) {
  const q = params();
  const apiQ = new URLSearchParams();
  for (const k of ["since", "until"]) if (q.get(k)) apiQ.set(k, parseTimeInput(q.get(k)));
  for (const k of ["near", "radius"]) if (q.get(k)) apiQ.set(k, q.get(k));
  const d = await api(`/api/runs/${RUN.id}/floor?${apiQ}`);
  const form = `<form id="floor-filter" class="filters">
      <input name="since" placeholder="from (s, m:ss or date)" value="${esc(q.get("since") || "")}">
      <input name="until" placeholder="to" value="${esc(q.get("until") || "")}">
      <input name="near" placeholder="near X,Y m (or click the map)" size="24" value="${esc(q.get("near") || "")}">
      <label>within <input name="radius" size="4" value="${esc(q.get("radius") || "1")}"> m</label>
      <button>Show</button></form>`;
  if (!d.placed || !d.people.length) {
    main.innerHTML = `<h1>Floor</h1>${d.placed ? form : ""}<p class="muted" id="floor-none">${d.placed ? "Nobody was placed on the floor in this time window." : "This run has no floor positions: they come from ground-plane fusion (association.mode: fused, with the cameras' homographies); see the README's fused mode."}</p>`;
    bindFloorForm();
    return;
  }
  const [ex0, ex1, ey0, ey1] = d.extent;
  const f = floorFrame(Math.floor(ex0 - 1), Math.ceil(ex1 + 1), Math.floor(ey0 - 1), Math.ceil(ey1 + 1), "floor floormap", "where everyone walked on the floor", 680);
  const { X, Y } = f;
  let s = f.s, dots = "";
  for (const p of d.people) {
    const who = p.label != null ? p.label : String(p.identity);
    const title = `<title>identity ${esc(who)}: ${esc(fmtTime(p.first_ts))} – ${esc(fmtTime(p.last_ts))}, ${p.walked_m} m walked</title>`;
    const lines = pathLines(p.path, X, Y, `style="stroke:${identColour(p.identity)}"`);
    s += p.label != null ? `<a href="${link("/identity/" + encodeURIComponent(p.label))}" data-label="${esc(p.label)}">${title}${lines}</a>` : `<g>${title}${lines}</g>`;
    const a = p.path[0];
    dots += `<circle class="start" data-label="${esc(who)}" cx="${X(a[1])}" cy="${Y(a[2])}" r="4"><title>identity ${esc(who)} first placed ${esc(fmtTime(a[0]))}</title></circle>`;
  }
  s += dots;  // above every path: a dot is where to click to ask who else passed there
  if (d.near) {
    const [nx, ny] = q.get("near").split(",").map(parseFloat);
    s += `<circle class="near" cx="${X(nx)}" cy="${Y(ny)}" r="${(parseFloat(X(nx + d.radius)) - parseFloat(X(nx))).toFixed(1)}"></circle>`;
  }
  s += "</svg>";
  const rows = d.people.map((p) => {
    const who = p.label != null ? `<a href="${link("/identity/" + encodeURIComponent(p.label))}">${esc(p.label)}</a>` : esc(p.identity);
    const approx = p.approximate ? ` <span class="muted" title="positions placed less surely than ${reliableSigma()} m: not counted in metres walked">${100 * p.approximate / p.positions < 1 ? "<1" : Math.round(100 * p.approximate / p.positions)}% approx.</span>` : "";
    return `<tr><td><span class="swatch" style="background:${identColour(p.identity)}"></span>${who}${approx}</td><td>${esc(fmtTime(p.first_ts))}</td><td>${esc(fmtTime(p.last_ts))}</td><td>${p.walked_m.toFixed(1)}</td><td>${p.mean_speed_mps != null ? p.mean_speed_mps.toFixed(2) : "-"}</td></tr>`;
  }).join("");
  const near = !d.near ? "" : `<h2>Who came within ${d.radius} m of (${esc(q.get("near"))}) m</h2>` + (d.near.length
    ? `<table id="near"><thead><tr><th>identity</th><th>closest</th><th>when</th></tr></thead><tbody>${d.near.map((n) => `<tr data-label="${esc(n.label != null ? n.label : n.identity)}"><td>${n.label != null ? `<a href="${link("/identity/" + encodeURIComponent(n.label))}">${esc(n.label)}</a>` : esc(n.identity)}</td><td>${n.closest_m.toFixed(2)} m</td><td>${esc(fmtTime(n.closest_ts))}</td></tr>`).join("")}</tbody></table>`
    : `<p class="muted" id="near-none">Nobody came that close.</p>`);
  main.innerHTML = `<h1>Floor <span class="muted">${d.people.length} people placed</span></h1>${form}
    <div class="floorwrap"><div style="max-width:${Math.max(f.width, 360).toFixed(0)}px">${s}<p class="muted">ground-plane fusion, metres in the cameras' ground frame; a path links to its identity, a click elsewhere asks who came near that point; dots: first placed; dashed: approximate (placed less surely than ${reliableSigma()} m, far from the cameras; may run off the map, not counted in metres walked or "who came near")</p></div>
    <div>${near}<h2>Everyone placed</h2><table id="placed"><thead><tr><th>identity</th><th>first placed</th><th>last</th><th>m walked</th><th>m/s</th></tr></thead><tbody>${rows}</tbody></table></div></div>`;
  bindFloorForm();
  const svg = $("svg.floormap");
  svg.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return;
    const pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const loc = pt.matrixTransform(svg.getScreenCTM().inverse());
    const [mx, my] = f.M(loc.x, loc.y);
    const nq = params();
    nq.set("run", RUN.id); nq.set("near", `${mx.toFixed(2)},${my.toFixed(2)}`);
    navigate(`/floor?${nq}`);
  });
}

function bindFloorForm() {
  const form = $("#floor-filter");
  if (!form) return;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const nq = new URLSearchParams({ run: RUN.id });
    for (const [k, v] of new FormData(ev.currentTarget).entries()) if (v) nq.set(k, v);
    try { for (const k of ["since", "until"]) if (nq.get(k)) parseTimeInput(nq.get(k)); } catch (err) { showError(err); return; }
    navigate(`/floor?${nq}`);
  };
}

async function identityPage(main, label) {
  const d = await api(`/api/runs/${RUN.id}/identities/${encodeURIComponent(label)}`);
  const actions = [...new Set(d.events.map((e) => e.action))];
  const legend = actions.map((a) => `<span class="chip" style="background:${actionColour(a)};color:#fff">${esc(a)}</span>`).join(" ");
  const thumbs = d.cameras.map((cam) => {
    const ts = d.tracks.filter((t) => t.camera_id === cam);
    const imgs = ts.filter((t) => t.thumbnail).map((t) => `<figure><img src="/api/runs/${d.run_id}/thumbnails/${encodeURIComponent(cam)}/${t.track_id}.jpg" alt="${esc(cam)} track ${t.track_id}" loading="lazy">
      <figcaption>${esc(cam)}:${t.track_id}<br><a class="similar" href="${link("/search", { camera: cam, track: t.track_id })}">similar</a></figcaption></figure>`).join("");
    return `<div class="thumbrow"><h3>${esc(cam)}</h3>${imgs || `<span class="muted">no thumbnails (${ts.length} tracks)</span>`}</div>`;
  }).join("");
  const links = d.links.map((l) => `<tr class="${l.previous_id != null ? "relink" : ""}"><td>${esc(fmtTime(l.ts))}</td><td>${esc(l.mode)}</td><td>${esc(l.camera_id)}:${l.track_id}</td>
    <td>${l.previous_id != null ? `${l.previous_id} → ` : ""}${l.global_id}</td><td>${esc(l.reason)}</td><td>${l.score != null ? l.score.toFixed(3) : "-"}</td></tr>`).join("");
  const title = d.global_id != null ? `Identity ${esc(d.label)}` : `Track ${esc(d.label)} (not linked to a global identity)`;
  main.innerHTML = `<h1>${title}</h1>
    <p>${d.cameras.map((c) => `<span class="cam">${esc(c)}</span>`).join(" ")} · ${d.n_tracks} tracks · ${esc(fmtTime(d.first_ts))} – ${esc(fmtTime(d.last_ts))} · on camera ${esc(fmtDur(d.seconds))}
    · <a href="${link("/events", { identity: d.label })}">events</a></p>
    <h2>Timeline across cameras</h2><div id="timeline">${timelineSvg(d)}</div><div class="legend"><span class="chip span-chip">seen</span> ${legend}</div>
    ${d.ground && d.ground.length ? `<h2>On the floor</h2><div id="floor">${floorSvg(d)}</div><p class="muted">ground-plane fusion: ${d.ground.length} positions, metres in the cameras' ground frame; green: first placed, red: last${d.ground.some(approximate) ? `; dashed: approximate (${d.ground.filter(approximate).length} positions placed less surely than ${reliableSigma()} m, far from the cameras)` : ""}</p>` : ""}
    <h2>Best views per camera</h2><div id="thumbs">${thumbs}</div>
    <h2>Action events</h2>${eventsTable(d.events)}
    <h2>Link history</h2>${links ? `<table id="links"><thead><tr><th>time</th><th>mode</th><th>track</th><th>global id</th><th>reason</th><th>score</th></tr></thead><tbody>${links}</tbody></table>` : '<p class="muted">No links recorded (association off).</p>'}`;
}

function eventsTable(rows) {
  if (!rows.length) return '<p class="muted">No action events.</p>';
  return `<table class="events"><thead><tr><th>start</th><th>end</th><th>duration</th><th>camera</th><th>identity</th><th>action</th><th>source</th><th>peak</th><th>mean</th></tr></thead><tbody>${rows.map((e) => {
    const ident = e.identity || (e.global_id != null ? String(e.global_id) : `${e.camera_id}:${e.track_id}`);
    return `<tr><td>${esc(fmtTime(e.start_ts))}</td><td>${esc(fmtTime(e.end_ts))}</td><td>${esc(fmtDur(e.end_ts - e.start_ts))}</td><td>${esc(e.camera_id)}</td>
    <td><a href="${link("/identity/" + encodeURIComponent(ident))}">${esc(ident)}</a></td><td><span class="chip" style="border-color:${actionColour(e.action)}">${esc(e.action)}</span></td>
    <td>${esc(e.source)}</td><td>${e.peak_conf.toFixed(2)}</td><td>${e.mean_conf.toFixed(2)}</td></tr>`;
  }).join("")}</tbody></table>`;
}

async function eventsPage(main) {
  const q = params();
  const apiQ = new URLSearchParams({ page: q.get("page") || "1" });
  for (const k of ["camera", "action", "identity"]) if (q.get(k)) apiQ.set(k, q.get(k));
  for (const k of ["since", "until"]) if (q.get(k)) apiQ.set(k, parseTimeInput(q.get(k)));
  const data = await api(`/api/runs/${RUN.id}/events?${apiQ}`);
  const opt = (v, cur) => `<option ${v === cur ? "selected" : ""}>${esc(v)}</option>`;
  main.innerHTML = `<h1>Events <span class="muted">${data.total} matching</span></h1>
    <form id="ev-filter" class="filters">
      <select name="camera"><option value="">all cameras</option>${RUN.cameras.map((c) => opt(c.camera_id, q.get("camera"))).join("")}</select>
      <select name="action"><option value="">all actions</option>${data.actions.map((a) => opt(a, q.get("action"))).join("")}</select>
      <input name="identity" placeholder="identity" size="8" value="${esc(q.get("identity") || "")}">
      <input name="since" placeholder="from (s, m:ss or date)" value="${esc(q.get("since") || "")}">
      <input name="until" placeholder="to" value="${esc(q.get("until") || "")}">
      <button>Filter</button></form>
    ${eventsTable(data.items)}${pager(data)}`;
  $("#ev-filter").onsubmit = (ev) => {
    ev.preventDefault();
    const nq = new URLSearchParams({ run: RUN.id });
    for (const [k, v] of new FormData(ev.currentTarget).entries()) if (v) nq.set(k, v);
    try { for (const k of ["since", "until"]) if (nq.get(k)) parseTimeInput(nq.get(k)); } catch (err) { showError(err); return; }
    navigate(`/events?${nq}`);
  };
}

async function searchPage(main) {
  const q = params();
  main.innerHTML = `<h1>Search by image</h1>
    <p class="muted">Upload a crop of a person (JPEG, PNG, WebP or BMP): the run's Re-ID model embeds it and the nearest identities are listed with their cosine score, best first.</p>
    <form id="search-form" class="filters"><input type="file" id="search-file" name="image" accept="image/*"> <button id="search-go">Search</button></form>
    <div id="query"></div><ol id="results" class="results"></ol>`;
  const show = async (data, what) => {
    $("#query").innerHTML = what;
    const ol = $("#results");
    if (!data.results.length) { ol.innerHTML = '<p class="muted">No identities with an embedding.</p>'; return; }
    ol.innerHTML = data.results.map((r) => `<li class="result" data-label="${esc(r.label)}">
      <div class="score">${(r.score * 100).toFixed(1)}%</div>${r.card ? cardHtml(r.card, data.run_id) : esc(r.label)}<div class="tl" data-label="${esc(r.label)}"></div></li>`).join("");
    for (const r of data.results.slice(0, 5)) {
      try {
        const d = await api(`/api/runs/${data.run_id}/identities/${encodeURIComponent(r.label)}`);
        const slot = ol.querySelector(`.tl[data-label="${CSS.escape(r.label)}"]`);
        if (slot) slot.innerHTML = timelineSvg(d, { width: 700, laneH: 20 });
      } catch (err) { showError(err); }
    }
  };
  $("#search-form").onsubmit = async (ev) => {
    ev.preventDefault();
    clearError();
    const file = $("#search-file").files[0];
    if (!file) { showError(new Error("choose an image file first")); return; }
    $("#results").innerHTML = '<p class="muted">Searching…</p>';
    const form = new FormData();
    form.append("image", file);
    try {
      const data = await api(`/api/runs/${RUN.id}/search?top=10`, { method: "POST", body: form });
      await show(data, `<figure class="queryimg"><img src="${URL.createObjectURL(file)}" alt="query"><figcaption>query: ${esc(file.name)}</figcaption></figure>`);
    } catch (err) { $("#results").innerHTML = ""; showError(err); }
  };
  if (q.get("camera") && q.get("track")) {
    const cam = q.get("camera"), track = q.get("track");
    const data = await api(`/api/runs/${RUN.id}/similar?${new URLSearchParams({ camera: cam, track, top: 10 })}`);
    await show(data, `<figure class="queryimg"><img src="/api/runs/${RUN.id}/thumbnails/${encodeURIComponent(cam)}/${encodeURIComponent(track)}.jpg" alt="query track"><figcaption>similar to ${esc(cam)}:${esc(track)}</figcaption></figure>`);
  }
}

async function route() {
  clearError();
  const main = $("#main");
  const path = location.pathname;
  for (const a of document.querySelectorAll("nav a[data-nav]")) {
    a.classList.toggle("active", path.startsWith("/" + a.dataset.nav) || (a.dataset.nav === "identities" && path.startsWith("/identity/")));
    a.href = link("/" + a.dataset.nav);
  }
  try {
    if (!RUNS.length) await loadRuns();
    await selectRun();
    if (path.startsWith("/identity/")) await identityPage(main, decodeURIComponent(path.slice("/identity/".length)));
    else if (path.startsWith("/identities")) await identitiesPage(main);
    else if (path.startsWith("/events")) await eventsPage(main);
    else if (path.startsWith("/floor")) await floorPage(main);
    else if (path.startsWith("/search")) await searchPage(main);
    else await runsPage(main);
    for (const a of document.querySelectorAll("nav a[data-nav]")) a.href = link("/" + a.dataset.nav);
    document.body.dataset.ready = path;
  } catch (err) {
    main.innerHTML = "";
    showError(err);
    document.body.dataset.ready = "error";
  }
}
route();
