// kinject's page: plain DOM calls, no build step. The API key (if reads need one) is read
// from localStorage under "kinject-key".
"use strict";

const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = window.localStorage.getItem("kinject-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children || []) node.append(c);
  return node;
}

async function errorText(resp) {
  try { const body = await resp.json(); return body.error.code + ": " + body.error.message; }
  catch (e) { return "HTTP " + resp.status; }
}

// "1 source", "23,533 examples"
const count = (n, noun) => `${n.toLocaleString("en")} ${noun}${n === 1 ? "" : "s"}`;

async function refreshStatus() {
  const resp = await fetch("/v1/status?recent=8", { headers: headers() });
  if (!resp.ok) return;
  const s = await resp.json();
  thumbnails = s.thumbnails;
  $("stat-chunks").textContent = s.index_chunks;
  $("stat-adapter").textContent = s.adapter_version || "base model";
  $("stat-dlq").textContent = s.dlq_count === null ? "?" : s.dlq_count;
  // The fine-tuning corpus (and how many of its examples arrived since the last cycle took
  // its share) and the chunk events its materialisers have not taken in yet.
  const c = s.corpus;
  $("stat-corpus").textContent = c
    ? `${count(c.examples, "example")} from ${count(c.sources, "source")}, ` + (c.pending
      ? `${c.pending.toLocaleString("en")} waiting for the next fine-tuning cycle`
      : "none waiting for a fine-tuning cycle")
    : "empty";
  $("stat-corpus-lag").textContent = s.corpus_lag === null
    ? "?" : `${Object.values(s.corpus_lag).reduce((a, b) => a + b, 0)} events`;
  const rows = s.recent.map((r) => el("tr", {}, [
    el("td", { textContent: r.source_id }), el("td", { textContent: r.op }),
    el("td", { textContent: r.chunks }),
    el("td", { textContent: r.topic ? `${r.topic}[${r.partition}]@${r.offset}` : "-" }),
    el("td", { textContent: new Date(r.at * 1000).toLocaleTimeString() }),
  ]));
  $("recent").replaceChildren(...rows);
}

const short = (version) => (version ? version.slice(0, 12) : "base model");

function emptyRow(columns, text) {
  return el("tr", {}, [el("td", { colSpan: columns, className: "empty", textContent: text })]);
}

async function refreshTraining() {
  // The adapters and the last fine-tuning jobs; every value goes in as text, never as HTML.
  const [adaptersResp, jobsResp] = await Promise.all([
    fetch("/v1/adapters", { headers: headers() }),
    fetch("/v1/finetune/jobs?limit=5", { headers: headers() }),
  ]);
  if (adaptersResp.ok) {
    const a = await adaptersResp.json();
    $("adapter-active").textContent = short(a.active);
    if (!a.adapters.length) {
      $("adapters").replaceChildren(emptyRow(6, "none yet: a fine-tuning cycle makes the first"));
    } else $("adapters").replaceChildren(...a.adapters.slice(-8).reverse().map((v) => {
      const acc = v.metrics.new_accuracy;
      return el("tr", { className: v.active ? "active" : "" }, [
        el("td", { textContent: short(v.version) + (v.active ? " (serving)" : "") }),
        el("td", { textContent: v.status }), el("td", { textContent: short(v.parent) }),
        el("td", { textContent: v.corpus_cycle }), el("td", { textContent: v.sources }),
        el("td", { textContent: typeof acc === "number" ? acc.toFixed(2) : "-" }),
      ]);
    }));
  }
  if (jobsResp.ok) {
    const body = await jobsResp.json();
    if (!body.jobs.length) $("jobs").replaceChildren(emptyRow(7, "no fine-tuning job yet"));
    else $("jobs").replaceChildren(...body.jobs.map((j) => el("tr", {}, [
      el("td", { textContent: j.id }),
      el("td", { textContent: new Date(j.created_at * 1000).toLocaleTimeString() }),
      el("td", { textContent: j.status, title: j.error || "" }),
      el("td", { textContent: j.stage }),
      el("td", { textContent: Math.round(j.progress * 100) + "%" }),
      el("td", { textContent: j.outcome || "-" }),
      el("td", { textContent: j.version ? short(j.version) : "-" }),
    ])));
  }
}

async function runSearch(ev) {
  ev.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  const out = $("search-results");
  out.replaceChildren(el("li", { textContent: "searching..." }));
  const resp = await fetch("/v1/search?" + new URLSearchParams({ q, k: "5" }), { headers: headers() });
  if (!resp.ok) { out.replaceChildren(el("li", { className: "error", textContent: await errorText(resp) })); return; }
  const body = await resp.json();
  if (!body.hits.length) { out.replaceChildren(el("li", { textContent: "no hits" })); return; }
  out.replaceChildren(...body.hits.map((h) => el("li", { className: "hit" }, [
    ...(isImage(h) ? [thumbnail(h)] : []),
    el("div", { className: "text", textContent: h.text }),
    el("div", { className: "src", textContent: `${h.source_id} · ${scoreText(h)}`,
                title: SCORE_HELP }),
  ])));
}

const SCORE_HELP = "fused: the score hits are ranked by (vector and BM25 results combined); " +
  "cosine: similarity of meaning to the query; bm25: keyword score, for hits the keyword " +
  "search found";

// Each number named for what it is: hybrid hits are ranked by the fused score, and one that
// only BM25 found can have a low, even negative, cosine. A plain vector or BM25 search
// ranks by its own score, which is then the fused one too.
function scoreText(h) {
  const m = h.meta || {};
  const n = (x) => x.toFixed(3);
  const parts = [];
  if (typeof m.fused === "number" && m.fused !== m.vector_score && m.fused !== m.bm25_score)
    parts.push(`fused ${n(m.fused)}`);
  if (typeof m.vector_score === "number") parts.push(`cosine ${n(m.vector_score)}`);
  if (typeof m.bm25_score === "number") parts.push(`bm25 ${n(m.bm25_score)}`);
  return parts.length ? parts.join(" · ") : `score ${n(h.score)}`;
}

const isImage = (h) => (h.meta || {}).kind === "image" && Boolean((h.meta || {}).image_id);

// Whether the server keeps image thumbnails (only its CLIP image index does): null until the
// status has been read. Without them the page asks for none (each would be a 404).
let thumbnails = null;

function thumbnail(h) {
  // An image's caption or OCR text: the image's thumbnail above it, or why there is none.
  const m = h.meta;
  const box = el("div", { className: "thumb" });
  const size = m.width && m.height ? ` (${m.width}×${m.height})` : "";
  if (thumbnails === false) {
    box.append(el("span", { className: "note", title: NO_THUMBNAILS,
                            textContent: `image${size}: no thumbnail (no CLIP image index here)` }));
    return box;
  }
  fetch(`/v1/images/${encodeURIComponent(m.image_id)}/thumbnail`, { headers: headers() })
    .then(async (resp) => {
      if (resp.ok) {
        const src = URL.createObjectURL(await resp.blob());
        box.append(el("img", { src, alt: `image ${h.source_id}` }));
        return;
      }
      let why = "HTTP " + resp.status;
      try { why = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
      box.append(el("span", { className: "note", textContent: `image${size}: ${why}` }));
    });
  return box;
}

const NO_THUMBNAILS = "This server keeps image thumbnails only in its CLIP image index, which " +
  "is off (KINJECT_MODELS__CLIP_CHECKPOINT, see `kinject doctor`); the image's caption and OCR " +
  "text are searched all the same.";

function answerImages(ids) {
  // The answer's images (those whose caption or OCR text it cites, and CLIP's finds), shown
  // where this server keeps thumbnails; without, the cited caption is all there is.
  if (thumbnails !== true || !ids || !ids.length) return [];
  return [el("div", { className: "answer-images" },
             ids.map((id) => thumbnail({ source_id: id, meta: { image_id: id } })))];
}

function renderAnswer(text, citations, images) {
  // Turn [n] markers into links that show the cited passage.
  const answer = $("answer");
  const byN = new Map(citations.map((c) => [c.n, c]));
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    parts.push(text.slice(last, m.index));
    const c = byN.get(Number(m[1]));
    if (c) parts.push(el("a", { className: "cite", textContent: m[0], href: "#", onclick: (e) => {
      e.preventDefault(); showPassage(c); } }));
    else parts.push(m[0]);
    last = m.index + m[0].length;
  }
  parts.push(text.slice(last));
  answer.replaceChildren(...parts);
  $("citations").replaceChildren(...answerImages(images), ...citations.map((c) => el("div", {
    className: "passage", id: "passage-" + c.n,
  }, [el("div", { className: "text", textContent: `[${c.n}] ${c.snippet}` }),
      el("div", { className: "src", textContent: `${citedAs(c)} · score ${c.score.toFixed(3)}` })])));
}

function clock(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function citedAs(c) {
  // Where in the source: the time in a recording, the page of a PDF (as `kinject ask` prints it).
  if (c.start_s != null && c.end_s != null)
    return `${c.source_id} at ${clock(Math.floor(c.start_s))}-${clock(Math.ceil(c.end_s))}`;
  if (c.page != null) return `${c.source_id}, page ${c.page}`;
  return c.source_id;
}

function showPassage(c) {
  for (const p of document.querySelectorAll(".passage")) p.classList.remove("shown");
  const p = $("passage-" + c.n);
  if (p) p.classList.add("shown");
}

async function runAsk(ev) {
  ev.preventDefault();
  const question = $("ask-q").value.trim();
  if (!question) return;
  const answer = $("answer");
  answer.textContent = "";
  $("citations").replaceChildren();
  const resp = await fetch("/v1/ask", {
    method: "POST", headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ question, stream: true }),
  });
  if (!resp.ok) { answer.replaceChildren(el("span", { className: "error", textContent: await errorText(resp) })); return; }
  // Read the server-sent events as they arrive: "data: {...}" lines, blank line between.
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      const msg = JSON.parse(data);
      if (msg.type === "delta") answer.textContent += msg.text;
      else if (msg.type === "answer") renderAnswer(msg.text, msg.citations, msg.images);
      else if (msg.type === "error") answer.append(el("div", { className: "error", textContent: msg.error.message }));
    }
  }
  refreshStatus();
}

$("search-form").addEventListener("submit", runSearch);
$("ask-form").addEventListener("submit", runAsk);
refreshStatus();
refreshTraining();
setInterval(refreshStatus, 5000);
setInterval(refreshTraining, 5000);
