#!/usr/bin/env node
// Validates Kubernetes objects offline against the schemas of the `kubernetes-models` and
// `@kubernetes-models/keda` packages. Input (stdin): a JSON array of objects. Output (stdout):
// one JSON line per object, {"kind", "name", "errors": [...]}. Exit status 1 if any object is
// invalid or of a kind no schema covers.
"use strict";

const fs = require("fs");

const CORE = "kubernetes-models";
const CRDS = { "keda.sh": "@kubernetes-models/keda" };

function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const base = group === "" ? CORE : CRDS[group] || CORE;
  const path = group === "" ? `${base}/${version}` : `${base}/${group}/${version}`;
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

const objects = JSON.parse(fs.readFileSync(0, "utf8"));
let failed = false;
for (const object of objects) {
  const kind = object.kind;
  const name = object.metadata && object.metadata.name;
  const errors = [];
  const { model, error } = modelFor(object.apiVersion || "", kind || "");
  if (error) {
    errors.push(error);
  } else {
    try {
      new model(object).validate();
    } catch (err) {
      errors.push(err.message);
    }
  }
  if (errors.length > 0) failed = true;
  process.stdout.write(JSON.stringify({ kind, name, errors }) + "\n");
}
process.exit(failed ? 1 : 0);
