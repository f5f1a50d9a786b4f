/**
 * @module routes/playground/page-css
 * The playground's stylesheet, served at `playground/app.css`. Colours: body text #1a1a1a on white
 * (17:1); each highlight colour is a light background under dark text (≥ 11:1) with a darker
 * underline of the same hue and a numbered marker, so a citation never depends on colour alone.
 * Worker-safe: a plain string.
 */
export const PAGE_CSS = String.raw`/* nest playground */
:root {
  --fg: #1a1a1a; --muted: #4a4a4a; --line: #c8c8c8; --panel: #f5f5f4; --accent: #1d4ed8; --error: #9f1239;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif;
  color: var(--fg); background: #fff; line-height: 1.5;
}
* { box-sizing: border-box; }
body { margin: 0; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 1rem; top: 1rem; background: #fff; padding: .5rem; z-index: 10; }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.top { padding: 1rem 1.5rem .25rem; border-bottom: 1px solid var(--line); }
.top h1 { margin: 0 0 .25rem; font-size: 1.4rem; }
.top p { margin: 0 0 .75rem; color: var(--muted); max-width: 60rem; }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) 22rem; gap: 1.5rem; padding: 1rem 1.5rem 2rem; }
@media (max-width: 900px) { .layout { grid-template-columns: 1fr; } }
.muted { color: var(--muted); font-size: .9rem; }

.ask { display: grid; gap: .5rem; margin-bottom: 1rem; }
.ask .question { font-weight: 600; }
textarea, input, select, button { font: inherit; color: inherit; }
textarea { width: 100%; padding: .5rem; border: 1px solid #767676; border-radius: 4px; resize: vertical; }
.knobs { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; }
.knobs label { display: grid; gap: .15rem; font-size: .9rem; font-weight: 600; }
.knobs input, .knobs select, .actions select { padding: .3rem .4rem; border: 1px solid #767676; border-radius: 4px; background: #fff; }
.knobs input[type=number] { width: 7.5rem; }
.knobs .key input { width: 14rem; }
.hints { margin: 0; font-size: .85rem; color: var(--muted); display: flex; flex-wrap: wrap; gap: 0 1.5rem; }
.actions { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
.compare { display: inline-flex; gap: .35rem; align-items: center; }
button { padding: .4rem 1rem; border: 1px solid var(--accent); border-radius: 4px; background: #fff; color: var(--accent); cursor: pointer; }
button[type=submit] { background: var(--accent); color: #fff; font-weight: 600; }
button:disabled { border-color: #767676; background: #eee; color: #555; cursor: default; }

.panes { display: grid; gap: 1rem; grid-template-columns: minmax(0, 1fr); }
.panes.two { grid-template-columns: repeat(2, minmax(0, 1fr)); }
@media (max-width: 700px) { .panes.two { grid-template-columns: minmax(0, 1fr); } }
.pane { border: 1px solid var(--line); border-radius: 6px; padding: .75rem 1rem; }
.pane-title { margin: 0; font-size: 1rem; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.status { margin: .25rem 0 .5rem; font-size: .9rem; color: var(--muted); }
.status.error { color: var(--error); font-weight: 600; }
.answer { font-size: 1.05rem; line-height: 1.9; white-space: pre-wrap; overflow-wrap: anywhere; min-height: 2rem; }
.pane[data-state=running] .answer::after { content: "\258D"; color: var(--muted); }

.c0 { --bg: #fde68a; --ul: #92400e; } .c1 { --bg: #bfdbfe; --ul: #1e40af; }
.c2 { --bg: #bbf7d0; --ul: #166534; } .c3 { --bg: #fbcfe8; --ul: #9d174d; }
.c4 { --bg: #ddd6fe; --ul: #5b21b6; } .c5 { --bg: #fed7aa; --ul: #9a3412; }
.c6 { --bg: #a5f3fc; --ul: #155e75; } .c7 { --bg: #e5e7eb; --ul: #374151; }
mark.cite, mark.ctx-cited { background: var(--bg); color: var(--fg); border-radius: 2px; padding: 0 .05em;
  text-decoration: underline 2px var(--ul); text-underline-offset: .22em; text-decoration-skip-ink: none; }
mark.cite { cursor: pointer; box-decoration-break: clone; -webkit-box-decoration-break: clone; }
mark.cite::after { content: attr(data-n); display: inline-block; margin-left: .15em; padding: 0 .25em; border-radius: 3px;
  font-size: .62em; font-weight: 700; line-height: 1.35; vertical-align: .6em; color: #fff; background: var(--ul); }
mark.cite:hover, mark.cite.pinned { outline: 2px solid var(--ul); outline-offset: 1px; }
.swatch { display: inline-block; min-width: 1.5em; text-align: center; font-weight: 700; font-size: .8rem;
  color: #fff; background: var(--ul); border-radius: 3px; padding: 0 .3em; }

.stats { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; margin: .75rem 0 .5rem; }
.stat dt { font-size: .8rem; color: var(--muted); }
.stat dd { margin: 0; font-size: 1.15rem; font-weight: 700; font-variant-numeric: tabular-nums; }
.timing { margin: 0; }
.timing figcaption { font-size: .8rem; color: var(--muted); }
.bar { display: flex; height: .9rem; border: 1px solid #767676; border-radius: 3px; overflow: hidden; margin: .2rem 0; background: #fff; }
.seg { display: block; height: 100%; min-width: 0; }
.legend { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: .1rem 1rem; font-size: .8rem; font-variant-numeric: tabular-nums; }
.legend .sw { display: inline-block; width: .8em; height: .8em; margin-right: .3em; border: 1px solid #555; vertical-align: -.05em; }
.legend .total { font-weight: 700; }
.t-retrieval { background: #0f766e; } .t-encoding { background: #b45309; } .t-knn { background: #7c3aed; }
.t-lm { background: #1d4ed8; } .t-other { background: repeating-linear-gradient(45deg, #9ca3af 0 3px, #e5e7eb 3px 6px); }

.sources { border-left: 1px solid var(--line); padding-left: 1.25rem; }
@media (max-width: 900px) { .sources { border-left: 0; padding-left: 0; border-top: 1px solid var(--line); } }
.sources h2 { margin: 0 0 .5rem; font-size: 1.1rem; }
.pinned { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: .5rem .75rem; margin-bottom: 1rem; }
.pinned-head { display: flex; justify-content: space-between; align-items: center; }
.pinned-head h3 { margin: 0; font-size: .95rem; }
.pinned-head button { padding: .1rem .6rem; font-size: .85rem; }
.source-list { list-style: none; margin: 0; padding: 0; display: grid; gap: .35rem; }
.src-btn { display: grid; grid-template-columns: auto 1fr; gap: 0 .5rem; width: 100%; text-align: left; color: var(--fg);
  border: 1px solid var(--line); background: #fff; padding: .4rem .5rem; }
.src-btn .swatch { grid-row: span 2; align-self: start; margin-top: .15rem; }
.src-title { font-weight: 600; }
.src-meta { font-size: .8rem; color: var(--muted); overflow-wrap: anywhere; }
.src.current .src-btn { border-color: var(--ul); box-shadow: inset 4px 0 0 var(--ul); background: var(--panel); }

.card-title { margin: .25rem 0 0; }
.card-source { margin: 0 0 .35rem; font-size: .8rem; color: var(--muted); overflow-wrap: anywhere; }
.ctx { margin: 0; padding: .4rem .6rem; border-left: 3px solid var(--line); background: #fff; font-size: .9rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.ctx-before, .ctx-after { color: #333; }
.tip { position: fixed; z-index: 20; max-width: min(34rem, calc(100vw - 16px)); background: #fff; color: var(--fg);
  border: 1px solid #767676; border-radius: 6px; padding: .5rem .75rem; box-shadow: 0 6px 20px rgba(0,0,0,.18); }
.tip .muted { margin: .35rem 0 0; font-size: .8rem; }
.documents { margin: 1rem 0; } .documents h2 { font-size: 1rem; margin: 0 0 .25rem; }
.doc-list { list-style: none; margin: .5rem 0; padding: 0; display: grid; gap: .5rem; }
.doc { display: grid; gap: .25rem; border: 1px solid #767676; border-radius: 6px; padding: .5rem; }
.doc-text { width: 100%; font: inherit; } .doc .doc-title { font: inherit; }
.doc-view { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 16rem; overflow: auto; background: var(--panel); padding: .5rem; border-radius: 4px; }
mark.doc-cite { background: var(--bg); color: var(--fg); border-radius: 2px; box-shadow: inset 0 -2px 0 var(--ul); }
mark.doc-cite::after { content: attr(data-n); font-size: .7em; vertical-align: super; margin-left: .1em; color: var(--ul); }
[hidden] { display: none !important; }
`;
