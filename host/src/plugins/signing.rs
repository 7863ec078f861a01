//! Plugin signatures and the trust policy: minisign keys, the signature `heet plugins
//! publish` makes over a component, and the check `plan`/`up` make of every plugin against
//! `[[plugins.trust.keys]]`, offline, from what heet.lock holds.
//!
//! A signature is over the component's bytes, and its trusted comment (which minisign signs
//! too) binds the plugin's name in the registry, its version and its sha256: a signature
//! copied onto another plugin, another version or other bytes does not verify as theirs.

use std::io::Cursor;
use std::path::Path;

use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox, SignatureBox};

use crate::definition::Location;

/// What a trusted comment starts with: a signature of anything else is not a plugin's.
const COMMENT_PREFIX: &str = "heet-plugin";

/// Why a plugin's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is not signed")]
    Unsigned,
    #[error("its signature cannot be read: {0}")]
    Malformed(String),
    #[error(
        "its signer {signer} is not a key of plugins.trust (the keys are {})",
        .keys.join(", ")
    )]
    UnknownSigner { signer: String, keys: Vec<String> },
    #[error(
        "its signer {signer} is trusted only for {scope:?} (plugins.trust.keys at {}:{}), not for {name}",
        .at.line, .at.col
    )]
    OutOfScope {
        signer: String,
        scope: String,
        name: String,
        at: Location,
    },
    #[error("its signature by {signer} does not verify: {why}")]
    Invalid { signer: String, why: String },
    #[error("its signature by {signer} is for {signed}, not for {wanted}")]
    Mismatch {
        signer: String,
        signed: String,
        wanted: String,
    },
}

/// A minisign key id, as minisign prints it: 16 hex digits.
pub fn key_id(keynum: &[u8]) -> String {
    let mut n = [0u8; 8];
    n.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(n))
}

/// What a signature says it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The plugin's name in its registry, without the host: `acme/naming`.
    pub name: String,
    pub version: String,
    /// The component's sha256, hex.
    pub sha256: String,
}

impl std::fmt::Display for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} (sha256 {})",
            self.name,
            self.version,
            self.sha256.get(..12).unwrap_or(&self.sha256)
        )
    }
}

impl Signed {
    /// What a signature of `source`'s artifact with these bytes must say: its name in the
    /// registry without the host (a mirror keeps it valid), its tag, its sha256.
    pub fn of(source: &super::registry::Source, sha256: &str) -> Signed {
        Signed {
            name: source.repository.clone(),
            version: source.tag.clone(),
            sha256: sha256.to_owned(),
        }
    }

    /// The trusted comment that binds a signature to this plugin.
    pub fn comment(&self) -> String {
        format!(
            "{COMMENT_PREFIX} name={} version={} sha256={}",
            self.name, self.version, self.sha256
        )
    }

    pub fn parse(comment: &str) -> Option<Signed> {
        let rest = comment.strip_prefix(COMMENT_PREFIX)?.strip_prefix(' ')?;
        let (mut name, mut version, mut sha256) = (None, None, None);
        for field in rest.split(' ') {
            let (key, value) = field.split_once('=')?;
            let slot = match key {
                "name" => &mut name,
                "version" => &mut version,
                "sha256" => &mut sha256,
                _ => return None,
            };
            if slot.replace(value.to_owned()).is_some() {
                return None;
            }
        }
        Some(Signed {
            name: name?,
            version: version?,
            sha256: sha256?,
        })
    }
}

/// Where a key is trusted: `*`, a name (`acme/naming`) or a prefix (`acme/*`, which covers
/// every name under `acme/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(String);

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        let prefix = s.strip_suffix('*').unwrap_or(s);
        if prefix.contains('*') {
            return Err(format!(
                "scope {s:?} may only end with `*` (as in \"acme/*\")"
            ));
        }
        if !(prefix.is_empty() || s == prefix || prefix.ends_with('/')) {
            return Err(format!(
                "scope {s:?}: a `*` stands for whole names (\"acme/*\"), not part of one"
            ));
        }
        if s.is_empty() || s.starts_with('/') {
            return Err(format!(
                "scope {s:?} is not a registry name such as \"acme/*\""
            ));
        }
        Ok(Scope(s.to_owned()))
    }

    pub fn covers(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix) && name.len() > prefix.len(),
            None => self.0 == name,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key of the trust policy.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub key: PublicKey,
    pub id: String,
    pub scope: Scope,
    pub at: Location,
}

impl PartialEq for TrustedKey {
    fn eq(&self, other: &TrustedKey) -> bool {
        self.id == other.id && self.scope == other.scope && self.at == other.at
    }
}

/// `[plugins.trust]`: when set, every plugin needs a signature from one of these keys whose
/// scope covers the plugin's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub keys: Vec<TrustedKey>,
}

/// A public key from its base64 line (as minisign prints it) or a `.pub` file's text.
pub fn public_key(text: &str) -> Result<PublicKey, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or("no key in it")?;
    PublicKey::from_base64(line).map_err(|e| format!("not a minisign public key: {e}"))
}

impl Policy {
    /// The signer of `signature` if the policy trusts it for `wanted`: the signature is by
    /// a key of the policy whose scope covers the name, verifies over `bytes`, and its
    /// trusted comment names exactly `wanted`.
    pub fn verify(
        &self,
        wanted: &Signed,
        bytes: &[u8],
        signature: Option<&str>,
    ) -> Result<String, Refusal> {
        let signature = signature.ok_or(Refusal::Unsigned)?;
        let sig =
            SignatureBox::from_string(signature).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let signer = key_id(sig.keynum());
        let candidates: Vec<&TrustedKey> = self.keys.iter().filter(|k| k.id == signer).collect();
        let Some(trusted) = candidates.iter().find(|k| k.scope.covers(&wanted.name)) else {
            return Err(match candidates.first() {
                Some(k) => Refusal::OutOfScope {
                    signer,
                    scope: k.scope.as_str().to_owned(),
                    name: wanted.name.clone(),
                    at: k.at,
                },
                None => Refusal::UnknownSigner {
                    signer,
                    keys: self.keys.iter().map(|k| k.id.clone()).collect(),
                },
            });
        };
        verified(&trusted.key, &sig, wanted, bytes)?;
        Ok(signer)
    }
}

/// Checks `sig` over `bytes` with `key` and that it is for `wanted`.
fn verified(
    key: &PublicKey,
    sig: &SignatureBox,
    wanted: &Signed,
    bytes: &[u8],
) -> Result<(), Refusal> {
    let signer = key_id(sig.keynum());
    minisign::verify(key, sig, Cursor::new(bytes), true, false, false).map_err(|e| {
        Refusal::Invalid {
            signer: signer.clone(),
            why: e.to_string().to_lowercase(),
        }
    })?;
    let comment = sig
        .trusted_comment()
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    match Signed::parse(&comment) {
        Some(signed) if &signed == wanted => Ok(()),
        Some(signed) => Err(Refusal::Mismatch {
            signer,
            signed: signed.to_string(),
            wanted: wanted.to_string(),
        }),
        None => Err(Refusal::Mismatch {
            signer,
            signed: format!("{comment:?}"),
            wanted: wanted.to_string(),
        }),
    }
}

/// The signer of a signature, without checking it: for showing what a registry holds.
pub fn signer_of(signature: &str) -> Option<String> {
    SignatureBox::from_string(signature)
        .ok()
        .map(|s| key_id(s.keynum()))
}

/// A new key pair: `BASE.key` (the secret key, mode 0600, encrypted under `password` when
/// one is given) and `BASE.pub`. Refuses to overwrite either. Returns the key id and the
/// public key line for `plugins.trust`.
pub fn keygen(base: &Path, password: Option<String>) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    use std::io::Write;
    let (secret, public) = key_files(base);
    for f in [&secret, &public] {
        if f.exists() {
            anyhow::bail!("{} exists: heet never overwrites a key", f.display());
        }
    }
    let KeyPair { pk, sk } = match &password {
        Some(p) => KeyPair::generate_encrypted_keypair(Some(p.clone())),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("cannot make a key pair: {e}"))?;
    let id = key_id(pk.keynum());
    let sk_box = sk
        .to_box(Some(&format!("heet plugin signing key {id}")))
        .map_err(|e| anyhow::anyhow!("cannot write the secret key: {e}"))?;
    let pk_box = pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("cannot write the public key: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&secret)
        .with_context(|| format!("cannot create {}", secret.display()))?;
    file.write_all(sk_box.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", secret.display()))?;
    std::fs::write(&public, pk_box.to_string())
        .with_context(|| format!("cannot write {}", public.display()))?;
    Ok((id, pk.to_base64()))
}

/// The secret and public key files of `base`: `BASE.key` and `BASE.pub`.
pub fn key_files(base: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let with = |suffix: &str| {
        let mut name = base.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    (with(".key"), with(".pub"))
}

/// Signs `bytes` as `what` with the secret key in `key_file`.
pub fn sign(
    key_file: &Path,
    password: Option<String>,
    what: &Signed,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(key_file)
        .map_err(|e| anyhow::anyhow!("cannot read the key {}: {e}", key_file.display()))?;
    let sk_box = SecretKeyBox::from_string(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a minisign secret key: {e}", key_file.display()))?;
    let sk = secret_key(sk_box, password, key_file)?;
    let pk = PublicKey::from_secret_key(&sk)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
    let sig = minisign::sign(
        Some(&pk),
        &sk,
        Cursor::new(bytes),
        Some(&what.comment()),
        Some(&format!(
            "signature from heet plugin key {}",
            key_id(pk.keynum())
        )),
    )
    .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    Ok(sig.into_string())
}

fn secret_key(
    sk_box: SecretKeyBox,
    password: Option<String>,
    key_file: &Path,
) -> anyhow::Result<SecretKey> {
    // Read without its checksum first, only to learn whether it is encrypted: minisign
    // would prompt on the terminal for an encrypted key read without a password.
    use base64::Engine as _;
    let unreadable =
        |why: String| anyhow::anyhow!("cannot read the key {}: {why}", key_file.display());
    let text = sk_box.to_string();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| unreadable("no key in it".into()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|e| unreadable(e.to_string()))?;
    let encrypted = SecretKey::from_bytes(&raw)
        .map_err(|e| unreadable(e.to_string()))?
        .is_encrypted();
    if !encrypted {
        return SecretKey::from_unencrypted_box(sk_box).map_err(|e| unreadable(e.to_string()));
    }
    let Some(password) = password else {
        anyhow::bail!(
            "the key {} is password-protected: pass --password-stdin",
            key_file.display()
        );
    };
    SecretKey::from_box(sk_box, Some(password)).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the key {} with this password: {e}",
            key_file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location { line: 3, col: 1 }
    }

    fn signed(name: &str, bytes: &[u8]) -> Signed {
        Signed {
            name: name.into(),
            version: "1.0.0".into(),
            sha256: crate::plugins::sha256_hex(bytes),
        }
    }

    struct Keys {
        dir: tempfile::TempDir,
        id: String,
        line: String,
    }

    fn keys(password: Option<&str>) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let (id, line) = keygen(&dir.path().join("acme"), password.map(str::to_owned)).unwrap();
        Keys { dir, id, line }
    }

    impl Keys {
        fn secret(&self) -> std::path::PathBuf {
            self.dir.path().join("acme.key")
        }
        fn policy(&self, scope: &str) -> Policy {
            Policy {
                keys: vec![TrustedKey {
                    key: public_key(&self.line).unwrap(),
                    id: self.id.clone(),
                    scope: Scope::parse(scope).unwrap(),
                    at: at(),
                }],
            }
        }
    }

    #[test]
    fn a_signature_verifies_only_for_the_plugin_version_and_bytes_it_names() {
        let k = keys(None);
        let bytes = b"\0asm component bytes";
        let what = signed("acme/naming", bytes);
        let sig = sign(&k.secret(), None, &what, bytes).unwrap();
        let policy = k.policy("acme/*");
        assert_eq!(policy.verify(&what, bytes, Some(&sig)), Ok(k.id.clone()));
        // Other bytes under the same name: the signature is not over them.
        let other = b"\0asm other bytes";
        assert!(matches!(
            policy.verify(&signed("acme/naming", other), other, Some(&sig)),
            Err(Refusal::Invalid { .. })
        ));
        // The same bytes as another plugin or version: the trusted comment says otherwise.
        assert!(matches!(
            policy.verify(&signed("acme/guard", bytes), bytes, Some(&sig)),
            Err(Refusal::Mismatch { .. })
        ));
        let mut v2 = what.clone();
        v2.version = "2.0.0".into();
        assert!(matches!(
            policy.verify(&v2, bytes, Some(&sig)),
            Err(Refusal::Mismatch { .. })
        ));
        assert_eq!(policy.verify(&what, bytes, None), Err(Refusal::Unsigned));
        // A changed character in the signature itself.
        let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
        let line = &mut lines[1];
        let c = if line.as_bytes()[30] == b'A' {
            "B"
        } else {
            "A"
        };
        line.replace_range(30..31, c);
        let tampered = lines.join("\n");
        assert!(matches!(
            policy.verify(&what, bytes, Some(&tampered)),
            Err(Refusal::Invalid { .. })
        ));
    }

    #[test]
    fn a_key_signs_only_inside_its_scope_and_an_unknown_key_not_at_all() {
        let k = keys(None);
        let bytes = b"component";
        let what = signed("acme/naming", bytes);
        let sig = sign(&k.secret(), None, &what, bytes).unwrap();
        let err = k.policy("other/*").verify(&what, bytes, Some(&sig));
        assert!(
            matches!(&err, Err(Refusal::OutOfScope { scope, .. }) if scope == "other/*"),
            "{err:?}"
        );
        let stranger = keys(None);
        let err = stranger.policy("*").verify(&what, bytes, Some(&sig));
        assert!(
            matches!(&err, Err(Refusal::UnknownSigner { signer, .. }) if *signer == k.id),
            "{err:?}"
        );
        assert!(k.policy("*").verify(&what, bytes, Some(&sig)).is_ok());
        assert!(
            k.policy("acme/naming")
                .verify(&what, bytes, Some(&sig))
                .is_ok()
        );
    }

    #[test]
    fn a_password_protected_key_signs_only_with_its_password() {
        let k = keys(Some("hunter2"));
        let bytes = b"component";
        let what = signed("acme/naming", bytes);
        let err = sign(&k.secret(), None, &what, bytes).unwrap_err();
        assert!(err.to_string().contains("--password-stdin"), "{err}");
        assert!(sign(&k.secret(), Some("wrong".into()), &what, bytes).is_err());
        let sig = sign(&k.secret(), Some("hunter2".into()), &what, bytes).unwrap();
        assert!(k.policy("acme/*").verify(&what, bytes, Some(&sig)).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(k.secret()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = keygen(&k.dir.path().join("acme"), None).unwrap_err();
        assert!(again.to_string().contains("never overwrites"), "{again}");
    }

    #[test]
    fn scopes_stand_for_whole_names() {
        let s = Scope::parse("acme/*").unwrap();
        assert!(s.covers("acme/naming") && s.covers("acme/team/naming"));
        assert!(!s.covers("acme") && !s.covers("acmecorp/naming") && !s.covers("acme/"));
        assert!(Scope::parse("*").unwrap().covers("anyone/x"));
        assert!(Scope::parse("acme/nam*").is_err());
        assert!(Scope::parse("a*/x").is_err());
        assert!(Scope::parse("").is_err());
        let exact = Scope::parse("acme/naming").unwrap();
        assert!(exact.covers("acme/naming") && !exact.covers("acme/naming2"));
    }

    #[test]
    fn trusted_comments_round_trip_and_refuse_anything_else() {
        let s = signed("acme/naming", b"x");
        assert_eq!(Signed::parse(&s.comment()), Some(s.clone()));
        assert_eq!(Signed::parse("timestamp:1700000000"), None);
        assert_eq!(
            Signed::parse(&format!("{} name=evil", s.comment())),
            None,
            "a repeated field is not a second opinion"
        );
    }
}
