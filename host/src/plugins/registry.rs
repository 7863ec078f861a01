//! Plugins in OCI registries: a component is pushed and pulled as a CNCF Wasm OCI artifact
//! (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer) and its
//! minisign signature as a second artifact under the tag `sha256-<manifest digest>.sig`.
//!
//! Only `heet plugins add/update/publish` reach a registry; `plan`, `up` and `down` load
//! plugins from the folder by their sha256 in heet.lock and never come here.

use std::fmt;
use std::str::FromStr;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::sha256_hex;

pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
const SIGNATURE_LAYER: &str = "application/vnd.heet.plugin.signature.v1+minisign";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// The largest component heet pulls (a Python plugin is about 18 MB).
const MAX_COMPONENT_BYTES: i64 = 256 << 20;

/// A plugin in a registry: `oci://REGISTRY/NAMESPACE/NAME:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Host and port: `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The plugin's name in the registry: `acme/naming`.
    pub repository: String,
    pub tag: String,
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Source, String> {
        let example = "oci://REGISTRY/NAMESPACE/NAME:TAG, e.g. oci://ghcr.io/acme/naming:1.0.0";
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| format!("{s:?} is not an OCI reference: write {example}"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?} names no repository: write {example}"))?;
        let (repository, tag) = path
            .rsplit_once(':')
            .filter(|(repo, _)| !repo.contains('@'))
            .ok_or_else(|| format!("{s:?} has no tag: write {example}"))?;
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
        if registry.is_empty() || !valid_repo {
            return Err(format!(
                "{s:?}: the registry and a lowercase repository are needed: write {example}"
            ));
        }
        let valid_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid_tag {
            return Err(format!("{s:?}: {tag:?} is not a tag"));
        }
        Ok(Source {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "oci://{}/{}:{}",
            self.registry, self.repository, self.tag
        )
    }
}

impl Source {
    /// The plugin name it gets in the folder unless `--as` says otherwise: the
    /// repository's last part.
    pub fn plugin_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    fn reference(&self) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            self.tag.clone(),
        )
    }

    fn signature_reference(&self, manifest: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            signature_tag(manifest),
        )
    }

    /// Plain HTTP is for a registry on this machine only.
    fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    }
}

/// The tag a signature of the artifact with manifest digest `manifest` is pushed under.
pub fn signature_tag(manifest: &str) -> String {
    format!("{}.sig", manifest.replacen(':', "-", 1))
}

/// A registry call that failed, with the reference it was for.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: cannot reach the registry: {why}")]
    Unreachable { reference: String, why: String },
    #[error("{reference}: not in the registry")]
    NotFound { reference: String },
    #[error("{reference}: not a Wasm component artifact: {why}")]
    NotAPlugin { reference: String, why: String },
    #[error("{reference}: the layer's bytes do not match its digest: {why}")]
    DigestMismatch { reference: String, why: String },
    #[error(
        "{reference}: the registry refused access {who}: {why}; log in with `docker login {registry}` (heet reads the docker config: $DOCKER_CONFIG/config.json or ~/.docker/config.json, and its credential helpers)"
    )]
    Unauthorized {
        reference: String,
        registry: String,
        /// Whose access was refused, never with the secret: "as user ci", "anonymously (…)".
        who: String,
        why: String,
    },
    #[error("{reference}: {why}")]
    Other { reference: String, why: String },
}

/// A plugin as a registry holds it.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest digest the tag resolved to: `sha256:…`.
    pub manifest: String,
    /// The component's sha256, hex.
    pub sha256: String,
    pub bytes: Vec<u8>,
    /// The minisign signature stored beside it, if any.
    pub signature: Option<String>,
}

pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// Where `auth` came from, for messages (never the secret itself).
    who: String,
    source: Source,
}

/// Anonymous access, for a registry the docker config has no login for.
fn no_credentials(registry: &str) -> (RegistryAuth, String) {
    (
        RegistryAuth::Anonymous,
        format!("anonymously (the docker config has no credentials for {registry})"),
    )
}

/// The docker config file `docker_credential` reads: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
fn docker_config_file() -> Option<std::path::PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

impl Registry {
    /// A client for `source`'s registry, with the credentials of the standard docker
    /// config (`DOCKER_CONFIG`, `~/.docker/config.json`, credential helpers), else anonymous.
    pub fn new(source: &Source) -> Registry {
        let protocol = if source.is_loopback() {
            ClientProtocol::HttpsExcept(vec![source.registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        use docker_credential::{CredentialRetrievalError as NoCredential, DockerCredential};
        let (auth, who) = match docker_credential::get_credential(&source.registry) {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                let who = format!("as user {user} (from the docker config)");
                (RegistryAuth::Basic(user, password), who)
            }
            Ok(DockerCredential::IdentityToken(token)) => (
                RegistryAuth::Bearer(token),
                "with the identity token from the docker config".to_owned(),
            ),
            // Public registries need no login: no config, or none for this registry, is
            // anonymous. A config or helper that fails is anonymous too, but said so when
            // the registry then refuses. (The crate reports a config file that is not there
            // as one it could not read.)
            Err(NoCredential::ConfigNotFound | NoCredential::NoCredentialConfigured) => {
                no_credentials(&source.registry)
            }
            Err(NoCredential::ConfigReadError)
                if docker_config_file().is_none_or(|f| !f.exists()) =>
            {
                no_credentials(&source.registry)
            }
            Err(e) => (
                RegistryAuth::Anonymous,
                format!(
                    "anonymously (the docker config's credentials for {} could not be read: {e})",
                    source.registry
                ),
            ),
        };
        Registry {
            client,
            auth,
            who,
            source: source.clone(),
        }
    }

    fn error(&self, e: oci_client::errors::OciDistributionError) -> RegistryError {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode};
        let reference = self.source.to_string();
        let why = format!("{e}");
        match e {
            E::RequestError(e) if e.is_connect() || e.is_timeout() => {
                // reqwest's own text names only the URL; the cause (refused, timed out) is
                // further down its chain.
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why = format!("{why}: {c}");
                    cause = c.source();
                }
                RegistryError::Unreachable { reference, why }
            }
            E::DigestError(_) => RegistryError::DigestMismatch { reference, why },
            E::AuthenticationFailure(_)
            | E::UnauthorizedError { .. }
            | E::ServerError {
                code: 401 | 403, ..
            } => self.unauthorized(reference, why),
            E::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                self.unauthorized(reference, why)
            }
            E::ImageManifestNotFoundError(_) | E::ServerError { code: 404, .. } => {
                RegistryError::NotFound { reference }
            }
            E::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) =>
            {
                RegistryError::NotFound { reference }
            }
            _ => RegistryError::Other { reference, why },
        }
    }

    fn unauthorized(&self, reference: String, why: String) -> RegistryError {
        RegistryError::Unauthorized {
            reference,
            registry: self.source.registry.clone(),
            who: self.who.clone(),
            why,
        }
    }

    /// The manifest digest the tag points at now.
    pub async fn resolve(&self) -> Result<String, RegistryError> {
        self.client
            .fetch_manifest_digest(&self.source.reference(), &self.auth)
            .await
            .map_err(|e| self.error(e))
    }

    /// The tag's component, checked against its digest, with its signature if one is stored.
    pub async fn pull(&self) -> Result<Pulled, RegistryError> {
        let reference = self.source.reference();
        let (manifest, digest) = self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
            .map_err(|e| self.error(e))?;
        let not_a_plugin = |why: String| RegistryError::NotAPlugin {
            reference: self.source.to_string(),
            why,
        };
        if manifest.config.media_type != WASM_CONFIG {
            return Err(not_a_plugin(format!(
                "its config is {}, not {WASM_CONFIG}",
                manifest.config.media_type
            )));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(not_a_plugin(format!(
                "it has {} layers, not one",
                manifest.layers.len()
            )));
        };
        if layer.size > MAX_COMPONENT_BYTES {
            return Err(not_a_plugin(format!(
                "its layer is {} bytes, more than the {MAX_COMPONENT_BYTES} heet loads",
                layer.size
            )));
        }
        if layer.media_type != WASM_LAYER {
            return Err(not_a_plugin(format!(
                "its layer is {}, not {WASM_LAYER}",
                layer.media_type
            )));
        }
        let mut bytes = Vec::new();
        self.client
            .pull_blob(&reference, layer, &mut bytes)
            .await
            .map_err(|e| self.error(e))?;
        let sha256 = sha256_hex(&bytes);
        // The client checks the digest as it reads; this says so in heet's own words.
        if layer.digest != format!("sha256:{sha256}") {
            return Err(RegistryError::DigestMismatch {
                reference: self.source.to_string(),
                why: format!(
                    "the manifest says {}, the bytes are sha256:{sha256}",
                    layer.digest
                ),
            });
        }
        let signature = self.signature(&digest).await?;
        Ok(Pulled {
            manifest: digest,
            sha256,
            bytes,
            signature,
        })
    }

    async fn signature(&self, manifest: &str) -> Result<Option<String>, RegistryError> {
        let reference = self.source.signature_reference(manifest);
        let (sig_manifest, _) = match self
            .client
            .pull_image_manifest(&reference, &self.auth)
            .await
            .map_err(|e| self.error(e))
        {
            Ok(m) => m,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(layer) = sig_manifest
            .layers
            .iter()
            .find(|l| l.media_type == SIGNATURE_LAYER)
        else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        self.client
            .pull_blob(&reference, layer, &mut bytes)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Pushes `bytes` with `config` (the Wasm config JSON) under the tag, then `signature`
    /// beside it. Returns the manifest digest.
    pub async fn push(
        &self,
        bytes: Vec<u8>,
        config: Vec<u8>,
        signature: &str,
    ) -> Result<String, RegistryError> {
        let reference = self.source.reference();
        let layers = [ImageLayer::new(bytes, WASM_LAYER.to_owned(), None)];
        let config = Config::new(config, WASM_CONFIG.to_owned(), None);
        // Each version its own manifest, even of the same bytes: its signature (which names
        // the version) sits under the manifest's digest.
        let annotations = [
            (
                "org.opencontainers.image.title",
                self.source.repository.clone(),
            ),
            ("org.opencontainers.image.version", self.source.tag.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let manifest = OciImageManifest::build(&layers, &config, Some(annotations));
        let pushed = self
            .client
            .push(&reference, &layers, config, &self.auth, Some(manifest))
            .await
            .map_err(|e| self.error(e))?;
        // The registry says where it put this manifest: its digest, not whatever the tag
        // points at by now (another push may have moved it).
        let digest = match pushed.manifest_url.rsplit('/').next() {
            Some(d) if d.starts_with("sha256:") => d.to_owned(),
            _ => self.resolve().await?,
        };
        let sig_layers = [ImageLayer::new(
            signature.as_bytes().to_vec(),
            SIGNATURE_LAYER.to_owned(),
            None,
        )];
        let sig_config = Config::new(b"{}".to_vec(), EMPTY_CONFIG.to_owned(), None);
        let sig_manifest = OciImageManifest::build(&sig_layers, &sig_config, None);
        self.client
            .push(
                &self.source.signature_reference(&digest),
                &sig_layers,
                sig_config,
                &self.auth,
                Some(sig_manifest),
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_registry_repository_and_tag() {
        let s: Source = "oci://127.0.0.1:5000/acme/naming:1.0.0".parse().unwrap();
        assert_eq!(s.registry, "127.0.0.1:5000");
        assert_eq!(s.repository, "acme/naming");
        assert_eq!(s.tag, "1.0.0");
        assert_eq!(s.plugin_name(), "naming");
        assert!(s.is_loopback());
        assert_eq!(s.to_string(), "oci://127.0.0.1:5000/acme/naming:1.0.0");
        let g: Source = "oci://ghcr.io/acme/team/guard:v2".parse().unwrap();
        assert_eq!(g.repository, "acme/team/guard");
        assert!(!g.is_loopback(), "plain HTTP only on this machine");
        for bad in [
            "ghcr.io/acme/naming:1",
            "oci://ghcr.io/acme/naming",
            "oci://ghcr.io",
            "oci://ghcr.io/Acme/naming:1",
            "oci://ghcr.io/acme//naming:1",
            "oci://ghcr.io/acme/naming:",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signature_sits_under_its_manifests_digest() {
        assert_eq!(signature_tag("sha256:abcd"), "sha256-abcd.sig");
    }
}
