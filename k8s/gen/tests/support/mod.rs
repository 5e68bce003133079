//! Shared helpers of the manifest tests: rendering overlays, walking objects, resolving env.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde::{de, Deserialize};
use serde_json::Value;

pub(crate) use jetq_k8s::Values;

/// The overlays users apply.
pub(crate) const OVERLAYS: &[&str] = &["dev", "prod", "prod-hpa"];

/// The `k8s/` directory of this repository (the tests run from the crate's directory).
pub(crate) fn k8s() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("k8s/gen has a parent")
        .to_path_buf()
}

pub(crate) fn repo() -> PathBuf {
    k8s().parent().unwrap().to_path_buf()
}

pub(crate) fn values() -> &'static Values {
    static VALUES: OnceLock<Values> = OnceLock::new();
    VALUES.get_or_init(|| {
        let text = std::fs::read_to_string(k8s().join("values.yaml")).unwrap();
        Values::from_yaml(&text).unwrap_or_else(|err| panic!("{err}"))
    })
}

/// `kubectl kustomize k8s/overlays/<overlay>`, as JSON objects (cached per overlay).
pub(crate) fn rendered(overlay: &str) -> Vec<Value> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, Vec<Value>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(objects) = cache.lock().unwrap().get(overlay) {
        return objects.clone();
    }
    let dir = k8s().join("overlays").join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|err| panic!("cannot run kubectl (is it installed?): {err}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let objects = yaml_documents(&String::from_utf8(output.stdout).unwrap());
    assert!(!objects.is_empty(), "{overlay} renders nothing");
    cache
        .lock()
        .unwrap()
        .insert(overlay.to_owned(), objects.clone());
    objects
}

/// Every document of a multi-document YAML text, as JSON.
pub(crate) fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

pub(crate) fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub(crate) fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub(crate) fn of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

pub(crate) fn find<'a>(objects: &'a [Value], wanted: &str, named: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == wanted && name(o) == named)
        .unwrap_or_else(|| panic!("no {wanted} {named} rendered"))
}

/// The ConfigMap generated as `base_name` (Kustomize appends a hash to generated names).
pub(crate) fn config_map<'a>(objects: &'a [Value], base_name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            kind(o) == "ConfigMap"
                && (name(o) == base_name
                    || name(o)
                        .strip_prefix(base_name)
                        .is_some_and(|rest| rest.starts_with('-') && rest.len() == 11))
        })
        .unwrap_or_else(|| panic!("no ConfigMap {base_name} rendered"))
}

/// Workloads: the objects with a pod template.
pub(crate) fn workloads(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet" | "Job" | "DaemonSet"))
        .collect()
}

pub(crate) fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// Every container of a workload, init containers included.
pub(crate) fn containers(workload: &Value) -> Vec<&Value> {
    let spec = pod_spec(workload);
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| spec[key].as_array().into_iter().flatten())
        .collect()
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    Literal(String),
    Secret { name: String, key: String },
    Field(String),
    Other(Value),
}

/// The environment of a container: `envFrom` ConfigMaps resolved from the rendered objects,
/// then `env` (which wins), in order.
pub(crate) fn environment(objects: &[Value], container: &Value) -> Vec<(String, Source)> {
    let mut env: Vec<(String, Source)> = Vec::new();
    let set = |env: &mut Vec<(String, Source)>, key: String, source: Source| {
        env.retain(|(k, _)| *k != key);
        env.push((key, source));
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(reference) = from["configMapRef"]["name"].as_str() {
            let map = objects
                .iter()
                .find(|o| kind(o) == "ConfigMap" && name(o) == reference)
                .unwrap_or_else(|| {
                    panic!("envFrom names ConfigMap {reference}, which is not rendered")
                });
            for (key, value) in map["data"].as_object().into_iter().flatten() {
                set(
                    &mut env,
                    key.clone(),
                    Source::Literal(value.as_str().unwrap().to_owned()),
                );
            }
        } else if let Some(secret) = from["secretRef"]["name"].as_str() {
            set(
                &mut env,
                format!("<all keys of Secret {secret}>"),
                Source::Secret {
                    name: secret.to_owned(),
                    key: "*".into(),
                },
            );
        } else {
            panic!("unsupported envFrom {from}");
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let key = var["name"].as_str().unwrap().to_owned();
        let source = if let Some(value) = var.get("value") {
            Source::Literal(value.as_str().expect("env values are strings").to_owned())
        } else if let Some(secret) = var["valueFrom"].get("secretKeyRef") {
            Source::Secret {
                name: secret["name"].as_str().unwrap().to_owned(),
                key: secret["key"].as_str().unwrap().to_owned(),
            }
        } else if let Some(reference) = var["valueFrom"].get("configMapKeyRef") {
            let map_name = reference["name"].as_str().unwrap();
            let map = objects
                .iter()
                .find(|o| kind(o) == "ConfigMap" && name(o) == map_name)
                .unwrap_or_else(|| {
                    panic!("{key} names ConfigMap {map_name}, which is not rendered")
                });
            let value = map["data"][reference["key"].as_str().unwrap()]
                .as_str()
                .unwrap_or_else(|| {
                    panic!(
                        "{key}: ConfigMap {map_name} has no key {}",
                        reference["key"]
                    )
                });
            Source::Literal(value.to_owned())
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Source::Field(field.to_owned())
        } else {
            Source::Other(var.clone())
        };
        set(&mut env, key, source);
    }
    env
}

/// The environment as the process would see it, secrets replaced by `secret-<key>`.
pub(crate) fn process_env(env: &[(String, Source)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(key, source)| {
            let value = match source {
                Source::Literal(value) => value.clone(),
                Source::Secret { key, .. } => format!("secret-{key}"),
                Source::Field(field) => format!("field-{field}"),
                Source::Other(_) => String::new(),
            };
            (key.clone(), value)
        })
        .collect()
}

pub(crate) fn literal<'a>(env: &'a [(String, Source)], key: &str) -> Option<&'a str> {
    env.iter().find_map(|(k, source)| match source {
        Source::Literal(value) if k == key => Some(value.as_str()),
        _ => None,
    })
}

/// The field names a serde struct deserializes: what envy maps to `<PREFIX><FIELD>` variables.
/// Taken from the struct's own `Deserialize` impl, so a renamed or new field is seen here.
pub(crate) fn serde_fields<T: de::DeserializeOwned>() -> Vec<&'static str> {
    let mut fields = Vec::new();
    let _ = T::deserialize(FieldCapture(&mut fields));
    assert!(
        !fields.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    fields
}

/// The variables `envy::prefixed(prefix)` reads for `T`.
pub(crate) fn env_names<T: de::DeserializeOwned>(prefix: &str) -> BTreeSet<String> {
    serde_fields::<T>()
        .into_iter()
        .map(|field| format!("{prefix}{}", field.to_uppercase()))
        .collect()
}

struct FieldCapture<'a>(&'a mut Vec<&'static str>);

impl<'de> de::Deserializer<'de> for FieldCapture<'_> {
    type Error = de::value::Error;

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend_from_slice(fields);
        Err(de::Error::custom("fields captured"))
    }

    fn deserialize_any<V: de::Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Whether a file of the repository mentions `needle`.
pub(crate) fn source_mentions(path: &str, needle: &str) -> bool {
    std::fs::read_to_string(repo().join(path)).is_ok_and(|text| text.contains(needle))
}

/// Runs the schema validator (k8s/validate) on objects, installing its packages on first use;
/// returns each object's problems, in order.
pub(crate) fn validate_schemas(objects: &[Value]) -> Vec<Vec<String>> {
    let dir = k8s().join("validate");
    ensure_validator(&dir);
    let mut child = Command::new("node")
        .arg(dir.join("validate.js"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run node (is Node.js installed?): {err}"));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(objects).unwrap().as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let reports: Vec<Vec<String>> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let report: Value = serde_json::from_str(line).unwrap();
            report["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|error| format!("{} {}: {}", report["kind"], report["name"], error))
                .collect()
        })
        .collect();
    assert_eq!(
        reports.len(),
        objects.len(),
        "the validator reported on {} of {} objects; stderr:\n{}",
        reports.len(),
        objects.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    let any = reports.iter().any(|problems| !problems.is_empty());
    assert_eq!(output.status.success(), !any, "{reports:?}");
    reports
}

fn ensure_validator(dir: &Path) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let installed = ["kubernetes-models", "@kubernetes-models/keda", "typescript"]
            .iter()
            .all(|package| dir.join("node_modules").join(package).is_dir());
        if installed {
            return;
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir)
            .status()
            .unwrap_or_else(|err| panic!("cannot run npm in {}: {err}", dir.display()));
        assert!(status.success(), "npm ci failed in {}", dir.display());
    });
}
