import { createHash } from 'node:crypto';
import type { Context } from 'koa';
import { messages } from './messages.js';

/** A rendered page: `body` is already-escaped HTML built by the page functions of this folder. */
export interface HtmlPage {
  readonly status: number;
  readonly title: string;
  readonly body: string;
  /** CSP form-action sources besides 'self' (where a form's submission may be redirected); none → no forms allowed. */
  readonly formActions?: readonly string[];
  /** One inline script (a constant of this folder, never built from input), allowed by its hash and nothing else. */
  readonly script?: string;
}

/** HTML escaping for text and double-quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A tagged template that escapes every interpolated value unless it is `SafeHtml` (output of another `html`). */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export function html(strings: TemplateStringsArray, ...values: readonly (string | number | SafeHtml | readonly SafeHtml[])[]): SafeHtml {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return new SafeHtml(out);
}

function render(value: string | number | SafeHtml | readonly SafeHtml[]): string {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map((part: SafeHtml) => part.value).join('');
  return escapeHtml(String(value));
}

/** Readable on a phone, in light and dark mode, with no external assets (the CSP forbids them). */
const STYLE = `
:root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--text:#17191c;--muted:#5c6470;--accent:#0b7a5a;--accent-text:#fff;--border:#d8dce2;--warn:#8a5a00}
@media (prefers-color-scheme:dark){:root{--bg:#15191e;--card:#1f242b;--text:#e8eaed;--muted:#a3abb6;--accent:#3fbf8f;--accent-text:#0b1410;--border:#39404a;--warn:#e3b04b}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;background:var(--bg);color:var(--text);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;display:flex;align-items:flex-start;justify-content:center;padding:2rem 1rem}
main{width:100%;max-width:28rem;background:var(--card);border:1px solid var(--border);border-radius:12px;padding:1.5rem}
h1{font-size:1.35rem;line-height:1.3;margin:0 0 1rem;overflow-wrap:anywhere}
h2{font-size:1rem;margin:1.25rem 0 .25rem}
p{margin:.5rem 0}
.muted{color:var(--muted);font-size:.875rem}
.mxid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-weight:600;overflow-wrap:anywhere}
.warning{color:var(--warn);font-size:.925rem}
.address{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;color:var(--muted);overflow-wrap:anywhere;margin:.25rem 0 1rem}
.button{display:block;width:100%;margin:.75rem 0 0;padding:.8rem 1rem;border:0;border-radius:8px;background:var(--accent);color:var(--accent-text);font:inherit;font-weight:600;text-align:center;text-decoration:none;cursor:pointer}
.button.secondary{background:transparent;color:var(--text);border:1px solid var(--border)}
ul.providers{list-style:none;padding:0;margin:1rem 0 0}
ul.devices{list-style:none;padding:0;margin:.5rem 0}
li.device{border-top:1px solid var(--border);padding:.5rem 0}
li.device p{margin:.125rem 0}
.notice{border-left:4px solid var(--accent);padding:.25rem .75rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input{display:block;width:100%;padding:.6rem .75rem;border:1px solid var(--border);border-radius:8px;background:var(--bg);color:var(--text);font:inherit}
.error{color:var(--warn);font-weight:600}
a{color:var(--accent)}
`;
const STYLE_HASH = `'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`;

/** Writes the page with the headers every proxy page carries; also clears the API's CORS headers (pages are not an API). */
export function sendPage(ctx: Context, page: HtmlPage): void {
  const formAction = page.formActions === undefined ? "'none'" : ["'self'", ...page.formActions].join(' ');
  const scriptSource = page.script === undefined ? '' : ` script-src 'sha256-${createHash('sha256').update(page.script).digest('base64')}';`;
  ctx.status = page.status;
  ctx.set('Content-Type', 'text/html; charset=utf-8');
  ctx.set(
    'Content-Security-Policy',
    `default-src 'none'; style-src ${STYLE_HASH};${scriptSource} base-uri 'none'; form-action ${formAction}; frame-ancestors 'none'`,
  );
  ctx.set('Cache-Control', 'no-store');
  ctx.set('X-Frame-Options', 'DENY');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.set('X-Content-Type-Options', 'nosniff');
  for (const header of ['Access-Control-Allow-Origin', 'Access-Control-Allow-Methods', 'Access-Control-Allow-Headers']) ctx.remove(header);
  ctx.body = `<!doctype html>
<html lang="${escapeHtml(messages.lang)}" dir="${escapeHtml(messages.dir)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(page.title)}</title>
<style>${STYLE}</style>
${page.script === undefined ? '' : `<script>${page.script}</script>\n`}</head>
<body>
<main>
${page.body}
</main>
</body>
</html>
`;
}

/** A redirect with the same caching and referrer rules as the pages (Locations here can carry secrets). */
export function sendRedirect(ctx: Context, location: string, status: 302 | 303): void {
  for (const header of ['Access-Control-Allow-Origin', 'Access-Control-Allow-Methods', 'Access-Control-Allow-Headers']) ctx.remove(header);
  ctx.set('Cache-Control', 'no-store');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.status = status;
  ctx.set('Location', location);
  ctx.body = '';
}
