// Writes pkg/package.json for the npm package (entry: the hand-written index.js).
import { readFileSync, writeFileSync, existsSync } from "node:fs";

const cargo = readFileSync(new URL("../Cargo.toml", import.meta.url), "utf8");
const field = (name) => cargo.match(new RegExp(`^${name} = "([^"]*)"`, "m"))?.[1];
const pkgDir = new URL("../pkg/", import.meta.url);
const files = ["index.js", "index.d.ts", "react.js", "react.d.ts", "tokenwarden.d.ts"];
if (existsSync(new URL("snippets", pkgDir))) files.push("snippets/");
// The release build bundles the glue and the .wasm into index.js (pkg/tokenwarden_bg.wasm
// stays beside it for tools, unshipped); a --dev build ships them as files, and its
// wasm.js fetches the .wasm.
if (existsSync(new URL("tokenwarden.js", pkgDir))) files.push("tokenwarden.js");
if (existsSync(new URL("wasm.js", pkgDir))) files.push("wasm.js", "tokenwarden_bg.wasm", "tokenwarden_bg.wasm.d.ts");
const pkg = {
  name: "tokenwarden",
  version: field("version"),
  description: field("description"),
  license: field("license"),
  repository: { type: "git", url: field("repository") },
  type: "module",
  main: "./index.js",
  module: "./index.js",
  types: "./index.d.ts",
  exports: {
    ".": { types: "./index.d.ts", import: "./index.js", default: "./index.js" },
    // Optional React bindings; only this entry imports React.
    "./react": { types: "./react.d.ts", import: "./react.js", default: "./react.js" },
    "./package.json": "./package.json",
  },
  peerDependencies: { react: ">=18" },
  peerDependenciesMeta: { react: { optional: true } },
  files: [...files, "README.md"],
  sideEffects: false,
  keywords: ["oauth", "jwt", "access-token", "refresh-token", "wasm", "fetch", "bearer"],
};
writeFileSync(new URL("package.json", pkgDir), JSON.stringify(pkg, null, 2) + "\n");
