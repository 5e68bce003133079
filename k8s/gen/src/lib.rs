//! jetq on Kubernetes.
//!
//! - `jetq-k8s render` turns `k8s/values.yaml` (queues, schedules, images) into
//!   `k8s/generated/`: a worker Deployment per queue, the scheduler and its schedules
//!   ConfigMap, a KEDA ScaledObject and an HPA per queue, the NATS users and the values of the
//!   official NATS Helm chart. The Kustomize overlays in `k8s/overlays/` build on them.
//! - `jetq-k8s check` fails when `k8s/generated/` is not what the values render to.
//! - `jetq-provision` creates or reconciles the streams, buckets and durable consumers of a
//!   deployment, as the admin NATS user (the provisioning Job runs it); `jetq-provision --wait`
//!   waits for them with a least-privilege user (the worker and scheduler pods' init container).
//!
//! The tests in `tests/` render every overlay with `kubectl kustomize`, validate each object
//! against the Kubernetes and KEDA schemas, and check the invariants jetq relies on.

pub mod permissions;
pub mod provision;
pub mod render;
pub mod values;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

pub use values::Values;

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The values file is unusable; the message names the field.
    #[error("k8s/values.yaml: {0}")]
    Values(String),
    /// The shipped permissions could not serve as a template.
    #[error("k8s/nats/permissions.conf: {0}")]
    Permissions(String),
    /// An object could not be written as YAML.
    #[error("cannot render: {0}")]
    Render(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The directory `jetq-k8s` works in when not given one: `k8s` under the current directory
/// when it holds `k8s/values.yaml` (a checkout of this repository, or a project laid out like
/// it), the current directory otherwise. Never the directory the binary was built in.
pub fn default_dir(cwd: &Path) -> PathBuf {
    let nested = cwd.join("k8s");
    if nested.join("values.yaml").is_file() {
        nested
    } else {
        cwd.to_path_buf()
    }
}

/// Reads and renders a values file.
pub fn render_file(values: &Path) -> Result<BTreeMap<String, String>, Error> {
    let text = std::fs::read_to_string(values).map_err(|source| Error::Io {
        path: values.to_owned(),
        source,
    })?;
    render::render(&Values::from_yaml(&text)?)
}

/// Writes the rendered files into `out`, removing generated files no longer rendered.
pub fn write(files: &BTreeMap<String, String>, out: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    if out.exists() {
        for stale in list(out).map_err(io(out))? {
            if !files.contains_key(&stale) {
                let path = out.join(&stale);
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
    }
    for (name, text) in files {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(())
}

/// The files that differ between the rendering and `out` (missing, changed or stale).
pub fn stale(files: &BTreeMap<String, String>, out: &Path) -> Result<Vec<String>, Error> {
    let mut differ = Vec::new();
    for (name, text) in files {
        let path = out.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            differ.push(name.clone());
        }
    }
    if out.exists() {
        let listed = list(out).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        differ.extend(listed.into_iter().filter(|name| !files.contains_key(name)));
    }
    Ok(differ)
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}
