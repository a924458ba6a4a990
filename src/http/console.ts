import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, sep } from "node:path";
import { createRoute, z } from "@hono/zod-openapi";
import { HttpProblem, ProblemSchema } from "./problem.ts";
import { createRouter } from "./router.ts";

const require = createRequire(import.meta.url);
/** A package's folder, from its main entry (some packages do not export their package.json). */
function pkg(name: string): string {
  const main = require.resolve(name);
  const marker = `${sep}node_modules${sep}${name}${sep}`;
  return main.slice(0, main.lastIndexOf(marker) + marker.length - 1);
}
const OWN = join(import.meta.dirname, "console");

interface Asset {
  file: string;
  type: string;
  /** Bare module specifiers rewritten to the console's own URLs, so no import map (inline script) is needed. */
  rewrite?: boolean;
  /** Text added at the end (turns a script into a module). */
  append?: string;
}

/**
 * Every file the console loads: its own (src/http/console/) and the npm packages it is built on, served
 * from node_modules as they were installed — no bundler, no CDN; the console works offline.
 */
const ASSETS: Record<string, Asset> = {
  "app.js": { file: join(OWN, "app.js"), type: "text/javascript", rewrite: true },
  "pages.js": { file: join(OWN, "pages.js"), type: "text/javascript", rewrite: true },
  "api.js": { file: join(OWN, "api.js"), type: "text/javascript", rewrite: true },
  "style.css": { file: join(OWN, "style.css"), type: "text/css" },
  "preact.mjs": { file: join(pkg("preact"), "dist/preact.module.js"), type: "text/javascript" },
  "hooks.mjs": {
    file: join(pkg("preact"), "hooks/dist/hooks.module.js"),
    type: "text/javascript",
    rewrite: true,
  },
  "htm.mjs": { file: join(pkg("htm"), "dist/htm.module.js"), type: "text/javascript" },
  // The package's minified build is an IIFE assigning `var uPlot` (its ES module is not minified, 142 KiB
  // against 51): served as a module by exporting that variable.
  "uplot.mjs": {
    file: join(pkg("uplot"), "dist/uPlot.iife.min.js"),
    type: "text/javascript",
    append: "\nexport default uPlot;\n",
  },
  "uplot.css": { file: join(pkg("uplot"), "dist/uPlot.min.css"), type: "text/css" },
};

const SPECIFIERS: Record<string, string> = {
  preact: "/console/preact.mjs",
  "preact/hooks": "/console/hooks.mjs",
  htm: "/console/htm.mjs",
  uplot: "/console/uplot.mjs",
};

function load(asset: Asset): string {
  const text = readFileSync(asset.file, "utf8") + (asset.append ?? "");
  if (!asset.rewrite) return text;
  return text.replace(/(from\s*|import\s*)(["'])(preact|preact\/hooks|htm|uplot)\2/g, (_m, kw, q, name) => {
    return `${kw}${q}${SPECIFIERS[name as string]}${q}`;
  });
}

/**
 * Scripts only from the gateway itself; inline styles allowed (uPlot sizes its canvas with them); the page
 * talks to its own origin only and cannot be framed.
 */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const INDEX = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Webhook gateway console</title>
<link rel="stylesheet" href="/console/uplot.css">
<link rel="stylesheet" href="/console/style.css">
<link rel="modulepreload" href="/console/preact.mjs">
<link rel="modulepreload" href="/console/hooks.mjs">
<link rel="modulepreload" href="/console/htm.mjs">
<link rel="modulepreload" href="/console/uplot.mjs">
<link rel="modulepreload" href="/console/api.js">
<link rel="modulepreload" href="/console/pages.js">
<script type="module" src="/console/app.js"></script>
</head>
<body><div id="app"><noscript>The console needs JavaScript.</noscript></div></body>
</html>
`;

const pageRoute = createRoute({
  method: "get",
  path: "/console",
  tags: ["console"],
  summary: "The operator console (a single page; sign in with the admin token)",
  responses: { 200: { description: "The console's page", content: { "text/html": { schema: z.string() } } } },
});

const assetRoute = createRoute({
  method: "get",
  path: "/console/{asset}",
  tags: ["console"],
  summary: "A script, style sheet or library file of the console",
  request: {
    params: z.object({
      asset: z.string().openapi({
        description:
          "e.g. app.js, style.css, preact.mjs (the libraries are served beside the console's own files)",
      }),
    }),
  },
  responses: {
    200: {
      description: "The file",
      content: { "text/javascript": { schema: z.string() }, "text/css": { schema: z.string() } },
    },
    404: {
      description: "No such console file",
      content: { "application/problem+json": { schema: ProblemSchema } },
    },
  },
});

export function consoleRoutes() {
  const router = createRouter();
  const cache = new Map<string, string>();
  const headers = (type: string) => ({
    "content-type": `${type}; charset=utf-8`,
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
  });
  router.openapi(pageRoute, (c) => c.body(INDEX, 200, headers("text/html")) as never);
  const serve = (name: string) => {
    const asset = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
    if (!asset) throw new HttpProblem(404, "Not found", `no console file ${name}`);
    let text = cache.get(name);
    if (text === undefined) {
      text = load(asset);
      cache.set(name, text);
    }
    return { text, headers: headers(asset.type) };
  };
  router.openapi(assetRoute, (c) => {
    const { text, headers } = serve(c.req.valid("param").asset);
    return c.body(text, 200, headers) as never;
  });
  return router;
}
