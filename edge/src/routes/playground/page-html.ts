/**
 * @module routes/playground/page-html
 * The playground's HTML document, served at `GET /`. Assets are referenced relatively
 * (`playground/app.css`, `playground/app.js`), so the page also works when the edge is mounted under
 * a path prefix; nothing is loaded from another origin. Worker-safe: a plain string.
 */
import { LIMITS } from "@nest/shared/protocol/request";
import { DOCUMENT_LIMITS } from "@nest/shared/protocol/documents";

const MODES = ["base", "rag", "knnlm", "nest", "rag-nest"] as const;

function modeOptions(selected: string): string {
  return MODES.map((m) => `<option value="${m}"${m === selected ? " selected" : ""}>${m}</option>`).join("");
}

/** The document. Defaults: mode `nest`, gamma per mode, 40 passages, 128 new tokens (request.ts). */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>nest playground</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="playground/app.css">
<script type="module" src="playground/app.js"></script>
</head>
<body>
<a class="skip" href="#answers">Skip to the answers</a>
<header class="top">
  <h1>nest playground</h1>
  <p>Ask a question; text copied from the corpus is highlighted, one colour and number per source passage.
  Hover, focus or click a highlighted span to see where it comes from.</p>
</header>
<main class="layout">
  <div class="work">
    <form id="ask" class="ask" novalidate>
      <label class="question" for="question">Question</label>
      <textarea id="question" name="question" rows="2" required maxlength="${LIMITS.maxPromptChars}">What is the capital of Australia?</textarea>
      <div class="knobs">
        <label>Mode <select id="mode" name="mode">${modeOptions("nest")}</select></label>
        <label>gamma <input id="gamma" name="gamma" type="number" min="0.000001" max="1" step="any" value="0.0005"
          aria-describedby="gamma-hint"></label>
        <label>Passages <input id="passages" name="passages" type="number" min="1" max="${LIMITS.maxPassages}" step="1" value="40"></label>
        <label>Max new tokens <input id="max-new-tokens" name="max_new_tokens" type="number" min="1"
          max="${LIMITS.maxNewTokens}" step="1" value="128"></label>
        <label class="key">API key <input id="api-key" name="api_key" type="password" autocomplete="off"
          spellcheck="false" aria-describedby="key-hint"></label>
      </div>
      <p class="hints"><span id="gamma-hint">gamma defaults per mode: 5e-4, or 0.5 for rag-nest; it is sent only if you change it.</span>
        <span id="key-hint">The key stays in this tab's session storage only.</span></p>
      <div class="actions">
        <label class="compare"><input id="compare" type="checkbox"> Side by side with</label>
        <select id="mode-b" aria-label="Second mode">${modeOptions("base")}</select>
        <button id="run" type="submit">Ask</button>
        <button id="stop" type="button" disabled>Stop</button>
      </div>
    </form>
    <section id="documents" class="documents" aria-labelledby="documents-h">
      <h2 id="documents-h">Documents</h2>
      <p class="hints" id="documents-hint">Paste your own documents to answer over them instead of the corpus
        (at most ${DOCUMENT_LIMITS.maxDocuments}, ${DOCUMENT_LIMITS.maxDocumentChars} characters each); cited ranges are highlighted in them.</p>
      <ol id="doc-list" class="doc-list"></ol>
      <button id="add-doc" type="button">Add document</button>
    </section>
    <div id="answers" class="panes" tabindex="-1"></div>
  </div>
  <aside class="sources" aria-labelledby="sources-h">
    <h2 id="sources-h">Sources</h2>
    <section id="pinned" class="pinned" aria-live="polite" hidden></section>
    <p id="no-sources" class="muted">Cited passages appear here.</p>
    <ol id="source-list" class="source-list"></ol>
  </aside>
</main>
<div id="tip" class="tip" role="tooltip" hidden></div>
</body>
</html>
`;
