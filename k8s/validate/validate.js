#!/usr/bin/env node
// Validates Kubernetes objects offline. Input (stdin): a JSON array of objects. Output
// (stdout): one JSON line per object, {"kind", "name", "errors": [...]}. Exit status 1 if any
// object is invalid.
//
// Two checks, both from the `kubernetes-models` and `@kubernetes-models/keda` packages:
// 1. the JSON schemas (types, formats, required fields, enums), through each model's validate();
// 2. unknown fields, which the schemas let through (Kubernetes would drop a misspelt
//    `terminationGracePeriodSecond` silently): every object is written as a typed TypeScript
//    literal and compiled, and TypeScript rejects properties its interface does not declare.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { spawnSync } = require("child_process");

const CORE = "kubernetes-models";
const CRDS = { "keda.sh": "@kubernetes-models/keda" };

function modulePath(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const base = group === "" ? CORE : CRDS[group] || CORE;
  return group === "" ? `${base}/${version}` : `${base}/${group}/${version}`;
}

function modelFor(apiVersion, kind) {
  const path = modulePath(apiVersion);
  let module;
  try {
    module = require(path);
  } catch (err) {
    return { error: `no schema for ${apiVersion} (${path}): ${err.message}` };
  }
  if (typeof module[kind] !== "function") {
    return { error: `no schema for kind ${kind} in ${apiVersion}` };
  }
  return { model: module[kind] };
}

/// Compiles every object as a literal of its interface; returns errors by object index.
function unknownFields(objects, typed) {
  const errors = objects.map(() => []);
  const lineOwner = [];
  let source = "";
  let line = 1;
  objects.forEach((object, i) => {
    if (!typed[i]) return;
    const text =
      `import { I${object.kind} as T${i} } from ${JSON.stringify(`${modulePath(object.apiVersion)}/${object.kind}`)};\n` +
      `export const o${i}: T${i} = ${JSON.stringify(object, null, 1)};\n`;
    const lines = text.split("\n").length - 1;
    for (let n = 0; n < lines; n++) lineOwner[line + n] = i;
    line += lines;
    source += text;
  });
  if (source === "") return errors;
  const dir = fs.mkdtempSync(path.join(__dirname, ".check-"));
  try {
    fs.writeFileSync(path.join(dir, "check.ts"), source);
    const tsc = require.resolve("typescript/bin/tsc");
    const run = spawnSync(
      process.execPath,
      [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module", "commonjs",
       "--moduleResolution", "node", "--target", "es2020", "check.ts"],
      { cwd: dir, encoding: "utf8" },
    );
    const output = (run.stdout || "") + (run.stderr || "");
    for (const message of output.split(os.EOL)) {
      const match = /^check\.ts\((\d+),\d+\): error (TS\d+: .*)$/.exec(message);
      if (match) {
        const owner = lineOwner[Number(match[1])];
        (owner === undefined ? errors[0] : errors[owner]).push(`unknown or mistyped field: ${match[2]}`);
      } else if (message.trim() !== "" && run.status !== 0 && !/^\s/.test(message)) {
        errors[0].push(`typescript: ${message}`);
      }
    }
    if (run.status !== 0 && errors.every((e) => e.length === 0)) {
      errors[0].push(`typescript failed: ${output || run.error}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return errors;
}

const objects = JSON.parse(fs.readFileSync(0, "utf8"));
const reports = objects.map((object) => {
  const errors = [];
  const { model, error } = modelFor(object.apiVersion || "", object.kind || "");
  if (error) {
    errors.push(error);
  } else {
    try {
      new model(object).validate();
    } catch (err) {
      errors.push(err.message);
    }
  }
  return { kind: object.kind, name: object.metadata && object.metadata.name, errors, typed: !error };
});
const strict = unknownFields(objects, reports.map((r) => r.typed));
let failed = false;
reports.forEach((report, i) => {
  report.errors.push(...strict[i]);
  if (report.errors.length > 0) failed = true;
  process.stdout.write(JSON.stringify({ kind: report.kind, name: report.name, errors: report.errors }) + "\n");
});
process.exit(failed ? 1 : 0);
