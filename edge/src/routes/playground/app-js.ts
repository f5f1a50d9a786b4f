/**
 * @module routes/playground/app-js
 * The playground's controller, as the source text of an ES module served at `playground/app.js`:
 * the form (API key kept in `sessionStorage` only, gamma default per mode), one or two concurrent
 * `POST /v1/generate` streams (side-by-side view), the sources panel (one number and colour per
 * cited passage across both panes; a copied run streamed in pieces, `citation.continues`, counts as
 * one use and marks one range), the hover/focus tooltip and click/Enter pinning, and the
 * documents panel (pasted documents sent as `documents`; cited ranges marked in them). Worker-safe: a
 * plain string.
 */
import { DOCUMENT_LIMITS } from "@nest/shared/protocol/documents";

export const APP_JS = String.raw`// nest playground: controller.
import { readSse } from "./sse.js";
import { createPane, fillCitation } from "./render.js";

const KEY_STORAGE = "nest.apiKey";
const COLOURS = 8;
const $ = (id) => document.getElementById(id);
const form = $("ask");
const modeSel = $("mode");
const gamma = $("gamma");
const keyInput = $("api-key");
const compare = $("compare");
const modeB = $("mode-b");
const runBtn = $("run");
const stopBtn = $("stop");
const panes = $("answers");
const tip = $("tip");
const pinned = $("pinned");
const sourceList = $("source-list");
const noSources = $("no-sources");
const docList = $("doc-list");
const MAX_DOC_CHARS = ${DOCUMENT_LIMITS.maxDocumentChars};

let gammaTouched = false;
let sources = new Map(); // passage_id -> {n, colour, title, source, text, uses: Map(mode -> count), item}
let controller = null;

const gammaDefault = (mode) => (mode === "rag-nest" ? "0.5" : "0.0005");
modeSel.addEventListener("change", () => {
  if (!gammaTouched) gamma.value = gammaDefault(modeSel.value);
});
gamma.addEventListener("input", () => {
  gammaTouched = true;
});
try {
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
} catch (e) {
  // storage unavailable: the key lives in the field only
}
keyInput.addEventListener("input", () => {
  try {
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch (e) {
    // ignore
  }
});

// A piece that continues the previous citation (citation.continues) is the same use of its source.
function sourceFor(citation, passage, mode) {
  let s = sources.get(citation.passage_id);
  if (!s) {
    s = {
      n: sources.size + 1,
      colour: sources.size % COLOURS,
      id: citation.passage_id,
      title: citation.title,
      source: citation.source,
      text: passage && typeof passage.text === "string" ? passage.text : undefined,
      uses: new Map(),
      last: null,
    };
    s.item = document.createElement("li");
    s.item.className = "src c" + s.colour;
    s.item.dataset.passage = s.id;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "src-btn";
    const sw = document.createElement("span");
    sw.className = "swatch c" + s.colour;
    sw.textContent = String(s.n);
    const title = document.createElement("span");
    title.className = "src-title";
    title.textContent = s.title;
    const meta = document.createElement("span");
    meta.className = "src-meta";
    btn.append(sw, title, meta);
    btn.addEventListener("click", () => s.last && pin(s.last));
    s.item.append(btn);
    s.meta = meta;
    sources.set(s.id, s);
    sourceList.append(s.item);
    noSources.hidden = true;
  }
  if (!citation.continues || !s.uses.has(mode)) s.uses.set(mode, (s.uses.get(mode) || 0) + 1);
  s.meta.textContent = s.source + " \u00b7 " + Array.from(s.uses, ([m, k]) => m + " \u00d7" + k).join(", ");
  return s;
}

function cardOf(mark) {
  const s = sources.get(mark.dataset.passage);
  return {
    n: s.n,
    colour: s.colour,
    title: s.title,
    source: s.source,
    passageId: s.id,
    start: Number(mark.dataset.pstart),
    end: Number(mark.dataset.pend),
    text: s.text,
    cited: mark.textContent,
  };
}

function showTip(mark) {
  fillCitation(tip, cardOf(mark));
  const hint = document.createElement("p");
  hint.className = "muted";
  hint.textContent = "Click or press Enter to pin in the sources panel.";
  tip.append(hint);
  tip.hidden = false;
  const r = mark.getBoundingClientRect();
  const w = tip.offsetWidth;
  const h = tip.offsetHeight;
  const left = Math.max(8, Math.min(r.left, window.innerWidth - w - 8));
  const below = r.bottom + 8;
  tip.style.left = left + "px";
  tip.style.top = (below + h > window.innerHeight && r.top - h - 8 > 0 ? r.top - h - 8 : below) + "px";
}

function hideTip() {
  tip.hidden = true;
}

function pin(mark) {
  const card = cardOf(mark);
  pinned.hidden = false;
  pinned.replaceChildren();
  const head = document.createElement("div");
  head.className = "pinned-head";
  const h = document.createElement("h3");
  h.textContent = "Pinned citation";
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Unpin";
  close.addEventListener("click", unpin);
  head.append(h, close);
  const body = document.createElement("div");
  fillCitation(body, card);
  pinned.append(head, body);
  for (const s of sources.values()) s.item.classList.toggle("current", s.id === card.passageId);
  for (const m of panes.querySelectorAll("mark.cite.pinned")) m.classList.remove("pinned");
  mark.classList.add("pinned");
}

function unpin() {
  pinned.hidden = true;
  pinned.replaceChildren();
  for (const s of sources.values()) s.item.classList.remove("current");
  for (const m of panes.querySelectorAll("mark.cite.pinned")) m.classList.remove("pinned");
}

const citeOf = (e) => (e.target instanceof Element ? e.target.closest("mark.cite") : null);
panes.addEventListener("mouseover", (e) => {
  const m = citeOf(e);
  if (m) showTip(m);
});
panes.addEventListener("mouseout", (e) => {
  if (citeOf(e) && document.activeElement !== citeOf(e)) hideTip();
});
panes.addEventListener("focusin", (e) => {
  const m = citeOf(e);
  if (m) showTip(m);
});
panes.addEventListener("focusout", hideTip);
panes.addEventListener("click", (e) => {
  const m = citeOf(e);
  if (m) pin(m);
});
panes.addEventListener("keydown", (e) => {
  const m = citeOf(e);
  if (m && (e.key === "Enter" || e.key === " ")) {
    e.preventDefault();
    pin(m);
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") hideTip();
});

// Documents panel (issue 15): each document has a title, a text and a view of its text with the
// cited ranges (citation start/end, offsets into the document) marked in their source's colour.
function addDoc() {
  const li = document.createElement("li");
  li.className = "doc";
  const n = docList.children.length + 1;
  const title = document.createElement("input");
  title.className = "doc-title";
  title.placeholder = "Title (optional)";
  title.setAttribute("aria-label", "Document " + n + " title");
  const text = document.createElement("textarea");
  text.className = "doc-text";
  text.rows = 4;
  text.maxLength = MAX_DOC_CHARS;
  text.setAttribute("aria-label", "Document " + n + " text");
  const view = document.createElement("div");
  view.className = "doc-view";
  view.hidden = true;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => li.remove());
  li.append(title, text, view, remove);
  li.marks = [];
  docList.append(li);
  text.focus();
}
$("add-doc").addEventListener("click", addDoc);

/** The documents to send (blank ones skipped) and the list items they came from, in order. */
function documentsOf() {
  const items = Array.from(docList.children).filter((li) => li.querySelector(".doc-text").value.trim() !== "");
  const docs = items.map((li) => {
    const title = li.querySelector(".doc-title").value.trim();
    const d = { text: li.querySelector(".doc-text").value };
    if (title) d.title = title;
    return d;
  });
  return { docs, items };
}

/**
 * Renders a document's text with its cited ranges marked: the text is cut at every citation
 * boundary and each piece covered by a citation is one mark, in the colour and number of the
 * earliest citation covering it (citations may overlap: a later copy can restart inside an earlier one).
 */
function renderDoc(li) {
  const view = li.querySelector(".doc-view");
  const text = li.sent;
  const cuts = Array.from(new Set([0, text.length].concat(li.marks.flatMap((m) => [m.start, m.end])))).sort((a, b) => a - b);
  view.replaceChildren();
  for (let i = 0; i + 1 < cuts.length; i++) {
    const from = cuts[i];
    const to = cuts[i + 1];
    const m = li.marks.find((c) => c.start <= from && c.end >= to);
    if (!m) {
      view.append(document.createTextNode(text.slice(from, to)));
      continue;
    }
    const mark = document.createElement("mark");
    mark.className = "doc-cite c" + m.colour;
    mark.dataset.n = String(m.n);
    mark.dataset.start = String(from);
    mark.dataset.end = String(to);
    mark.title = "[" + m.n + "] cited characters " + m.start + "\u2013" + m.end;
    mark.textContent = text.slice(from, to);
    view.append(mark);
  }
  view.hidden = false;
}

let docItems = [];

async function run(pane, body, key, signal) {
  let res;
  try {
    res = await fetch("v1/generate", {
      method: "POST",
      headers: { authorization: "Bearer " + key, "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (e) {
    pane.fail(signal.aborted ? "Stopped." : "Cannot reach the edge: " + e.message);
    return;
  }
  if (!res.ok || !res.body) {
    let detail = res.statusText;
    try {
      const j = await res.json();
      detail = j.error.code + ": " + j.error.message;
    } catch (e) {
      // not a JSON error body
    }
    pane.fail("HTTP " + res.status + " " + detail);
    return;
  }
  let ended = false;
  try {
    await readSse(res.body, (msg) => {
      if (ended) return;
      const data = JSON.parse(msg.data);
      if (msg.event === "retrieval") {
        pane.passages = new Map(data.passages.map((p) => [p.id, p]));
        const top = data.passages[0];
        pane.setStatus(data.passages.length === 0 ? "No retrieval (" + pane.mode + " mode); generating\u2026"
          : data.passages.length + " passages from " + data.corpus + " in " + data.retrieval_ms + " ms" +
            (top ? "; top: " + top.title : "") + ". Generating\u2026");
      } else if (msg.event === "delta") {
        const c = data.citation;
        if (c) {
          const s = sourceFor(c, pane.passages.get(c.passage_id), pane.mode);
          s.last = pane.appendCited(data.text, c, s);
          const li = c.document_index !== undefined ? docItems[c.document_index] : undefined;
          if (li && c.start !== undefined && c.end !== undefined) {
            // A continuing piece extends its run's range: one cited range per run, as in the answer.
            const prev = li.marks[li.marks.length - 1];
            if (c.continues && prev && prev.n === s.n && prev.end === c.start) prev.end = c.end;
            else li.marks.push({ start: c.start, end: c.end, colour: s.colour, n: s.n });
            renderDoc(li);
          }
        } else {
          pane.appendText(data.text);
        }
      } else if (msg.event === "done") {
        ended = true;
        pane.finish(data);
      } else if (msg.event === "error") {
        ended = true;
        pane.fail("Error " + data.error.code + ": " + data.error.message);
      }
    });
  } catch (e) {
    if (!ended) pane.fail(signal.aborted ? "Stopped." : "The stream broke: " + e.message);
    return;
  }
  if (!ended) pane.fail("The stream ended before the final event.");
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!form.reportValidity()) return;
  const key = keyInput.value.trim();
  if (!key) {
    keyInput.setCustomValidity("Enter an API key (nestlm prints one at startup).");
    keyInput.reportValidity();
    keyInput.setCustomValidity("");
    keyInput.focus();
    return;
  }
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  hideTip();
  unpin();
  sources = new Map();
  sourceList.replaceChildren();
  noSources.hidden = false;
  panes.replaceChildren();
  const modes = compare.checked ? [modeSel.value, modeB.value] : [modeSel.value];
  panes.classList.toggle("two", modes.length === 2);
  const base = {
    prompt: $("question").value,
    max_new_tokens: Number($("max-new-tokens").value),
    passages: Number($("passages").value),
  };
  if (gammaTouched) base.gamma = Number(gamma.value);
  const { docs, items } = documentsOf();
  for (const li of docList.children) {
    li.marks = [];
    li.querySelector(".doc-view").hidden = true;
  }
  docItems = items;
  items.forEach((li, i) => (li.sent = docs[i].text));
  if (docs.length > 0) base.documents = docs;
  runBtn.disabled = true;
  stopBtn.disabled = false;
  const runs = modes.map((mode) => run(createPane(panes, mode), Object.assign({ mode }, base), key, signal));
  await Promise.all(runs);
  if (controller && controller.signal === signal) {
    controller = null;
    runBtn.disabled = false;
    stopBtn.disabled = true;
  }
});

stopBtn.addEventListener("click", () => {
  if (controller) controller.abort();
  controller = null;
  runBtn.disabled = false;
  stopBtn.disabled = true;
  runBtn.focus();
});
`;
