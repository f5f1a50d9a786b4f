/**
 * @module routes/playground/render-js
 * The playground's DOM rendering, as the source text of an ES module served at
 * `playground/render.js`: answer panes (streamed text, cited spans as `<mark class="cite">`), the
 * citation card (title, source, the cited range in its passage context) and the summary after `done`
 * (attribution ratio, tokens, LM forward passes, tokens/s, timing bar). All text goes in through
 * `textContent`, never HTML. Worker-safe: a plain string.
 *
 * Exports of the served module:
 * - `contextOf(text, start, end, radius)` → `{before, cited, after, cutBefore, cutAfter}`: the cited
 *   range `[start, end)` of `text` (UTF-16 indices) with up to `radius` chars either side.
 * - `createPane(parent, mode)` → pane with `setStatus`, `appendText`, `appendCited`, `finish`, `fail`.
 *   Consecutive deltas copied from adjacent ranges of one passage (`passage_end` of the first equals
 *   `passage_start` of the next, as for the pieces of a streamed run, `citation.continues`) render
 *   as one span covering the joined range.
 * - `fillCitation(el, card)`: renders a citation card into `el`.
 */
export const RENDER_JS = String.raw`// nest playground: rendering.
export const CONTEXT_CHARS = 160;
const TIMING_PARTS = ["retrieval", "encoding", "knn", "lm"];

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function fmtMs(ms) {
  return ms >= 100 ? String(Math.round(ms)) : ms.toFixed(1);
}

export function contextOf(text, start, end, radius) {
  const from = Math.max(0, start - radius);
  const to = Math.min(text.length, end + radius);
  return {
    before: text.slice(from, start),
    cited: text.slice(start, end),
    after: text.slice(end, to),
    cutBefore: from > 0,
    cutAfter: to < text.length,
  };
}

// card: {n, colour, title, source, passageId, start, end, text (passage text or undefined), cited}
export function fillCitation(target, card) {
  target.replaceChildren();
  const head = el("p", "card-title");
  head.append(el("span", "swatch c" + card.colour, String(card.n)), " ", el("strong", "", card.title));
  target.append(head);
  target.append(el("p", "card-source", card.source + " \u00b7 chars " + card.start + "\u2013" + card.end));
  const quote = el("blockquote", "ctx");
  if (card.text !== undefined) {
    const c = contextOf(card.text, card.start, card.end, CONTEXT_CHARS);
    quote.append(el("span", "ctx-before", (c.cutBefore ? "\u2026" : "") + c.before));
    const m = el("mark", "ctx-cited c" + card.colour, c.cited);
    m.dataset.role = "cited";
    quote.append(m, el("span", "ctx-after", c.after + (c.cutAfter ? "\u2026" : "")));
  } else {
    const m = el("mark", "ctx-cited c" + card.colour, card.cited);
    m.dataset.role = "cited";
    quote.append(m);
    target.append(quote, el("p", "muted", "(The server did not send the passage text, so no context.)"));
    return;
  }
  target.append(quote);
}

export function createPane(parent, mode) {
  const root = el("section", "pane");
  root.dataset.mode = mode;
  root.dataset.state = "running";
  const id = "pane-" + parent.children.length;
  const h = el("h2", "pane-title", mode);
  h.id = id + "-h";
  root.setAttribute("aria-labelledby", h.id);
  const status = el("p", "status", "Waiting for the edge\u2026");
  status.setAttribute("role", "status");
  const answer = el("div", "answer");
  answer.setAttribute("aria-busy", "true");
  const summary = el("div", "summary");
  root.append(h, status, answer, summary);
  parent.append(root);

  return {
    root,
    mode,
    passages: new Map(),
    text: "",
    setStatus(t) {
      status.textContent = t;
    },
    appendText(t) {
      this.text += t;
      const last = answer.lastChild;
      if (last && last.nodeType === 3) last.appendData(t);
      else answer.append(document.createTextNode(t));
    },
    // A delta copied right after the previous one in the same passage extends that span.
    appendCited(t, citation, source) {
      this.text += t;
      const last = answer.lastChild;
      if (last && last.nodeName === "MARK" && last.dataset.passage === citation.passage_id &&
          Number(last.dataset.pend) === citation.passage_start) {
        last.firstChild.appendData(t);
        last.dataset.pend = String(citation.passage_end);
        return last;
      }
      const m = el("mark", "cite c" + source.colour, t);
      m.tabIndex = 0;
      m.dataset.n = String(source.n);
      m.dataset.passage = citation.passage_id;
      m.dataset.pstart = String(citation.passage_start);
      m.dataset.pend = String(citation.passage_end);
      m.setAttribute("aria-describedby", "tip");
      answer.append(m);
      return m;
    },
    finish(done) {
      root.dataset.state = "done";
      answer.setAttribute("aria-busy", "false");
      const u = done.usage;
      const t = done.timings_ms;
      const decodeMs = t.total - t.retrieval - t.encoding;
      const tps = decodeMs > 0 ? u.completion_tokens / (decodeMs / 1000) : null;
      const ratio = u.attribution_ratio === null ? "n/a" : (u.attribution_ratio * 100).toFixed(1) + "%";
      status.textContent = "Done (" + done.finish_reason + ") in " + fmtMs(t.total) + " ms \u00b7 " + done.model;
      const dl = el("dl", "stats");
      const stat = (name, value, hint) => {
        const d = el("div", "stat");
        d.dataset.stat = name;
        const dt = el("dt", "", name);
        if (hint) dt.title = hint;
        d.append(dt, el("dd", "", value));
        dl.append(d);
      };
      const pct = (x) => (x === null || x === undefined ? "n/a" : (x * 100).toFixed(1) + "%");
      stat("Attribution", ratio, "completion tokens with provenance in the corpus (paper \u00a77), " + u.attributed_tokens + " of " + u.completion_tokens);
      stat("Cited", pct(u.cited_ratio), "completion tokens inside citations, " + (u.cited_tokens ?? 0) + " of " + u.completion_tokens +
        "; " + (u.citations ?? 0) + " citations, " + (u.single_token_citations ?? 0) + " of one token");
      stat("Copied", pct(u.copied_ratio), "completion tokens copied through verified spans, " + (u.copied_tokens ?? 0) + " of " + u.completion_tokens);
      stat("Tokens", String(u.completion_tokens), "completion tokens (prompt: " + u.prompt_tokens + ")");
      stat("LM forward passes", String(u.lm_forward_passes), "decoding passes, prefill excluded");
      stat("Tokens/s", tps === null ? "n/a" : tps.toFixed(1), "completion tokens / (total - retrieval - encoding)");
      summary.append(dl, timingBar(t));
    },
    fail(message) {
      root.dataset.state = "error";
      answer.setAttribute("aria-busy", "false");
      status.textContent = message;
      status.setAttribute("role", "alert");
      status.classList.add("error");
    },
  };
}

function timingBar(t) {
  const parts = TIMING_PARTS.map((name) => ({ name, ms: t[name] }));
  const known = parts.reduce((s, p) => s + p.ms, 0);
  if (t.total > known) parts.push({ name: "other", ms: t.total - known });
  const scale = Math.max(t.total, known, 1e-9);
  const label = parts.map((p) => p.name + " " + fmtMs(p.ms) + " ms").join(", ");
  const box = el("figure", "timing");
  const bar = el("div", "bar");
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", "Timings: " + label + "; total " + fmtMs(t.total) + " ms");
  const legend = el("ul", "legend");
  for (const p of parts) {
    const seg = el("span", "seg t-" + p.name);
    seg.style.width = ((100 * p.ms) / scale).toFixed(2) + "%";
    seg.title = p.name + " " + fmtMs(p.ms) + " ms";
    bar.append(seg);
    const li = el("li");
    li.dataset.timing = p.name;
    li.append(el("span", "sw t-" + p.name), p.name + " " + fmtMs(p.ms) + " ms");
    legend.append(li);
  }
  const total = el("li", "total", "total " + fmtMs(t.total) + " ms");
  total.dataset.timing = "total";
  legend.append(total);
  box.append(el("figcaption", "", "Time"), bar, legend);
  return box;
}
`;
